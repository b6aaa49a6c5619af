"""Shared test set-up: one thread per process (the CI machine has 2 cores), repo paths."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO.parent / "shared" / "fixtures"
FIXTURES = REPO / "tests" / "fixtures"

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture
def repo() -> Path:
    return REPO


def slurm_missing() -> str | None:
    """Why a real local SLURM cannot be started here, or None."""
    if os.geteuid() != 0:
        return "needs root to start slurmctld/slurmd/munged (scripts/slurm-local.sh)"
    for tool in ("slurmctld", "slurmd", "munged", "sbatch", "scontrol", "scancel"):
        if not (shutil.which(tool) or Path(f"/usr/sbin/{tool}").exists()):
            return f"{tool} is not installed (apt-get install slurm-wlm munge)"
    return None


def slurm_up() -> bool:
    p = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True)
    return p.returncode == 0 and bool(re.search(r"idle|mixed|allocated", p.stdout))


@pytest.fixture
def local_slurm():
    """A real one-node SLURM on 127.0.0.1 (scripts/slurm-local.sh); reused, and left running,
    if one is up already, so that two users of it never stop each other's."""
    why = slurm_missing()
    if why:
        pytest.skip(why)
    if slurm_up():
        yield
        return
    script = str(REPO / "scripts" / "slurm-local.sh")
    subprocess.run([script, "start"], check=True, capture_output=True, timeout=120)
    try:
        yield
    finally:
        subprocess.run([script, "stop"], capture_output=True, timeout=120)
