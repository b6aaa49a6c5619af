"""Reliability and security: no lost work under preemption, faults and bad input.

Every fault here goes through the real entry points (the ``ssmrepro`` command line, Snakemake,
a real local SLURM) and checks what was kept: weights equal to an uninterrupted run's, finished
jobs not redone, previous files intact, one clear line for the user. docs/reliability.md lists each
fault, what happened, what was lost, and the test that shows it (including faults covered by
tests/test_checkpoint.py, test_train.py, test_fetch.py, test_data_loaders.py, test_metrics.py,
test_convert.py, which are not repeated here).

The random steps at which training is interrupted are drawn from ``SSMREPRO_TEST_SEED`` (default:
a fresh seed, printed in every assertion message) so that a failure can be replayed.
"""

from __future__ import annotations

import errno
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from watch import run_group, wait_until
from ssmrepro.cli import main
from ssmrepro.data.imageio import encode_png, read_image, write_png
from ssmrepro.train import checkpoint as ck
from ssmrepro.train.loop import EXIT_PREEMPTED

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SEED = int(os.environ.get("SSMREPRO_TEST_SEED") or random.SystemRandom().randrange(2**31))

# `ssmrepro train CARD --scale smoke --steps STEPS`: smoke checkpoints every EVERY = 10 steps and
# at the end, plus at the step boundary after a SIGTERM/SIGUSR1. NAFNet takes ~30 ms a step here
# (the kill test, 30 steps: checkpoints at 10, 20, 30); EVSSM ~200 ms, slow enough for SLURM's
# signals to land mid-run. 40 steps: each signal is sent at least 20 steps (~4 s) before the end,
# so that a slow `scancel` on a loaded machine cannot arrive after the run has finished.
EVERY = 10
KILL_CARD, KILL_STEPS = "nafnet", 30
SLURM_CARD, SLURM_STEPS = "evssm", 40
SLURM_MARGIN = 20  # steps left after the last signal is sent
MIDWAY_STEPS = 16  # the Snakemake kill test: EVSSM checkpoints at 10 and 16


@pytest.fixture(autouse=True)
def _project_root(monkeypatch):
    monkeypatch.setenv("SSMREPRO_ROOT", str(REPO))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _env(root: Path | None = REPO) -> dict:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "OMP_NUM_THREADS": "1"}
    env.pop("SSMREPRO_ROOT", None)
    if root is not None:
        env["SSMREPRO_ROOT"] = str(root)
    return env


def cli(capsys, *argv) -> tuple[int, str, str]:
    """``ssmrepro ARGV`` in this process (the console script is ``ssmrepro.cli:main``)."""
    capsys.readouterr()
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line(rc: int, err: str, *needles: str, code: int = 2) -> str:
    """Exit status ``code`` and exactly one stderr line, ``ssmrepro: error: ...``, naming the problem."""
    lines = err.splitlines()
    assert rc == code, (rc, err)
    assert len(lines) == 1 and err.endswith("\n"), f"expected one line, got {len(lines)}:\n{err}"
    assert lines[0].startswith("ssmrepro: error: "), lines[0]
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


# ----------------------------------------------------------------------------------------------
# shared, built once: the embedded deblurring set, an uninterrupted reference run, a tiny run


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    assert main(["build-embedded", "embedded_deblur", "--root", str(root)]) == 0
    return root


def _train_argv(run_dir: Path, data_root: Path, card: str, steps: int) -> list[str]:
    return ["train", card, "--data", "embedded_deblur", "--scale", "smoke", "--steps", str(steps),
            "--run-dir", str(run_dir), "--data-root", str(data_root)]


@pytest.fixture(scope="module")
def reference(data_root, tmp_path_factory):
    """``reference(card, steps)``: the uninterrupted run an interrupted one must equal (same
    command line, data and seed), trained once per module."""
    runs: dict[tuple[str, int], Path] = {}

    def get(card: str, steps: int) -> Path:
        if (card, steps) not in runs:
            run = tmp_path_factory.mktemp(f"reference-{card}") / "run"
            assert main(_train_argv(run, data_root, card, steps)) == 0
            runs[card, steps] = run
        return runs[card, steps]

    return get


@pytest.fixture(scope="module")
def tiny_run(data_root, tmp_path_factory) -> Path:
    """A finished 2-step NAFNet run (fast to evaluate); tests copy it before touching it."""
    run = tmp_path_factory.mktemp("tiny") / "run"
    assert main(_train_argv(run, data_root, "nafnet", 2)) == 0
    return run


def _log(run_dir: Path) -> list[dict]:
    rows = []
    path = run_dir / "log.jsonl"
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            rows.append(json.loads(line))
        except ValueError:
            pass  # a line being written
    return rows


def _logged_step(run_dir: Path) -> int:
    rows = _log(run_dir)
    return rows[-1]["step"] if rows else 0


