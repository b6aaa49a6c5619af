"""The reproduction DAG: Snakemake lint and dry runs, config validation, dvc.yaml in sync, and the
real thing (smoke `reproduce_all` locally and through a real SLURM; `dvc repro` twice)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from watch import run_group, run_watched, slurm_report
from ssmrepro.workflow import Matrix, dvc_stages, parse_data_dir, parse_result_stem

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
FAMILIES = ("sem_net", "evssm", "restormer", "nafnet", "fftformer")
# The two longest tests run side by side with the rest of the suite on the 2-core machine:
# 841 s (smoke DAG, 119 jobs) and 766 s (the same through SLURM, 2 steps each). Limits: about 2x.
SMOKE_LIMIT_S = 1800
SLURM_DAG_LIMIT_S = 1800


def _env(extra: dict | None = None) -> dict:
    return {**os.environ, "PATH": f"{BIN}:{os.environ['PATH']}", "OMP_NUM_THREADS": "1", **(extra or {})}


def run(cmd, cwd, timeout=500, env=None, check=True):
    env = _env(env)
    p = run_group(cmd, cwd, env, timeout, shell=isinstance(cmd, str))
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} failed ({p.returncode}):\n{p.stdout[-4000:]}\n{p.stderr[-4000:]}")
    return p


def fresh_clone(tmp_path: Path) -> Path:
    """A clone of the working tree as it is (committed or not), like a fresh checkout."""
    dest = tmp_path / "clone"
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                           cwd=REPO, capture_output=True, check=True).stdout.split(b"\0")
    for f in filter(None, files):
        src = REPO / f.decode()
        if src.is_file() or src.is_symlink():
            (dest / f.decode()).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f.decode(), follow_symlinks=False)
    run(["git", "init", "-q"], dest)
    run("git add -A && git -c user.email=t@t -c user.name=t commit -qm clone", dest)
    return dest


def test_parse_helpers():
    assert parse_data_dir("embedded_inpainting-64") == ("embedded_inpainting", 64)
    assert parse_data_dir("gopro") == ("gopro", None)
    assert parse_result_stem("gopro+self_ensemble") == ("gopro", {"self_ensemble": True})
    assert parse_result_stem("40-60") == ("40-60", {})


def test_matrix_shares_runs_between_tables():
    m = Matrix(REPO, "smoke", [0])
    runs = m.runs()
    assert len(runs) == len(set(runs))
    # SEM-Net T2 (g), T4 (e) and T5 "w/o 1x1" are one card: one training run serves all three.
    half = [r for r in runs if "/semnet-half/" in r]
    assert half == ["runs/smoke/embedded_inpainting/semnet-half/seed0/final.pt"]
    for t in ("semnet_t2", "semnet_t4", "semnet_t5"):
        assert any("/semnet-half/" in r for r in m.table_results(t))


def test_every_table_card_exists():
    from ssmrepro.cards import all_cards

    cards = all_cards(REPO)
    m = Matrix(REPO, "smoke", [0])
    needed = {c for t in m.tables for c in t.cards()} | {c for f in m.erf_figures() for c in f.cards()}
    assert needed - set(cards) == set()


def test_dvc_yaml_is_up_to_date():
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    assert yaml.safe_load((REPO / "dvc.yaml").read_text()) == dvc_stages(REPO, params)


def test_snakemake_lint_is_clean():
    p = run(["snakemake", "--lint"], REPO, timeout=300, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Lints for" not in p.stdout, p.stdout


def test_invalid_config_names_the_key():
    p = run(["snakemake", "-n", "reproduce_all", "--config", "scale=huge"], REPO, timeout=300,
            check=False)
    assert p.returncode != 0
    out = p.stdout + p.stderr
    assert "scale" in out and "smoke" in out


def test_paper_scale_dry_run_builds_the_dag():
    p = run(["snakemake", "-n", "--cores", "1", "reproduce_all", "--config", "scale=paper"], REPO,
            timeout=300)
    assert "train" in p.stdout and "evaluate" in p.stdout


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(SMOKE_LIMIT_S + 300)
def test_smoke_reproduce_all_from_a_fresh_clone(tmp_path):
    clone = fresh_clone(tmp_path)
    t0 = time.time()
    run(["snakemake", "--cores", "2", "reproduce_all"], clone, timeout=SMOKE_LIMIT_S)
    elapsed = time.time() - t0
    index = clone / "reports" / "index.html"
    assert index.exists()
    m = Matrix(clone, "smoke", [0])
    for r in m.all_results():
        assert (clone / r).exists(), r
    # A rerun has nothing to do.
    p = run(["snakemake", "--cores", "2", "-n", "reproduce_all"], clone)
    assert "Nothing to be done" in p.stdout + p.stderr
    print(f"smoke reproduce_all: {elapsed:.0f} s")


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.xdist_group("slurm")  # one local SLURM: its users share a worker
@pytest.mark.timeout(SLURM_DAG_LIMIT_S + 300)
def test_same_dag_through_real_slurm(tmp_path, local_slurm):
    clone = fresh_clone(tmp_path)
    # The same DAG (every table, every run), with fewer steps and test images to keep CI short.
    small = clone / "small.yaml"
    small.write_text(yaml.safe_dump({"eval_limit": 2, "steps": {f: 2 for f in FAMILIES}}))
    # --jobs 6: SLURM runs two at a time (one CPU each) and starts a queued job the moment one
    # ends, so Snakemake's status polling (every 5 s and more) does not leave the node idle.
    # Watched: a node that drains (or any state in which no job starts) fails the test at once,
    # with sinfo, squeue and the daemons' logs, instead of leaving Snakemake waiting.
    rc, out = run_watched(
        ["snakemake", "--profile", "slurm", "--jobs", "6", "reproduce_all",
         "--configfile", str(small), "--default-resources", "slurm_partition=gpu", "mem_mb=2000", "cpus_per_task=1",
         "--set-resources", "train:gres=''", "evaluate:gres=''", "erf:gres=''",
         "train:mem_mb=2000", "train:cpus_per_task=1", "train:slurm_extra=''"],
        clone, _env(), timeout=SLURM_DAG_LIMIT_S, log=tmp_path / "snakemake.log")
    assert rc == 0, out[-6000:] + "\n" + slurm_report()
    assert (clone / "reports" / "index.html").exists()
    assert "slurm" in out.lower()


@pytest.mark.integration
def test_dvc_repro_twice_is_a_noop_and_a_param_reruns_only_its_stages(tmp_path):
    clone = fresh_clone(tmp_path)
    params = yaml.safe_load((clone / "params.yaml").read_text())
    # Two small tables keep this short: restrict the pipeline to one table per paper.
    run(["dvc", "init", "-q"], clone)
    run(["dvc", "repro", "-q", "evssm_t10", "semnet_t5"], clone, timeout=400)
    p = run(["dvc", "repro", "evssm_t10", "semnet_t5"], clone, timeout=300)
    assert "didn't change, skipping" in p.stdout and "Running stage" not in p.stdout, p.stdout
    params["steps"]["evssm"] = 3
    (clone / "params.yaml").write_text(yaml.safe_dump(params))
    p = run(["dvc", "repro", "evssm_t10", "semnet_t5"], clone, timeout=300)
    assert "Running stage 'evssm_t10'" in p.stdout, p.stdout
    assert "Running stage 'semnet_t5'" not in p.stdout, p.stdout


@pytest.mark.integration
def test_failed_job_leaves_nothing_and_rerun_redoes_only_it(tmp_path):
    clone = fresh_clone(tmp_path)
    (clone / "small.yaml").write_text(yaml.safe_dump({"eval_limit": 2, "steps": {"evssm": 2}}))
    small = ["--configfile", "small.yaml"]
    # Sabotage one training run: a corrupted checkpoint in its folder, which `ssmrepro train`
    # refuses (it never trains over a checkpoint it cannot verify).
    bad = clone / "runs/smoke/embedded_deblur/evssm-l1loss/seed0/checkpoints/last.pt"
    bad.parent.mkdir(parents=True)
    bad.write_bytes(b"not a checkpoint")
    p = run(["snakemake", "--cores", "2", "--keep-going", "reproduce_evssm_t10", *small], clone,
            check=False)
    assert p.returncode != 0
    good = clone / "results/smoke/embedded_deblur/evssm/seed0/embedded_deblur.json"
    assert good.exists() and json_ok(good)
    assert not (clone / "results/smoke/embedded_deblur/evssm-l1loss").exists()
    assert not (clone / "runs/smoke/embedded_deblur/evssm-l1loss/seed0/final.pt").exists()
    leftovers = [f for f in (clone / "runs").rglob("*") if f.name.endswith(".tmp")]
    assert leftovers == []
    before = good.stat().st_mtime_ns
    bad.unlink()
    p = run(["snakemake", "--cores", "2", "reproduce_evssm_t10", *small], clone)
    ran = p.stdout + p.stderr
    assert "evssm-l1loss" in ran
    assert "runs/smoke/embedded_deblur/evssm/seed0/final.pt" not in ran.split("Job stats")[-1]
    assert good.stat().st_mtime_ns == before  # the finished job was not redone


def json_ok(path: Path) -> bool:
    import json

    return json.loads(path.read_text())["status"] == "ok"
