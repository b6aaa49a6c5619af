"""The watchers of the integration tests (tests/watch.py) do what those tests rely on."""

from __future__ import annotations

import os
import time

import pytest

import watch


def test_run_group_timeout_kills_the_children_that_hold_its_pipes(tmp_path):
    # `sh` starts a child that keeps stdout open; subprocess.run's own timeout would then wait
    # for the pipe as long as that child lives (30 s here).
    t0 = time.monotonic()
    with pytest.raises(AssertionError, match="did not end within 1 s"):
        watch.run_group(["sh", "-c", "sleep 30 & echo started; wait"], tmp_path, dict(os.environ), 1)
    assert time.monotonic() - t0 < 10


def test_run_group_returns_output_and_code(tmp_path):
    p = watch.run_group("echo out; echo err >&2; exit 3", tmp_path, dict(os.environ), 30, shell=True)
    assert (p.returncode, p.stdout, p.stderr) == (3, "out\n", "err\n")


def _fake_sinfo(tmp_path, text: str) -> dict:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    # sinfo answers `text`; squeue and scancel answer at once (no SLURM needs to run here)
    for tool, body in (("sinfo", f"printf '%s\\n' '{text}'"), ("squeue", "echo JOBID"), ("scancel", "true")):
        (bin_dir / tool).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / tool).chmod(0o755)
    return {"PATH": f"{bin_dir}:{os.environ['PATH']}"}


@pytest.mark.parametrize("line, bad", [
    ("localhost|idle|none", False),
    ("localhost|mixed|none", False),
    ("localhost|allocated|none", False),
    ("localhost|drained|batch job complete failure", True),
    ("localhost|draining|Kill task failed", True),
    ("localhost|down*|Not responding", True),
    ("localhost|inval|Low CPUs", True),
])
def test_slurm_trouble_reads_the_node_state(tmp_path, monkeypatch, line, bad):
    monkeypatch.setenv("PATH", _fake_sinfo(tmp_path, line)["PATH"])
    why = watch.slurm_trouble()
    assert (why is not None) == bad, why
    if bad:
        assert line.split("|")[2] in why


def test_run_watched_stops_when_the_node_drains(tmp_path, monkeypatch):
    env = {**os.environ, **_fake_sinfo(tmp_path, "localhost|drained|batch job complete failure")}
    monkeypatch.setenv("PATH", env["PATH"])
    t0 = time.monotonic()
    with pytest.raises(AssertionError, match="batch job complete failure"):
        watch.run_watched(["sleep", "60"], tmp_path, env, timeout=120, every=0.2)
    assert time.monotonic() - t0 < 20
