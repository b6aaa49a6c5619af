# Datasets. Embedded sets are built offline; real datasets are fetched on the submitting host
# (localrules: no cluster job downloads data or calls dvc).
localrules: fetch


rule build_embedded:
    output:
        "{root}/{dataset}/manifest.json",
    wildcard_constraints:
        dataset="embedded_[a-z_]+",
    log:
        "logs/data/{root}/{dataset}.log",
    conda:
        "../../environment.yml"
    shell:
        "ssmrepro build-embedded {wildcards.dataset} --root {wildcards.root} > {log} 2>&1"


rule fetch:
    output:
        "{root}/{dataset}/manifest.json",
    wildcard_constraints:
        dataset="(?!embedded_)[a-z0-9_]+",
    log:
        "logs/data/{root}/{dataset}.log",
    conda:
        "../../environment.yml"
    shell:
        "ssmrepro fetch {wildcards.dataset} --root {wildcards.root} "
        + ("" if config.get("fetch_dvc", True) else "--no-dvc ")
        + "> {log} 2>&1"