def _saved_step(run_dir: Path) -> int:
    last = run_dir / "checkpoints" / "last.pt"
    return ck.load_checkpoint(last)["step"] if last.exists() else 0


def _resume_points(run_dir: Path) -> list[int]:
    """Steps a process resumed from: ``time_s`` restarts at the first step a process runs."""
    rows = _log(run_dir)
    return [a["step"] for a, b in zip(rows, rows[1:]) if b["time_s"] < a["time_s"]]


def _temporaries(*folders: Path) -> list[Path]:
    return sorted(p for f in folders if f.exists() for p in f.rglob("*")
                  if p.name.endswith(".tmp") or p.name.startswith((".tmp-", ".old-")))


def assert_same_run(run: Path, ref: Path, why: str = "") -> None:
    """Same final weights (bit for bit) and the same logged losses, each step exactly once."""
    got, want = ck.load_model_weights(run / "final.pt"), ck.load_model_weights(ref / "final.pt")
    assert got.keys() == want.keys()
    for k in want:
        assert torch.equal(got[k], want[k]), f"{k} differs {why}"
    keys = ("step", "loss", "l1", "fft", "lr")
    assert [[r[k] for k in keys] for r in _log(run)] == [[r[k] for k in keys] for r in _log(ref)], why
    assert (run / "config_hash").read_text() == (ref / "config_hash").read_text()
    assert _temporaries(run) == [], why


# ----------------------------------------------------------------------------------------------
# 1. training killed (SIGKILL) and terminated (SIGTERM, as SLURM) several times, then resumed


