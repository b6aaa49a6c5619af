"""DDP on CPU: two processes (gloo) launched as torchrun would (RANK/WORLD_SIZE/LOCAL_RANK), plus
the environment detection for torchrun and srun."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from ssmrepro.train import checkpoint as ck
from ssmrepro.train import distributed as D
from ssmrepro.train import toy
from ssmrepro.train.loop import train

STEPS = 4


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, run_dir: str, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    r = train(toy.TOY_CARDS["deblurring"], lambda: toy.build_toy("deblurring"), toy.toy_dataset("deblurring"),
              run_dir, "smoke", 0, steps=STEPS, checkpoint_every=2, progress=False)
    Path(out, f"rank{rank}.json").write_text(json.dumps({"status": r.status, "step": r.step,
                                                         "loss": r.last_values["loss"]}))


def test_ddp_two_cpu_processes_gloo_rank0_writes(tmp_path):
    run, out = tmp_path / "ddp", tmp_path / "out"
    out.mkdir()
    # fork: the children need not import torch again (spawn costs ~10 s more on a busy machine);
    # each child runs single-threaded, so no OpenMP pool is inherited across the fork.
    mp.start_processes(_worker, args=(2, _free_port(), str(run), str(out)), nprocs=2, join=True,
                       start_method="fork")
    results = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["status"] == "complete" and r["step"] == STEPS for r in results)
    assert results[0]["loss"] != results[1]["loss"]  # each rank saw its own shard
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints", "config.yaml", "config_hash", "dvclive",
                                                      "final.pt", "log.jsonl"]
    assert [json.loads(x)["step"] for x in (run / "log.jsonl").read_text().splitlines()] == list(range(1, STEPS + 1))
    state = ck.load_checkpoint(run / "checkpoints" / "last.pt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2  # every rank's RNG state is kept

    # the same global batch in one process: same samples and augmentations, same update up to rounding
    single = tmp_path / "single"
    train(toy.TOY_CARDS["deblurring"], lambda: toy.build_toy("deblurring"), toy.toy_dataset("deblurring"),
          single, "smoke", 0, steps=STEPS, checkpoint_every=2, progress=False)
    a, b = ck.load_model_weights(run / "final.pt"), ck.load_model_weights(single / "final.pt")
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-6)


def test_launcher_detection():
    assert D.detect({}) == D.DistEnv()
    tr = D.detect({"RANK": "3", "WORLD_SIZE": "8", "LOCAL_RANK": "1"})
    assert (tr.rank, tr.world_size, tr.local_rank, tr.launcher) == (3, 8, 1, "torchrun")
    srun = D.detect({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_STEP_ID": "0"})
    assert (srun.rank, srun.world_size, srun.local_rank, srun.launcher) == (5, 8, 1, "srun")
    # a batch script that runs python itself (no srun step) is one process whatever --ntasks says
    assert not D.detect({"SLURM_PROCID": "0", "SLURM_NTASKS": "8"}).enabled


@pytest.mark.parametrize("nodes,first", [("gpu[03-05,09]", "gpu03"), ("node7", "node7"), ("a1,b2", "a1")])
def test_master_address_from_slurm_nodelist(nodes, first, monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # no scontrol: the fallback parser
    assert D._first_slurm_host(nodes) == first
