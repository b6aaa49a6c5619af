"""The exact commands a report shows beside a gap (one place to change them).

They follow the workflow: ``snakemake <target> --config scale=<scale>`` builds a table
(``reproduce_<paper>_t<N>``), one result file, or one receptive-field map (training the runs they
need); ``ssmrepro evaluate`` / ``ssmrepro erf`` are what its rules run.
"""

from __future__ import annotations

from ..tables import Job, Table


def table_command(table: Table, scale: str) -> str:
    """Trains and evaluates everything a table needs."""
    return f"snakemake {table.rule} --config scale={scale}"


def figures_command(scale: str) -> str:
    return f"snakemake reproduce_figures --config scale={scale}"


def target_command(path: str, scale: str) -> str:
    return f"snakemake {path} --config scale={scale}"


def result_command(job: Job, scale: str, seed: int) -> str:
    """Builds one result file (training its run first if needed)."""
    return target_command(job.result_path(scale, seed).as_posix(), scale)


def evaluate_command(job: Job, scale: str, seed: int) -> str:
    """Scores an existing run on one condition and writes its result file."""
    cmd = f"ssmrepro evaluate {job.run_dir(scale, seed).as_posix()} --condition {job.condition}"
    for key, value in job.options:
        flag = "--" + key.replace("_", "-")
        if value is True:
            cmd += f" {flag}"
        elif value is not False:
            cmd += f" {flag} {value}"
    return cmd + f" --out {job.result_path(scale, seed).as_posix()}"


def authors_result_path(job: Job, scale: str, root: str = "results") -> str:
    """Where ``ssmrepro evaluate-weights`` puts the result of the authors' weights for a job
    (beside the card's seed folders; = ``ssmrepro.authors.result_path``)."""
    return f"{root}/{scale}/{job.dataset_dir}/{job.card}/authors/{job.result_stem}.json"


def authors_command(job: Job, scale: str, weights_card: str) -> str:
    """Scores the authors' released weights (card ``weights_card``) on one job's condition. The
    model is the card's paper configuration whatever the scale; ``--scale`` names the results folder."""
    cmd = f"ssmrepro evaluate-weights {weights_card} --data {job.dataset}"
    suffix = job.dataset_dir[len(job.dataset):] if job.dataset_dir.startswith(job.dataset) else ""
    if suffix.startswith("-") and suffix[1:].isdigit():
        cmd += f" --resolution {suffix[1:]}"
    cmd += f" --condition {job.condition}"
    for key, value in job.options:
        flag = "--" + key.replace("_", "-")
        if value is True:
            cmd += f" {flag}"
        elif value is not False:
            cmd += f" {flag} {value}"
    return cmd + f" --scale {scale} --out {authors_result_path(job, scale)}"


def erf_command(card: str, dataset: str, scale: str, seed: int = 0) -> str:
    """Receptive field (and, for EVSSM, activation maps) of a trained run."""
    return (f"ssmrepro erf {card} --checkpoint runs/{scale}/{dataset}/{card}/seed{seed}/final.pt "
            f"--scale {scale} --out results/{scale}/erf/{card}.npy")