def _start(cmd: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(cmd, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, **kw)


def _interrupt(cmd, run_dir: Path, at_step: int, sig: int, why: str) -> tuple[int, str, str, int]:
    """Start training, wait until it has logged ``at_step``, send ``sig`` to its process group
    (as SLURM signals every process of a job); return (status, stdout, stderr, step seen)."""
    proc = _start(cmd)
    try:
        deadline = time.monotonic() + 180
        while _logged_step(run_dir) < at_step and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        seen = _logged_step(run_dir)
        assert proc.poll() is None, f"training ended before step {at_step} {why}: {proc.communicate()}"
        os.killpg(proc.pid, sig)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    return proc.returncode, out, err, seen


def test_cli_training_killed_three_times_resumes_to_the_uninterrupted_weights(tmp_path, capsys, data_root,
                                                                            reference):
    """SIGTERM, SIGKILL, SIGKILL at random steps of `ssmrepro train nafnet --steps 30`, then the
    same command finishes with the weights and losses of the uninterrupted run. A SIGTERM saves at
    the next step boundary and exits 75 (nothing lost); a SIGKILL loses only the steps since the
    last checkpoint (at most 10)."""
    rng = random.Random(SEED)
    why = f"(SSMREPRO_TEST_SEED={SEED})"
    run = tmp_path / "run"
    argv = _train_argv(run, data_root, KILL_CARD, KILL_STEPS)
    cmd = [str(BIN / "ssmrepro"), *argv]

    # 1. SIGTERM to the process group, as SLURM at the time limit or on `scontrol requeue`
    rc, out, err, seen = _interrupt(cmd, run, rng.randint(2, 8), signal.SIGTERM, why)
    assert rc == EXIT_PREEMPTED, (rc, out, err, why)
    assert "preempted: step" in out and "Traceback" not in err, (out, err)
    s1 = _saved_step(run)
    assert seen <= s1 < KILL_STEPS and _logged_step(run) == s1, (seen, s1, why)

    # 2. and 3. SIGKILL at random later steps (before or after a checkpoint)
    saved = s1
    for upper in (KILL_STEPS - 6, KILL_STEPS - 4):
        rc, out, err, seen = _interrupt(cmd, run, rng.randint(saved + 1, upper), signal.SIGKILL, why)
        assert rc == -signal.SIGKILL, (rc, err, why)
        reached, now = _logged_step(run), _saved_step(run)
        assert now in {saved, *range(EVERY, reached + 1, EVERY)}, (saved, now, reached, why)
        assert 0 <= reached - now <= EVERY, (reached, now, why)  # lost: the steps since the checkpoint
        assert not (run / "final.pt").exists()
        saved = now

    # 4. the same command again: resumes from the last checkpoint and finishes
    rc, out, err = cli(capsys, *argv)
    assert rc == 0, (err, why)
    assert f"complete: step {KILL_STEPS} of {KILL_STEPS}" in out
    assert _resume_points(run)[-1] == saved >= s1 > 0, (_resume_points(run), saved, why)
    assert_same_run(run, reference(KILL_CARD, KILL_STEPS), why)


# ----------------------------------------------------------------------------------------------
# 1b. the same on a real local SLURM: `scontrol requeue` and `scancel --signal=USR1 --batch`


def _job(job_id: str) -> dict:
    p = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True,
                       timeout=60)
    return dict(kv.split("=", 1) for kv in p.stdout.split() if "=" in kv)


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.xdist_group("slurm")  # one local SLURM: its users share a worker
def test_slurm_requeued_job_resumes_from_its_checkpoint(tmp_path, local_slurm, data_root, reference):
    """`sbatch --requeue` of `ssmrepro train`; `scontrol requeue` (SIGTERM to the job) at a random
    step, then SIGUSR1 to the batch step (`scancel --signal=USR1 --batch`, the early warning of
    `--signal=USR1@300`) and the requeue of the job that exited 75 (by SLURM: RequeueExit=75): each start resumes from the
    checkpoint the previous one saved; the job completes with the uninterrupted run's weights."""
    rng = random.Random(SEED)
    why = f"(SSMREPRO_TEST_SEED={SEED})"
    run, out = tmp_path / "run", tmp_path / "job.out"
    script = tmp_path / "train.sh"
    script.write_text("#!/bin/bash\nexec ssmrepro " + " ".join(_train_argv(run, data_root, SLURM_CARD, SLURM_STEPS))
                      + "\n")
    sub = subprocess.run(["sbatch", "--parsable", "--requeue", "--open-mode=append", "-o", str(out),
                          "-J", "ssmrepro-reliability", "-c", "1", "--mem=2000", str(script)],
                         env=_env(), capture_output=True, text=True, check=True, cwd=tmp_path)
    job = sub.stdout.strip().split(";")[0]
    try:
        # 1. preempted: the whole job is signalled (SIGTERM), requeued, started again
        a = rng.randint(2, 6)
        wait_until(f"step {a}", lambda: _logged_step(run) >= a, timeout=300, every=0.02, slurm=True)
        subprocess.run(["scontrol", "requeue", job], check=True, timeout=60)
        # Requeued, the job starts again once its old credential has expired (AuthInfo
        # cred_expire on the test cluster). Forcing an earlier start (`scontrol update
        # StartTime=now`) races that expiry and can end in "Job credential revoked".
        wait_until(f"job {job} to save, stop and be requeued", lambda: "preempted: step" in out.read_text()
              and _job(job).get("JobState") == "PENDING", timeout=300, slurm=True)
        s1 = _saved_step(run)
        assert a <= s1 < SLURM_STEPS - SLURM_MARGIN - 2, (a, s1, why)
        # 2. the early warning: SIGUSR1 to the batch step; training saves and exits 75
        b = rng.randint(s1 + 2, max(s1 + 2, min(s1 + 8, SLURM_STEPS - SLURM_MARGIN)))
        wait_until(f"step {b}", lambda: _logged_step(run) >= b, timeout=300, every=0.02, slurm=True)
        subprocess.run(["scancel", "--signal=USR1", "--batch", job], check=True, timeout=60)
        # Exit 75. With RequeueExit=75 in slurm.conf (scripts/slurm-local.sh, as docs/reliability.md
        # advises) SLURM requeues the job by itself and its FAILED state lasts an instant; without
        # it the job stays FAILED with exit code 75 and is requeued here by hand.
        wait_until("the job to exit 75", lambda: (j := _job(job)).get("Restarts") == "2"
              or j.get("JobState") in ("FAILED", "COMPLETED"), slurm=True)
        info = _job(job)
        if info.get("Restarts") == "1":
            assert (info["JobState"], info["ExitCode"]) == ("FAILED", f"{EXIT_PREEMPTED}:0"), (info, why)
            subprocess.run(["scontrol", "requeue", job], check=True, timeout=60)
        # Either way it starts again when the old job credential expires, as above.
        info = wait_until("the job to complete", lambda: (j := _job(job)).get("JobState") in (
            "COMPLETED", "FAILED", "CANCELLED") and j, timeout=300, slurm=True)
    finally:
        subprocess.run(["scancel", job], capture_output=True)
    text = out.read_text()
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("COMPLETED", "0:0", "2"), (info, text)
    assert "DUE TO JOB REQUEUE" in text and text.count("preempted: step") == 2, text
    assert f"complete: step {SLURM_STEPS} of {SLURM_STEPS}" in text, text
    points = _resume_points(run)  # the second: the checkpoint written on SIGUSR1
    assert len(points) == 2 and points[0] == s1 and b <= points[1] < SLURM_STEPS, (points, s1, b, why)
    assert f"preempted: step {points[1]} of {SLURM_STEPS}" in text, text
    assert_same_run(run, reference(SLURM_CARD, SLURM_STEPS), why)


# ----------------------------------------------------------------------------------------------
# 2 and 5. Snakemake: killed midway, and two instances at once


