# Targets: reproduce_all, one per table (reproduce_semnet_t2, ...), reproduce_figures.
localrules: reproduce_all, reproduce_figures, collect_table


rule reproduce_all:
    input:
        "reports/index.html",


rule report:
    input:
        MATRIX.table_summaries(),
        MATRIX.erf_outputs(),
    output:
        "reports/index.html",
    log:
        "logs/report.log",
    conda:
        "../../environment.yml"
    shell:
        f"ssmrepro report --scale {SCALE} --results results --out reports > {{log}} 2>&1"


rule collect_table:
    input:
        table_results,
    output:
        "results/{scale}/tables/{table}.json",
    log:
        "logs/collect/{scale}/{table}.log",
    conda:
        "../../environment.yml"
    shell:
        "ssmrepro collect {wildcards.table} --scale {wildcards.scale} "
        + " ".join(f"--seed {s}" for s in SEEDS) + " --out {output} > {log} 2>&1"


rule reproduce_figures:
    input:
        MATRIX.erf_outputs(),


for _table in MATRIX.tables:

    rule:
        name:
            _table.rule
        input:
            f"results/{SCALE}/tables/{_table.id}.json",
