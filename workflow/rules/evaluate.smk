# One result file per (run, test condition [+ evaluation options]); receptive fields per card.
rule evaluate:
    input:
        "runs/{scale}/{data_dir}/{card}/seed{seed}/final.pt",
    output:
        "results/{scale}/{data_dir}/{card}/seed{seed}/{stem}.json",
    params:
        args=evaluate_args,
        run_dir=subpath(input[0], parent=True),
    log:
        "logs/evaluate/{scale}/{data_dir}/{card}/seed{seed}/{stem}.log",
    conda:
        "../../environment.yml"
    shell:
        "ssmrepro evaluate {params.run_dir} {params.args} --out {output} --data-root "
        + config.get("data_root", "data") + " > {log} 2>&1"


rule erf:
    input:
        erf_run,
    output:
        "results/{scale}/erf/{card}.npy",
    params:
        run_dir=subpath(input[0], parent=True),
    log:
        "logs/erf/{scale}/{card}.log",
    conda:
        "../../environment.yml"
    shell:
        "ssmrepro erf {wildcards.card} --checkpoint {input} --scale {wildcards.scale} "
        "--out {output} > {log} 2>&1"
