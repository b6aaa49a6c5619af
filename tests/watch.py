"""Watching what the integration tests start, so that nothing they wait on can stall the run.

* `run_group`: a command in a process group of its own, killed whole on timeout.
* `wait_until`: polling with an end (and, for the SLURM tests, the checks below).
* `run_watched`, `slurm_trouble`, `slurm_report`: a drained or down node leaves every job PENDING
  for ever, and Snakemake's SLURM executor (or a test waiting on a job) would wait until its own
  time limit and say nothing about why. The SLURM tests poll `slurm_trouble()` while they wait
  and, when it answers, fail at once with `slurm_report()`: node state and reason, the queue, and
  the tail of both daemons' logs (scripts/slurm-local.sh).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

STATE = Path(os.environ.get("SLURM_LOCAL_STATE", "/tmp/ssmrepro-slurm"))
# sinfo's long node states that mean no job will start on the node
BAD_STATE = re.compile(r"drain|down|fail|inval|not_responding|unknown|future|reboot", re.I)


def _out(cmd: list[str]) -> str:
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"({' '.join(cmd)}: {exc})"
    return (p.stdout + p.stderr).strip()


def slurm_trouble() -> str | None:
    """Why no job can start on the test cluster (a node state and reason), or None."""
    text = _out(["sinfo", "-h", "-N", "-o", "%N|%T|%E"])
    for line in text.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and BAD_STATE.search(parts[1]):
            return f"node {parts[0]} is {parts[1]}: {parts[2]}"
    if not text or "|" not in text:
        return f"sinfo answers nothing usable: {text!r}"
    return None


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError as exc:
        return f"({exc})"


def slurm_report() -> str:
    """What a failed SLURM test prints: nodes, queue, and the daemons' recent logs."""
    parts = [
        "--- sinfo -N", _out(["sinfo", "-N", "-o", "%N %T %C %m %E"]),
        "--- squeue", _out(["squeue", "--states=all", "-o", "%i %j %T %r %M %S"]),
        "--- slurmctld.log", _tail(STATE / "log" / "slurmctld.log"),
        "--- slurmd.log", _tail(STATE / "log" / "slurmd.log"),
    ]
    return "\n".join(parts)


def wait_until(what: str, fn, timeout: float = 240, every: float = 0.1, slurm: bool = False):
    """Poll `fn` until it answers (and return the answer), for at most `timeout` seconds. With
    `slurm`, fail at once, with `slurm_report()`, when the test SLURM's node can no longer run
    jobs (checked every 2 s)."""
    deadline = time.monotonic() + timeout
    checked = 0.0
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        if slurm and time.monotonic() - checked > 2:
            checked = time.monotonic()
            if (trouble := slurm_trouble()) is not None:
                raise AssertionError(f"waiting for {what}: {trouble}\n{slurm_report()}")
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}" + (f"\n{slurm_report()}" if slurm else ""))


def run_watched(cmd: list[str], cwd: Path, env: dict, timeout: float, every: float = 1.0,
                log: Path | None = None) -> tuple[int, str]:
    """Run `cmd` (a client of the test SLURM) to its end; fail at once if the cluster breaks.

    Returns (exit code, output). Raises AssertionError, with `wait_until`'s reason and the
    output's tail, when the node can no longer run jobs or `timeout` seconds pass; the command's
    process group and this user's jobs are then stopped.
    """
    log = log or Path(cwd) / "watched.log"
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=sink, stderr=subprocess.STDOUT,
                                text=True, start_new_session=True)
    failure = None
    try:
        wait_until(f"{' '.join(cmd[:3])} ... to end", lambda: proc.poll() is not None, timeout,
                   every, slurm=True)
    except AssertionError as exc:
        failure = exc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            subprocess.run(["scancel", "--user", str(os.getuid())], capture_output=True, timeout=30)
    output = log.read_text(errors="replace")
    if failure is not None:
        raise AssertionError(f"{failure}\n--- output\n{output[-4000:]}") from None
    return proc.returncode, output


def run_group(cmd, cwd, env: dict, timeout: float, shell: bool = False) -> subprocess.CompletedProcess:
    """`subprocess.run(cmd, capture_output=True, text=True)` in a process group of its own, which
    is killed whole when `timeout` passes (or the test is interrupted). `subprocess.run`'s own
    timeout kills only the direct child and then waits for its pipes, which the child's children
    (Snakemake's jobs) hold open: that wait has no end."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, shell=shell, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except BaseException as exc:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        if isinstance(exc, subprocess.TimeoutExpired):
            raise AssertionError(f"{cmd} did not end within {timeout:.0f} s:\n{out[-3000:]}\n{err[-3000:]}") from None
        raise
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)
