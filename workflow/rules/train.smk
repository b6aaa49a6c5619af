# One training run per distinct (scale, dataset, card, seed). Resumes from its run folder.
rule train:
    input:
        manifest=dataset_manifest,
        card="models/{card}.yaml",
    output:
        "runs/{scale}/{data_dir}/{card}/seed{seed}/final.pt",
    params:
        args=train_args,
        run_dir=subpath(output[0], parent=True),
    log:
        "logs/train/{scale}/{data_dir}/{card}/seed{seed}.log",
    conda:
        "../../environment.yml"
    shell:
        "ssmrepro train {wildcards.card} {params.args} --scale {wildcards.scale} "
        "--seed {wildcards.seed} --run-dir {params.run_dir} --on-config-change archive --data-root "
        + config.get("data_root", "data") + " > {log} 2>&1"
