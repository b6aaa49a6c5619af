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


def erf_command(card: str, dataset: str, scale: str, seed: int = 0) -> str:
    """Receptive field (and, for EVSSM, activation maps) of a trained run."""
    return (f"ssmrepro erf {card} --checkpoint runs/{scale}/{dataset}/{card}/seed{seed}/final.pt "
            f"--scale {scale} --out results/{scale}/erf/{card}.npy")
