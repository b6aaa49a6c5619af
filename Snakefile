# ssmrepro: the reproduction DAG. `snakemake --cores 2 reproduce_all` (smoke scale, embedded data),
# `snakemake --profile slurm reproduce_all --config scale=paper` on a cluster.
# Rules live in workflow/rules/*.smk; the experiment matrix comes from workflow/tables/ and models/.
include: "workflow/rules/common.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/evaluate.smk"
include: "workflow/rules/report.smk"
