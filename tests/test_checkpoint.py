"""Checkpoints: atomic writes, checksums, weights_only loading, RNG states, and real interruptions
(SIGKILL and SIGTERM of a training subprocess) that resume bit-exactly on CPU."""

from __future__ import annotations

import errno
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ssmrepro.train import checkpoint as ck
from ssmrepro.train import toy
from ssmrepro.train.loop import EXIT_PREEMPTED, train


def _state(step=3):
    return {"step": step, "model": {"w": torch.arange(6.0).reshape(2, 3)}, "names": ["a", "b"],
            "rng": ck.capture_rng_state(), "nested": {"x": 1.5, "none": None}}


def test_roundtrip_and_rng_states(tmp_path):
    path = tmp_path / "ck" / "last.pt"
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    state = _state()
    expect = (random.random(), np.random.rand(), torch.rand(3))
    ck.save_checkpoint(path, state)
    loaded = ck.load_checkpoint(path)
    assert loaded["step"] == 3 and loaded["names"] == ["a", "b"] and loaded["nested"]["none"] is None
    assert torch.equal(loaded["model"]["w"], state["model"]["w"])
    random.seed(99), np.random.seed(99), torch.manual_seed(99)
    ck.restore_rng_state(loaded["rng"])
    got = (random.random(), np.random.rand(), torch.rand(3))
    assert got[0] == expect[0] and got[1] == expect[1] and torch.equal(got[2], expect[2])
    # the file is an ordinary torch file whose every level loads with weights_only=True
    outer = torch.load(path, weights_only=True)
    assert outer["format"] == ck.FORMAT and len(outer["sha256"]) == 64


def test_corruption_is_detected_and_names_the_file(tmp_path):
    path = tmp_path / "last.pt"
    ck.save_checkpoint(path, _state())
    data = bytearray(path.read_bytes())
    outer = torch.load(path, weights_only=True)
    # flip one byte inside the payload (find the payload's bytes in the archive)
    payload = outer["payload"].numpy().tobytes()
    at = bytes(data).find(payload[200:264])
    assert at > 0
    data[at + 10] ^= 0xFF
    bad = tmp_path / "flipped.pt"
    bad.write_bytes(bytes(data))
    with pytest.raises(ck.CorruptCheckpoint, match="flipped.pt") as e:
        ck.load_checkpoint(bad)
    assert "\n" not in str(e.value)

    cut = tmp_path / "truncated.pt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ck.CorruptCheckpoint, match="truncated.pt") as e:
        ck.load_checkpoint(cut)
    assert "\n" not in str(e.value)


class _Pickled:
    pass


def test_pickled_objects_are_refused(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"step": 1, "obj": _Pickled()}, evil)
    with pytest.raises(ck.UnsafeCheckpoint, match="evil.pt.*unpickling"):
        ck.load_checkpoint(evil)
    plain = tmp_path / "plain.pt"
    torch.save({"model": {"w": torch.ones(2)}}, plain)
    with pytest.raises(ck.CheckpointError, match="not an ssmrepro checkpoint"):
        ck.load_checkpoint(plain)


def test_failed_write_leaves_previous_intact(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    ck.save_checkpoint(path, _state(step=1))
    before = path.read_bytes()

    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ck.os, "fsync", no_space)
    with pytest.raises(ck.CheckpointWriteError, match="No space left on device"):
        ck.save_checkpoint(path, _state(step=2))
    monkeypatch.undo()

    # a write that stops half way (disk full while writing)
    real_save = torch.save

    def half_then_enospc(obj, f, *a, **kw):
        if isinstance(f, io.BytesIO):
            return real_save(obj, f, *a, **kw)
        f.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(torch, "save", half_then_enospc)
    with pytest.raises(ck.CheckpointWriteError, match="intact"):
        ck.save_checkpoint(path, _state(step=3))
    monkeypatch.undo()

    assert path.read_bytes() == before
    assert ck.load_checkpoint(path)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


