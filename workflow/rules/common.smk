# Shared set-up: config validation and the experiment matrix (ssmrepro.workflow).
from pathlib import Path

from snakemake.utils import validate

from ssmrepro.cards import load_card
from ssmrepro.workflow import Matrix, is_embedded, parse_data_dir, parse_result_stem

configfile: "workflow/config.yaml"
validate(config, "../schemas/config.schema.yaml")

SCALE = config["scale"]
SEEDS = config["seeds"]
MATRIX = Matrix(Path(workflow.basedir), SCALE, SEEDS, only=config.get("tables"))

wildcard_constraints:
    scale="smoke|mini|paper",
    seed=r"\d+",
    card=r"[a-z0-9][a-z0-9-]*",
    data_dir=r"[a-z0-9_]+(-\d+)?",
    dataset=r"[a-z0-9_]+",
    stem=r"[^/]+",


def train_args(wildcards):
    dataset, res = parse_data_dir(wildcards.data_dir)
    # A row's own resolution (SEM-Net T3's 64x64 rows) shrinks with the scale like the patch does.
    res = config.get("resolution_at_scale", {}).get(wildcards.scale, {}).get(res, res)
    extra = f" --resolution {res}" if res else ""
    steps = config.get("steps", {})
    steps = steps.get(wildcards.card) or steps.get(card_family(wildcards.card))
    return f"--data {dataset}{extra}" + (f" --steps {steps}" if steps else "")


def dataset_manifest(wildcards):
    dataset, _ = parse_data_dir(wildcards.data_dir)
    return f"{config.get('data_root', 'data')}/{dataset}/manifest.json"


def evaluate_args(wildcards):
    condition, options = parse_result_stem(wildcards.stem)
    args = f"--condition {condition}"
    if options.get("self_ensemble"):
        args += " --self-ensemble"
    if config.get("eval_limit"):
        args += f" --limit {config['eval_limit']}"
    return args


def erf_run(wildcards):
    return str(Path(MATRIX.erf_run(wildcards.card), "final.pt"))


def table_results(wildcards):
    return MATRIX.table_results(wildcards.table)


def card_family(name):
    return load_card(name, Path(workflow.basedir)).family