def _clone(tmp_path: Path, steps: int) -> Path:
    from test_workflow import fresh_clone

    clone = fresh_clone(tmp_path)
    # `--config steps={evssm: N}` reaches the schema as strings (Snakemake parses nested values
    # with YAML's BaseLoader), so the small settings go in a config file.
    (clone / "small.yaml").write_text(f"steps: {{evssm: {steps}}}\neval_limit: 2\n")
    return clone


SMALL_TARGET = ["reproduce_evssm_t10", "--configfile", "small.yaml"]


def _snakemake(clone: Path, *args, timeout: int = 400) -> subprocess.CompletedProcess:
    return run_group(["snakemake", *args], clone, _env(None), timeout)


def _outputs(clone: Path) -> dict[str, int]:
    """Finished outputs (declared rule outputs that exist) and their mtimes."""
    found = [*clone.glob("runs/**/final.pt"), *clone.glob("results/**/*.json"),
             *clone.glob("data/*/manifest.json")]
    return {str(p.relative_to(clone)): p.stat().st_mtime_ns for p in found}


def _assert_outputs_valid(clone: Path) -> None:
    for p in clone.glob("results/**/*.json"):
        json.loads(p.read_text())  # complete JSON, not a truncated file
    for p in clone.glob("runs/**/*.pt"):
        ck.load_checkpoint(p)  # complete, checksummed
    for p in clone.glob("data/*/manifest.json"):
        json.loads(p.read_text())


def _job_counts(output: str) -> dict[str, int]:
    table = output.split("Job stats:")[1] if "Job stats:" in output else ""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)\s*$", table, re.M)}


