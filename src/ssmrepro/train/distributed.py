"""Process-group set-up for torchrun and srun launches (one process per GPU).

- torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``.
- srun sets ``SLURM_PROCID``, ``SLURM_NTASKS``, ``SLURM_LOCALID`` in each task of a job step
  (``SLURM_STEP_ID`` present). ``MASTER_ADDR`` defaults to the first host of the step's node list
  and ``MASTER_PORT`` to ``20000 + SLURM_JOB_ID % 20000``; either may be exported instead.
  A batch script that runs python directly (no srun step) is one process, whatever
  ``--ntasks`` says.

Backend: NCCL when CUDA is available, gloo otherwise (or ``SSMREPRO_DIST_BACKEND``).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    launcher: str | None = None  # "torchrun", "srun" or None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def detect(environ: dict | None = None) -> DistEnv:
    """Read the launch environment (torchrun first, then srun)."""
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistEnv(int(env["RANK"]), int(env["WORLD_SIZE"]),
                       int(env.get("LOCAL_RANK", env["RANK"])), "torchrun")
    in_step = "SLURM_STEP_ID" in env or "SLURM_STEPID" in env
    if in_step and int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS", "1"))) > 1:
        return DistEnv(int(env["SLURM_PROCID"]), int(env.get("SLURM_NTASKS", env.get("SLURM_NPROCS"))),
                       int(env.get("SLURM_LOCALID", "0")), "srun")
    return DistEnv()


def _first_slurm_host(nodelist: str) -> str:
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                             text=True, timeout=30, check=True).stdout.split()
        if out:
            return out[0]
    except (OSError, subprocess.SubprocessError):
        pass
    # node[01-04,07],other -> node01
    m = re.match(r"([^,\[]+)(?:\[([0-9]+))?", nodelist)
    return (m.group(1) + (m.group(2) or "")) if m else nodelist


def device_for(env: DistEnv) -> torch.device:
    if torch.cuda.is_available():
        idx = env.local_rank % max(torch.cuda.device_count(), 1)
        torch.cuda.set_device(idx)
        return torch.device("cuda", idx)
    return torch.device("cpu")


def init(env: DistEnv, device: torch.device) -> bool:
    """Initialise the default process group if ``env`` is distributed; True if this call did."""
    if not env.enabled or (dist.is_available() and dist.is_initialized()):
        return False
    if env.launcher == "srun":
        os.environ.setdefault(
            "MASTER_ADDR",
            _first_slurm_host(os.environ.get("SLURM_STEP_NODELIST") or os.environ.get("SLURM_JOB_NODELIST", "127.0.0.1")),
        )
        os.environ.setdefault("MASTER_PORT", str(20000 + int(os.environ.get("SLURM_JOB_ID", "0")) % 20000))
    backend = os.environ.get("SSMREPRO_DIST_BACKEND") or ("nccl" if device.type == "cuda" else "gloo")
    dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size,
                            init_method="env://")
    return True


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_max(values: list[float], device: torch.device) -> list[float]:
    """Element-wise max over ranks (flags: preemption requested, non-finite loss)."""
    if not active():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.tolist()


def all_gather_objects(obj):
    """Every rank's ``obj`` (a list of length world size); ``[obj]`` when not distributed."""
    if not active():
        return [obj]
    out = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    if active():
        dist.barrier()


def broadcast_object(obj, src: int = 0):
    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