def test_failed_write_during_training_stops_and_keeps_last(tmp_path, monkeypatch):
    real_fsync = os.fsync
    last = tmp_path / "checkpoints" / "last.pt"

    def fsync_fails_on_second_checkpoint(fd):
        target = os.readlink(f"/proc/self/fd/{fd}")
        if ".last.pt." in target and last.exists():  # the temporary of the second last.pt
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(ck.os, "fsync", fsync_fails_on_second_checkpoint)
    with pytest.raises(ck.CheckpointWriteError, match="last.pt"):
        train(toy.TOY_CARDS["deblurring"], lambda: toy.build_toy("deblurring"), toy.toy_dataset("deblurring"),
              tmp_path, "smoke", 0, steps=12, checkpoint_every=4, progress=False)
    monkeypatch.undo()
    assert ck.load_checkpoint(tmp_path / "checkpoints" / "last.pt")["step"] == 4


# ----------------------------------------------------------------------------------------------
# real interruptions of a training subprocess

STEPS, EVERY = 16, 4


def _cmd(run_dir, delay):
    return [sys.executable, "-m", "ssmrepro.train.loop", "--toy", "deblurring", "--run-dir", str(run_dir),
            "--steps", str(STEPS), "--checkpoint-every", str(EVERY), "--no-progress",
            "--step-delay", str(delay)]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}


def _logged_steps(run_dir: Path) -> int:
    log = run_dir / "log.jsonl"
    if not log.exists():
        return 0
    lines = [ln for ln in log.read_text().splitlines() if ln.endswith("}")]
    return json.loads(lines[-1])["step"] if lines else 0


def _start_and_signal(run_dir: Path, sig: int, at_step: int) -> tuple[int, str]:
    proc = subprocess.Popen(_cmd(run_dir, 0.08), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    deadline = time.monotonic() + 60
    while _logged_steps(run_dir) < at_step and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"training ended before step {at_step}: {proc.communicate()}"
    os.kill(proc.pid, sig)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, err


def _reference(tmp_path) -> Path:
    ref = tmp_path / "reference"
    train(toy.TOY_CARDS["deblurring"], lambda: toy.build_toy("deblurring"), toy.toy_dataset("deblurring"),
          ref, "smoke", 0, steps=STEPS, checkpoint_every=EVERY, progress=False)
    return ref


def _losses(run_dir: Path) -> list[tuple]:
    rows = [json.loads(x) for x in (run_dir / "log.jsonl").read_text().splitlines()]
    return [(r["step"], r["loss"], r["l1"], r["fft"], r["lr"]) for r in rows]


def _assert_same_run(a: Path, b: Path) -> None:
    wa = ck.load_model_weights(a / "final.pt")
    wb = ck.load_model_weights(b / "final.pt")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    assert _losses(a) == _losses(b)
    assert (a / "config_hash").read_text() == (b / "config_hash").read_text()


def test_sigkill_after_a_checkpoint_then_resume_is_bit_exact(tmp_path):
    rng = random.Random()
    kill_at = rng.randint(EVERY + 1, STEPS - 2)  # a random step after the first checkpoint
    run = tmp_path / "killed"
    rc, err = _start_and_signal(run, signal.SIGKILL, kill_at)
    assert rc == -signal.SIGKILL, err
    saved = ck.load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert EVERY <= saved < STEPS and not (run / "final.pt").exists()
    done = subprocess.run(_cmd(run, 0), env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    _assert_same_run(_reference(tmp_path), run)


def test_sigterm_saves_exits_75_then_resume_is_bit_exact(tmp_path):
    run = tmp_path / "terminated"
    rc, err = _start_and_signal(run, signal.SIGTERM, 6)  # between checkpoints 4 and 8
    assert rc == EXIT_PREEMPTED, err
    assert "preempted by SIGTERM" in err
    saved = ck.load_checkpoint(run / "checkpoints" / "last.pt")["step"]
    assert 6 <= saved < STEPS  # saved at the step boundary after the signal, not at a multiple of 4
    assert _logged_steps(run) == saved
    done = subprocess.run(_cmd(run, 0), env=_env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    _assert_same_run(_reference(tmp_path), run)