@pytest.mark.integration
@pytest.mark.slow
def test_snakemake_killed_midway_reruns_only_unfinished_jobs(tmp_path):
    """SIGKILL to snakemake's process group while a training job is between checkpoints. After
    `--unlock` (the lock of a killed instance stays), `--rerun-incomplete` finishes: finished
    outputs are not touched, the killed training resumes from its checkpoint, no partial file."""
    clone = _clone(tmp_path, steps=MIDWAY_STEPS)  # EVSSM: checkpoints at 10 and 16
    log = open(tmp_path / "first.log", "w")
    proc = subprocess.Popen(["snakemake", "--cores", "1", *SMALL_TARGET], cwd=clone, env=_env(None),
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def midway():
        if proc.poll() is not None:
            raise AssertionError(f"snakemake ended first: {(tmp_path / 'first.log').read_text()[-3000:]}")
        finished = list(clone.glob("runs/**/final.pt"))
        between = [r.parent.parent for r in clone.glob("runs/**/checkpoints/last.pt")
                   if not (r.parent.parent / "final.pt").exists()]
        return finished and between and between[0]

    try:
        killed_run = wait_until("a finished job and a training job between checkpoints", midway, 400, 0.02)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    saved = _saved_step(killed_run)
    assert saved == EVERY and not (killed_run / "final.pt").exists()
    finished = _outputs(clone)
    assert any(k.endswith("final.pt") for k in finished)
    _assert_outputs_valid(clone)

    # The killed instance could not remove its lock: Snakemake refuses until `--unlock`.
    p = _snakemake(clone, "--cores", "1", *SMALL_TARGET)
    assert p.returncode != 0 and "Directory cannot be locked" in p.stdout + p.stderr
    assert _snakemake(clone, "--unlock", *SMALL_TARGET).returncode == 0
    p = _snakemake(clone, "--cores", "1", "--rerun-incomplete", *SMALL_TARGET)
    assert p.returncode == 0, (p.stdout + p.stderr)[-4000:]
    assert _job_counts(p.stdout + p.stderr).get("train") == 1, (p.stdout + p.stderr)[-4000:]
    after = _outputs(clone)
    assert {k: after[k] for k in finished} == finished  # finished outputs were not redone
    assert _resume_points(killed_run)[-1] == saved  # the killed training resumed, not restarted
    _assert_outputs_valid(clone)
    assert _temporaries(clone / "results", clone / "runs") == []
    for r in clone.glob("results/smoke/embedded_deblur/*/seed0/*.json"):
        assert json.loads(r.read_text())["status"] == "ok", r
    p = _snakemake(clone, "-n", "--cores", "1", *SMALL_TARGET)
    assert "Nothing to be done" in p.stdout + p.stderr


@pytest.mark.integration
@pytest.mark.slow
def test_two_snakemake_instances_at_once_one_refuses(tmp_path):
    """Two `snakemake reproduce_evssm_t10` started together in the same tree: one takes the
    directory lock, the other refuses ("Directory cannot be locked") without touching anything;
    the first completes and every output is valid."""
    clone = _clone(tmp_path, steps=4)
    cmd = ["snakemake", "--cores", "1", *SMALL_TARGET]
    procs = [subprocess.Popen(cmd, cwd=clone, env=_env(None), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, start_new_session=True) for _ in range(2)]
    try:
        outs = [p.communicate(timeout=400)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
    codes = [p.returncode for p in procs]
    assert sorted(codes) == [0, 1], (codes, [o[-2000:] for o in outs])
    loser = outs[codes.index(1)]
    assert "Directory cannot be locked" in loser, loser[-3000:]
    assert "rule train" not in loser and "localrule" not in loser  # it ran nothing
    _assert_outputs_valid(clone)
    assert (clone / "results/smoke/tables/evssm_t10.json").exists()
    for r in clone.glob("results/smoke/embedded_deblur/*/seed0/*.json"):
        assert json.loads(r.read_text())["status"] == "ok", r
    assert _temporaries(clone / "results", clone / "runs") == []
    p = _snakemake(clone, "-n", "--cores", "1", *SMALL_TARGET)
    assert "Nothing to be done" in p.stdout + p.stderr


# ----------------------------------------------------------------------------------------------
# 4. bad input through the command line: one line, exit 2, nothing lost


def _rgb(seed: int, h: int = 16, w: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _pairs(tmp_path: Path, n: int = 3) -> tuple[Path, Path]:
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir(), gt.mkdir()
    for i in range(n):
        write_png(gt / f"{i}.png", _rgb(i))
        write_png(pred / f"{i}.png", _rgb(i) // 2 + 10)
    return pred, gt


def _metrics(capsys, pred, gt, *extra):
    return cli(capsys, "metrics", "--pred", pred, "--gt", gt, "--protocol", "psnr[rgb,uint8]", *extra)


def test_truncated_png_and_jpeg_are_named_in_one_line(tmp_path, capsys, data_root, tiny_run):
    """`ssmrepro metrics` on a folder with a truncated PNG or JPEG, `ssmrepro evaluate` on a test
    set with a truncated PNG: one line naming the file; no result file is written."""
    pred, gt = _pairs(tmp_path)
    cut = pred / "1.png"
    cut.write_bytes(cut.read_bytes()[:60])
    assert_one_line(*_metrics(capsys, pred, gt)[::2], f"cannot read image {cut}")
    cut.unlink()
    buf = io.BytesIO()
    from PIL import Image

    Image.fromarray(_rgb(1, 64, 64)).save(buf, format="JPEG", quality=90)
    jpg = pred / "1.jpg"
    jpg.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    assert_one_line(*_metrics(capsys, pred, gt)[::2], f"cannot read image {jpg}")

    data = tmp_path / "data"
    shutil.copytree(data_root, data)
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    victim = data / "embedded_deblur" / "test" / "target" / "00001.png"
    victim.write_bytes(victim.read_bytes()[:100])
    result = tmp_path / "results" / "embedded_deblur.json"
    rc, _, err = cli(capsys, "evaluate", run, "--data-root", data, "--limit", 2, "--out", result)
    assert_one_line(rc, err, str(victim))
    assert not result.parent.exists() or _temporaries(result.parent) == []
    assert not result.exists()


def _gray(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (64, 64), dtype=np.uint8)


def _rgba(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.concatenate([rng.integers(0, 256, (64, 64, 3)), rng.integers(0, 256, (64, 64, 1))],
                          axis=2).astype(np.uint8)


def _rgb16(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 65536, (64, 64, 3), dtype=np.uint16)


def _over_white(rgba: np.ndarray) -> np.ndarray:
    """The stated rule, computed independently: round(c * a / 255 + 255 * (1 - a / 255))."""
    c, a = rgba[..., :3].astype(np.float64), rgba[..., 3:].astype(np.float64) / 255
    return np.floor(c * a + 255 * (1 - a) + 0.5).astype(np.uint8)


def _round257(v: np.ndarray) -> np.ndarray:
    return np.floor(v.astype(np.float64) / 257 + 0.5).astype(np.uint8)


def _save(path: Path, arr: np.ndarray, mode: str | None = None) -> None:
    from PIL import Image

    if arr.dtype == np.uint16:
        path.write_bytes(encode_png(arr))  # 16-bit RGB PNG
    else:
        Image.fromarray(arr, mode=mode).save(path)


CONVERSIONS = {  # name: (file content, the stated rule's 8-bit RGB)
    "grayscale": (lambda s: (_gray(s), "L"), lambda s: np.repeat(_gray(s)[..., None], 3, 2)),
    "rgba": (lambda s: (_rgba(s), "RGBA"), lambda s: _over_white(_rgba(s))),
    "16-bit": (lambda s: (_rgb16(s), None), lambda s: _round257(_rgb16(s))),
}


def test_evaluate_converts_grayscale_rgba_16bit_by_the_stated_rule(tmp_path, capsys, data_root, tiny_run):
    """A test set holding a grayscale input, an RGBA target and a 16-bit target scores exactly as
    the same set with those files converted by hand by `ssmrepro.data.imageio.CONVERSION_RULES`."""
    results = {}
    for variant in ("as stored", "converted by hand"):
        data = tmp_path / variant / "data"
        shutil.copytree(data_root, data)
        test = data / "embedded_deblur" / "test"
        for (name, (stored, rule)), (i, part) in zip(CONVERSIONS.items(), [(0, "input"), (1, "target"), (2, "target")]):
            target = test / part / f"{i:05d}.png"
            if variant == "as stored":
                _save(target, *stored(i))
                assert (read_image(target) == rule(i)).all(), name
            else:
                write_png(target, rule(i))
        run = tmp_path / variant / "run"
        shutil.copytree(tiny_run, run)
        out = tmp_path / variant / "result.json"
        rc, _, err = cli(capsys, "evaluate", run, "--data-root", data, "--limit", 3, "--out", out)
        assert rc == 0 and err == "", err
        results[variant] = json.loads(out.read_text())
    assert results["as stored"]["n_images"] == 3
    assert results["as stored"]["metrics"] == results["converted by hand"]["metrics"]


@pytest.mark.parametrize("kind", [
    "grayscale",
    "rgba",
    "16-bit",
])
def test_metrics_converts_grayscale_rgba_16bit_by_the_stated_rule(tmp_path, capsys, kind):
    stored, rule = CONVERSIONS[kind]
    scores = []
    for variant in ("as stored", "converted by hand"):
        pred, gt = tmp_path / variant / "pred", tmp_path / variant / "gt"
        pred.mkdir(parents=True), gt.mkdir()
        write_png(gt / "0.png", rule(7) // 2 + 20)
        if variant == "as stored":
            _save(pred / "0.png", *stored(7))
        else:
            write_png(pred / "0.png", rule(7))
        rc, out, err = _metrics(capsys, pred, gt, "--json")
        assert rc == 0, err
        scores.append(json.loads(out)["metrics"])
    assert scores[0] == scores[1]


def test_mismatched_and_empty_sets_are_one_line(tmp_path, capsys, data_root, tiny_run):
    """Different sizes, different counts, empty folders: one line each (metrics, evaluate,
    train, fetch --from)."""
    pred, gt = _pairs(tmp_path)
    write_png(pred / "1.png", _rgb(1, 16, 18))
    assert_one_line(*_metrics(capsys, pred, gt)[::2], "1.png: pred is 18x16, gt is 16x16")
    (pred / "1.png").unlink()
    assert_one_line(*_metrics(capsys, pred, gt)[::2], "pred folder has 2 images, gt folder has 3", "only in gt: 1")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line(*_metrics(capsys, empty, gt)[::2], f"no images in pred folder {empty}")
    assert_one_line(*_metrics(capsys, pred, empty)[::2], f"no images in gt folder {empty}")
    assert_one_line(*cli(capsys, "evaluate", empty)[::2], "not a run folder", "ssmrepro train")
    rc, _, err = cli(capsys, *_train_argv(tmp_path / "r", empty, "nafnet", 1))
    assert_one_line(rc, err, "ssmrepro build-embedded embedded_deblur")
    assert not (tmp_path / "r").exists()
    # a test set whose folder was emptied (the manifest still lists the files): the first is named
    data = tmp_path / "data"
    shutil.copytree(data_root, data)
    shutil.rmtree(data / "embedded_deblur" / "test")
    rc, _, err = cli(capsys, "evaluate", tiny_run, "--data-root", data, "--out", tmp_path / "o.json")
    assert_one_line(rc, err, f"cannot read image {data / 'embedded_deblur/test/input/00000.png'}")
    assert not (tmp_path / "o.json").exists()


def test_mistyped_workflow_config_key_is_named():
    p = subprocess.run(["snakemake", "-n", "reproduce_evssm_t10", "--config", "sclae=smoke"], cwd=REPO,
                       env=_env(None), capture_output=True, text=True, timeout=300)
    out = p.stdout + p.stderr
    assert p.returncode != 0
    assert "Additional properties are not allowed ('sclae' was unexpected)" in out, out[-3000:]
    assert "Traceback" not in out


@pytest.fixture
def project_copy(tmp_path, monkeypatch) -> Path:
    """A copy of the project's definitions (cards, tables, schemas, recipes) to break."""
    import ssmrepro.cards as cards

    root = tmp_path / "project"
    for d in ("models", "workflow", "datasets"):
        shutil.copytree(REPO / d, root / d)
    monkeypatch.setenv("SSMREPRO_ROOT", str(root))
    cards._load_all.cache_clear()
    yield root
    cards._load_all.cache_clear()


def _card_typo(where):
    return {
        "top": (lambda d: d.__setitem__("swiches", d.pop("switches")), "swiches"),
        "scales": (lambda d: d["scales"].__setitem__("smoek", d["scales"].pop("smoke")), "smoek"),
        "switch": (lambda d: d["switches"].__setitem__("widht", 8), "widht"),
        "scale switch": (lambda d: d["scales"]["smoke"].__setitem__("widht", 8), "widht"),
        "train": (lambda d: d["train"].__setitem__("lrr", 0.1), "lrr"),
        "evaluate": (lambda d: d.__setitem__("evaluate", {"swiches": {"width": 8}}), "swiches"),
    }[where]


@pytest.mark.parametrize("where", [
    "top", "scales",
    "switch",
    "scale switch",
    "train",
    "evaluate",
])
def test_misspelt_card_key_names_file_and_key(project_copy, capsys, data_root, tmp_path, where):
    card = project_copy / "models" / "nafnet.yaml"
    data = yaml.safe_load(card.read_text())
    edit, key = _card_typo(where)
    edit(data)
    card.write_text(yaml.safe_dump(data, sort_keys=False))
    if where == "train":
        rc, _, err = cli(capsys, *_train_argv(tmp_path / "r", data_root, "nafnet", 1))
    else:
        rc, _, err = cli(capsys, "info", "nafnet", "--scale", "smoke", "--no-memory", "--size", 32, 32)
    assert_one_line(rc, err, key, str(card))


@pytest.mark.parametrize("old, new, named", [
    ("caption", "captoin", "<top>: Additional properties are not allowed ('captoin' was unexpected)"),
    ("title", "titel", "<top>: 'title' is a required property"),  # a required key names the missing one
])
def test_bad_table_key_names_file_and_key(project_copy, capsys, tmp_path, old, new, named):
    table = project_copy / "workflow" / "tables" / "evssm_t10.yaml"
    data = yaml.safe_load(table.read_text())
    data[new] = data.pop(old)
    table.write_text(yaml.safe_dump(data, sort_keys=False))
    for argv in (["collect", "evssm_t10", "--out", tmp_path / "t.json"],
                 ["report", "--results", tmp_path / "results", "--out", tmp_path / "reports"]):
        assert_one_line(*cli(capsys, *argv)[::2], f"{table}: {named}")
    assert not (tmp_path / "t.json").exists() and not (tmp_path / "reports").exists()


def test_nan_loss_stops_with_step_and_last_good_checkpoint(tmp_path, capsys, data_root, monkeypatch):
    """`ssmrepro train` whose loss becomes NaN at step 11: one line naming the step and the last
    good checkpoint (step 10, finite weights, kept), exit 1 (not resubmitted), no final.pt."""
    import ssmrepro.train.loop as loop

    calls = {"n": 0}
    real_l1 = loop.l1_loss

    def l1_nan_at_step_11(*a, **kw):
        calls["n"] += 1
        out = real_l1(*a, **kw)
        return out * float("nan") if calls["n"] == 11 else out

    monkeypatch.setattr(loop, "l1_loss", l1_nan_at_step_11)
    run = tmp_path / "run"
    rc, _, err = cli(capsys, *_train_argv(run, data_root, "nafnet", 12))
    assert_one_line(rc, err, "non-finite loss at step 11", f"last good checkpoint: {run / 'checkpoints' / 'last.pt'} "
                    "(step 10)", code=1)
    good = ck.load_checkpoint(run / "checkpoints" / "last.pt")
    assert good["step"] == 10 and all(torch.isfinite(v).all() for v in good["model"].values())
    assert not (run / "final.pt").exists() and _temporaries(run) == []


def _write_recipe(project: Path, archive: Path) -> None:
    from test_fetch import NAME, sha, write_recipe

    write_recipe(project / "datasets", archive.name, sha(archive.read_bytes()), None)
    assert NAME == "toyblur"


def _evil_archives() -> dict[str, tuple[str, bytes]]:
    import tarfile
    import zipfile

    from test_fetch import _members, make_tar, make_zip

    good = _members()
    out = {"dotdot": ("toy.zip", make_zip({**good, "toy/../../evil.txt": b"x"})),
           "absolute": ("toy.tar.gz", make_tar({**good, "/tmp/ssmrepro_reliability_abs.txt": b"x"}))}
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, d in good.items():
            zf.writestr(n, d)
        link = zipfile.ZipInfo("toy/link")
        link.external_attr = 0o120777 << 16
        zf.writestr(link, "../../outside")
    out["zip symlink"] = ("toy.zip", buf.getvalue())
    sl = tarfile.TarInfo("toy/link")
    sl.type, sl.linkname = tarfile.SYMTYPE, "../../../etc"
    out["tar symlink"] = ("toy.tar.gz", make_tar(good, extra=[sl]))
    hl = tarfile.TarInfo("toy/hard")
    hl.type, hl.linkname = tarfile.LNKTYPE, "../outside.txt"
    out["hard link"] = ("toy.tar.gz", make_tar(good, extra=[hl]))
    return out


def test_fetch_from_refuses_traversal_and_links_keeping_old_data(tmp_path, capsys, monkeypatch):
    """`ssmrepro fetch toyblur --from ARCHIVE` with path traversal, an absolute path, links out of
    the tree: refused in one line (even with a matching checksum), nothing written outside, the
    data fetched before are unchanged, no temporary folder left; an empty --from folder too."""
    from test_fetch import _members, _snapshot, make_zip

    project = tmp_path / "project"
    (project / "datasets").mkdir(parents=True)
    monkeypatch.setenv("SSMREPRO_DATASETS_DIR", str(project / "datasets"))
    root = tmp_path / "sub" / "data"
    good = tmp_path / "downloads" / "toy.zip"
    good.parent.mkdir()
    good.write_bytes(make_zip(_members()))
    _write_recipe(project, good)
    rc, out, err = cli(capsys, "fetch", "toyblur", "--from", good, "--root", root, "--no-dvc")
    assert rc == 0, err
    before = _snapshot(root / "toyblur")
    for kind, (name, blob) in _evil_archives().items():
        evil = tmp_path / kind.replace(" ", "_") / name
        evil.parent.mkdir()
        evil.write_bytes(blob)
        _write_recipe(project, evil)  # the checksum matches: only the extraction can refuse it
        rc, _, err = cli(capsys, "fetch", "toyblur", "--from", evil, "--root", root, "--no-dvc")
        assert_one_line(rc, err, name, "refused")
        assert _snapshot(root / "toyblur") == before, kind
        assert _temporaries(root) == [], kind
        assert evil.exists()  # the user's file is left alone
    assert not (tmp_path / "sub" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/ssmrepro_reliability_abs.txt").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line(*cli(capsys, "fetch", "toyblur", "--from", empty, "--root", root, "--no-dvc")[::2],
                    f"{empty} lacks toy")


class _Code:
    """Pickled code: unpickling it would create a folder (the marker); weights-only refuses it."""

    marker: Path

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


def test_checkpoints_with_pickled_code_are_refused(tmp_path, capsys, data_root, tiny_run):
    """evaluate (final.pt), train resuming (last.pt) and import-weights refuse a file that needs
    unpickling, in one line, without running it; a corrupted last.pt is named too."""
    marker = tmp_path / "code-ran"
    _Code.marker = marker
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    torch.save({"model": _Code()}, run / "final.pt")
    rc, _, err = cli(capsys, "evaluate", run, "--data-root", data_root, "--limit", 1, "--out", tmp_path / "r.json")
    assert_one_line(rc, err, f"refusing to load {run / 'final.pt'}", "unpickling")
    assert not (tmp_path / "r.json").exists()

    fresh = tmp_path / "fresh"
    (fresh / "checkpoints").mkdir(parents=True)
    torch.save({"format": ck.FORMAT, "payload": _Code()}, fresh / "checkpoints" / "last.pt")
    rc, _, err = cli(capsys, *_train_argv(fresh, data_root, "nafnet", 2))
    assert_one_line(rc, err, f"refusing to load {fresh / 'checkpoints' / 'last.pt'}")
    assert not (fresh / "final.pt").exists()

    src = tmp_path / "authors.pth"
    torch.save({"params": _Code()}, src)
    rc, _, err = cli(capsys, "import-weights", src, "--card", "nafnet", "--out", tmp_path / "w.pt")
    assert_one_line(rc, err, str(src), "unpickling")
    assert not (tmp_path / "w.pt").exists()
    assert not marker.exists()  # nothing was unpickled anywhere

    cut = tmp_path / "cut"
    shutil.copytree(tiny_run, cut)
    last = cut / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    (cut / "final.pt").unlink()
    rc, _, err = cli(capsys, *_train_argv(cut, data_root, "nafnet", 2))
    assert_one_line(rc, err, f"checkpoint {last} is truncated or corrupted")


def test_disk_full_while_writing_a_result_keeps_the_previous_one(tmp_path, capsys, data_root, tiny_run,
                                                                 monkeypatch):
    """`ssmrepro evaluate` whose result write hits ENOSPC: one line, exit 2, the previous result
    file is unchanged and no temporary file is left beside it."""
    import ssmrepro.atomic as atomic

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    out = tmp_path / "results" / "embedded_deblur.json"
    argv = ["evaluate", run, "--data-root", data_root, "--limit", 1, "--out", out]
    assert cli(capsys, *argv)[0] == 0
    before = out.read_bytes()

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(atomic.os, "fsync", no_space)
    rc, _, err = cli(capsys, *argv)
    monkeypatch.undo()
    assert_one_line(rc, err, "No space left on device")
    assert out.read_bytes() == before and json.loads(before)["status"] == "ok"
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
