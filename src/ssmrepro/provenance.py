"""Provenance recorded with every run and result: commit, config hash, environment, hardware."""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import platform
import subprocess
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

PACKAGES = ("ssmrepro", "torch", "torchvision", "numpy", "scikit-image", "scipy", "lpips",
            "pytorch-fid", "mamba-ssm", "causal-conv1d", "fvcore", "snakemake", "dvc")


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def config_hash(config: dict) -> str:
    """First 16 hex digits of the sha256 of the canonical JSON of a resolved config."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:16]


def git_state(root: str | Path | None = None) -> dict:
    """{"commit": sha or "unknown", "dirty": bool or None}."""
    cwd = str(root) if root else None
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                             check=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                                capture_output=True, text=True, check=True, timeout=10).stdout
        return {"commit": sha, "dirty": bool(status.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": "unknown", "dirty": None}


def package_versions() -> dict[str, str | None]:
    out = {}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (else what platform knows)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


@lru_cache(maxsize=1)
def hardware() -> str:
    """CPU model and core count, and the GPU if torch sees one."""
    import os

    import torch

    desc = f"{cpu_model()} ({os.cpu_count()} cores)"
    if torch.cuda.is_available():
        desc += "; " + ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
    return desc


def environment() -> dict:
    return {"python": platform.python_version(), "platform": platform.platform(),
            "packages": package_versions()}


def now_utc() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def provenance(root: str | Path | None = None) -> dict:
    return {**git_state(root), "environment": environment(), "hardware": hardware(),
            "created": now_utc()}
