"""Training recipes and the training loop, on tiny models and synthetic in-memory datasets
(``ssmrepro.train.toy``), plus one check on the real model families when they are importable."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch
import yaml

from ssmrepro.train import checkpoint as ck
from ssmrepro.train import recipes as R
from ssmrepro.train import toy
from ssmrepro.train.loop import (
    EXIT_PREEMPTED,
    EXIT_USER_ERROR,
    NonFiniteLoss,
    RunConfigMismatch,
    exit_code,
    train,
)


def _run(task, run_dir, steps, **kw):
    kw.setdefault("progress", False)
    return train(toy.TOY_CARDS[task], kw.pop("builder", lambda: toy.build_toy(task)), toy.toy_dataset(task),
                 run_dir, kw.pop("scale", "smoke"), kw.pop("seed", 0), steps=steps,
                 discriminator_builder=toy.TinyDiscriminator, **kw)


def _log(run_dir: Path) -> list[dict]:
    return [json.loads(x) for x in (Path(run_dir) / "log.jsonl").read_text().splitlines()]


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = ck.load_model_weights(a / "final.pt"), ck.load_model_weights(b / "final.pt")
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k


# ----------------------------------------------------------------------------------------------
# recipes


def test_paper_recipes_match_the_papers_and_reference_code():
    sem = R.resolve_recipe("semnet_inpainting", "paper")
    assert (sem["optimizer"], sem["lr"], sem["betas"], sem["d_lr"]) == ("adam", 1e-4, [0.9, 0.999], 1e-5)
    assert (sem["l1_weight"], sem["style_weight"], sem["perceptual_weight"], sem["adv_weight"]) == (1, 250, 0.1, 0.001)
    assert (sem["batch_size"], sem["patch"], sem["iterations"]) == (6, 256, 30000)
    assert (sem["vgg"], sem["perceptual_layers"], sem["l1_norm"], sem["adv_loss"]) == (
        "vgg16_pool", ["pool1", "pool2", "pool3"], "mean", "nsgan")
    assert sem["perceptual_backbone"].startswith("pretrained vgg16")

    code = R.resolve_recipe("semnet_inpainting", "paper", {"variant": "code"})
    assert (code["vgg"], code["adv_weight"], code["adv_loss"], code["l1_norm"], code["style_region"]) == (
        "vgg19_relu", 0.01, "lsgan", "mask_mean", "hole")
    assert code["perceptual_layers"] == ["relu1_1", "relu2_1", "relu3_1", "relu4_1", "relu5_1"]

    deb = R.resolve_recipe("deblur_l1_fft", "paper")
    assert (deb["optimizer"], deb["lr"], deb["weight_decay"], deb["betas"]) == ("adamw", 1e-3, 1e-3, [0.9, 0.9])
    assert (deb["scheduler"], deb["eta_min"], deb["iterations"], deb["batch_size"], deb["patch"]) == (
        "cosine", 1e-7, 300000, 64, 128)
    assert (deb["grad_clip"], deb["fft_weight"], deb["fft"]) == (0.01, 0.1, "fft2")

    smoke = R.resolve_recipe("semnet_inpainting", "smoke")
    assert smoke["batch_size"] == 2 and smoke["patch"] <= 64 and smoke["iterations"] <= 100
    assert smoke["perceptual_backbone"] == "random-init (smoke)"
    assert "| semnet_inpainting | paper | 30000 | 6 | 256 |" in R.describe_recipes()


def test_overrides_card_then_cli_with_coercion_and_clear_errors():
    card = {"name": "c", "family": "evssm", "task": "deblurring",
            "train": {"recipe": "deblur_l1_fft", "fft_weight": 0, "eta_min": 1e-6,
                      "scales": {"smoke": {"iterations": 10, "patch": 64}}}}
    r = R.recipe_for_card(card, "smoke", {"eta_min": "1e-5", "batch_size": "4"})
    assert r["fft_weight"] == 0.0 and r["eta_min"] == 1e-5 and r["batch_size"] == 4
    assert (r["iterations"], r["patch"]) == (10, 64)
    assert R.recipe_for_card(card, "smoke", {"eta_min": "1e-5"}, steps=7)["iterations"] == 7
    assert R.recipe_for_card(card, "paper")["iterations"] == 300000
    sem = R.resolve_recipe("semnet_inpainting", "mini", {"variant": "code", "adv_weight": 0.001, "lr": 2e-4})
    assert sem["adv_weight"] == 0.001 and sem["vgg"] == "vgg19_relu" and sem["d_lr"] == pytest.approx(2e-5)
    with pytest.raises(R.RecipeError, match="no option 'fft_wieght'.*known:"):
        R.resolve_recipe("deblur_l1_fft", "smoke", {"fft_wieght": 0})
    with pytest.raises(R.RecipeError, match="'vgg' must be one of vgg16_pool, vgg19_relu"):
        R.resolve_recipe("semnet_inpainting", "smoke", {"vgg": "vgg11"})
    with pytest.raises(R.RecipeError, match="unknown recipe 'nope'; known: deblur_l1_fft, semnet_inpainting"):
        R.resolve_recipe("nope", "smoke")
    with pytest.raises(R.RecipeError, match="vgg16 has no layer relu5_4"):
        R.resolve_recipe("semnet_inpainting", "smoke", {"style_layers": ["relu5_4"]})


def test_config_yaml_and_hash(tmp_path):
    _run("deblurring", tmp_path, 2)
    config = yaml.safe_load((tmp_path / "config.yaml").read_text())
    assert (tmp_path / "config_hash").read_text().strip() == R.config_hash(config)
    assert len(R.config_hash(config)) == 16
    assert config["card"] == "toy_deblur" and config["seed"] == 0 and config["scale"] == "smoke"
    assert config["switches"] == {"width": 8} and config["recipe"]["iterations"] == 2


# ----------------------------------------------------------------------------------------------
# the loop


def test_loss_decreases_over_50_steps(tmp_path):
    result = _run("deblurring", tmp_path, 50, checkpoint_every=25)
    assert result.status == "complete" and result.step == 50
    rows = _log(tmp_path)
    assert [r["step"] for r in rows] == list(range(1, 51))
    first, last = sum(r["loss"] for r in rows[:10]) / 10, sum(r["loss"] for r in rows[-10:]) / 10
    assert last < 0.8 * first, (first, last)
    # the cosine schedule reaches eta_min, the curves are in dvclive as well
    assert rows[0]["lr"] == 1e-3 and rows[-1]["lr"] < 1e-5
    tsv = (tmp_path / "dvclive" / "plots" / "metrics" / "loss.tsv").read_text().splitlines()
    assert len(tsv) == 51


def test_curves_never_touch_dvc_or_git(tmp_path, monkeypatch):
    """Plain dvclive.Live() runs `dvc init` in the enclosing git repository; ours must not."""
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    monkeypatch.chdir(repo)
    _run("deblurring", repo / "runs" / "r", 2)
    assert not (repo / ".dvc").exists() and not (repo / ".dvcignore").exists()
    status = subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout
    assert "A " not in status  # nothing staged


def test_inpainting_signal_resume_is_bit_exact(tmp_path):
    """SIGUSR1 (SLURM's early warning) mid-run, then the same call resumes; D, both Adams, the
    random-init VGG and the python/numpy/torch mask draws all continue exactly."""
    ref = tmp_path / "reference"
    _run("inpainting", ref, 6, checkpoint_every=4)

    run = tmp_path / "interrupted"

    def send(step, values):
        if step == 2:
            os.kill(os.getpid(), signal.SIGUSR1)

    before = signal.getsignal(signal.SIGUSR1)
    first = _run("inpainting", run, 6, checkpoint_every=4, callbacks=[send])
    assert (first.status, first.step, first.signal, first.exit_code) == ("preempted", 2, "SIGUSR1", EXIT_PREEMPTED)
    assert signal.getsignal(signal.SIGUSR1) == before  # handlers restored
    second = _run("inpainting", run, 6, checkpoint_every=4)
    assert (second.status, second.resumed_from) == ("complete", 2)
    _assert_same_weights(ref, run)
    keys = ("loss_g", "loss_d", "l1", "perceptual", "style", "adv_g")
    assert [[r[k] for k in keys] for r in _log(ref)] == [[r[k] for k in keys] for r in _log(run)]
    full = ck.load_checkpoint(run / "checkpoints" / "last.pt")
    assert {"discriminator", "d_optimizer", "rng", "data", "optimizer"} <= set(full)
    assert _run("inpainting", run, 6).status == "already complete"


def test_nan_loss_stops_with_the_step_and_last_good_checkpoint(tmp_path):
    model = toy.build_toy("deblurring")

    def poison(step, values):
        if step == 6:
            with torch.no_grad():
                model.body[0].weight.fill_(float("nan"))

    with pytest.raises(NonFiniteLoss, match=r"at step 7 .*last good checkpoint: .*last\.pt \(step 5\)") as e:
        _run("deblurring", tmp_path, 12, checkpoint_every=5, builder=lambda: model, callbacks=[poison])
    assert "\n" not in str(e.value)
    good = ck.load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert good["step"] == 5 and all(torch.isfinite(v).all() for v in good["model"].values())
    assert not (tmp_path / "final.pt").exists()


def test_missing_vgg_weights_at_mini_scale_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty_torch_home"))
    monkeypatch.delenv("SSMREPRO_ALLOW_DOWNLOAD", raising=False)
    run = tmp_path / "run"
    code = exit_code(lambda: _run("inpainting", run, 2, scale="mini"))
    err = capsys.readouterr().err.strip()
    assert code == EXIT_USER_ERROR
    assert len(err.splitlines()) == 1 and "vgg16-397923af.pth" in err, err
    assert not (run / "config.yaml").exists()  # nothing trained, nothing written


def test_changed_config_is_refused_and_finished_run_returns(tmp_path):
    assert _run("deblurring", tmp_path, 3).status == "complete"
    before = (tmp_path / "final.pt").read_bytes()
    assert _run("deblurring", tmp_path, 3).status == "already complete"
    assert (tmp_path / "final.pt").read_bytes() == before
    with pytest.raises(RunConfigMismatch, match=r"recipe\.lr: 0\.001 -> 0\.002"):
        _run("deblurring", tmp_path, 3, overrides={"lr": 2e-3})


def test_bf16_autocast_micro_batches_and_deterministic(tmp_path):
    r = _run("deblurring", tmp_path / "bf16", 3, amp="bf16", deterministic=True)
    assert r.status == "complete" and math.isfinite(r.last_values["loss"])
    assert not torch.are_deterministic_algorithms_enabled()  # restored afterwards
    config = yaml.safe_load((tmp_path / "bf16" / "config.yaml").read_text())
    assert config["recipe"]["amp"] == "bf16" and config["deterministic"] is True
    one = _run("deblurring", tmp_path / "mb1", 3)
    two = _run("deblurring", tmp_path / "mb2", 3, overrides={"micro_batches": 2})
    for a, b in zip(_log(tmp_path / "mb1"), _log(tmp_path / "mb2")):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert one.status == two.status == "complete"


def _real(family):
    pytest.importorskip(f"ssmrepro.nn.{family}")
    from ssmrepro.registry import MODELS

    return MODELS.get(family)


@pytest.mark.slow
def test_real_evssm_trains_and_resumes_bit_exactly(tmp_path):
    """The registered EVSSM (switched to its training layout) through the loop, with a resume."""
    build_evssm = _real("evssm")
    card = {"name": "evssm_tiny", "family": "evssm", "task": "deblurring",
            "switches": {"dim": 8, "num_blocks": [1, 1, 2]}, "train": {"recipe": "deblur_l1_fft"}}
    build = lambda: build_evssm(**card["switches"])  # noqa: E731
    common = dict(progress=False, checkpoint_every=2)
    train(card, build, toy.toy_dataset("deblurring"), tmp_path / "ref", "smoke", 0, steps=2, **common)

    def stop(step, values):
        if step == 1:
            os.kill(os.getpid(), signal.SIGTERM)

    run = tmp_path / "run"
    assert train(card, build, toy.toy_dataset("deblurring"), run, "smoke", 0, steps=2, callbacks=[stop],
                 **common).status == "preempted"
    assert train(card, build, toy.toy_dataset("deblurring"), run, "smoke", 0, steps=2, **common).status == "complete"
    _assert_same_weights(tmp_path / "ref", run)


@pytest.mark.slow
def test_real_sem_net_and_patchgan_take_a_step(tmp_path):
    """The registered SEM-Net with the default discriminator (ssmrepro.nn.discriminator)."""
    build_sem = _real("sem_net")
    pytest.importorskip("ssmrepro.nn.discriminator")
    card = {"name": "sem_tiny", "family": "sem_net", "task": "inpainting",
            "switches": {"dim": 8, "num_blocks": [1, 1, 1, 1], "heads": [1, 1, 1, 1]},
            "train": {"recipe": "semnet_inpainting"}}
    r = train(card, lambda: build_sem(**card["switches"]), toy.toy_dataset("inpainting"), tmp_path, "smoke", 0,
              steps=1, progress=False)
    assert r.status == "complete" and math.isfinite(r.last_values["loss_g"])
    assert "conv5.0.weight_orig" in ck.load_checkpoint(tmp_path / "checkpoints" / "last.pt")["discriminator"]


def test_embedded_data_resume_is_bit_exact_whatever_the_workers(tmp_path):
    """ssmrepro.data's embedded sets through the loop: crossing epochs (set_epoch), interrupted with
    2 loader workers, resumed with 1, equal to an uninterrupted run without workers."""
    pytest.importorskip("ssmrepro.data.loaders")
    from ssmrepro.data.embedded import ensure_embedded
    from ssmrepro.data.loaders import train_dataset

    root = tmp_path / "data"
    ensure_embedded("embedded_deblur", root=root, size=48, count=8, test_count=2)
    data = lambda patch, seed: train_dataset("embedded_deblur", "deblurring", patch, root=root, seed=seed)  # noqa: E731
    kw = dict(steps=6, checkpoint_every=4, progress=False, dataset_name="embedded_deblur")
    card, build = toy.TOY_CARDS["deblurring"], lambda: toy.build_toy("deblurring")
    train(card, build, data, tmp_path / "ref", "smoke", 3, num_workers=0, **kw)

    def stop(step, values):
        if step == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    run = tmp_path / "run"
    assert train(card, build, data, run, "smoke", 3, num_workers=2, callbacks=[stop], **kw).status == "preempted"
    assert train(card, build, data, run, "smoke", 3, num_workers=1, **kw).status == "complete"
    _assert_same_weights(tmp_path / "ref", run)
    assert [r["loss"] for r in _log(tmp_path / "ref")] == [r["loss"] for r in _log(run)]
    assert [r["epoch"] for r in _log(run)] == [0, 0, 0, 0, 1, 1]
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["dataset"] == "embedded_deblur" and len(config["data_version"]) == 16


class _Stream(torch.utils.data.IterableDataset):
    """An iterable dataset that draws its order and crops from the global generators."""

    def __init__(self):
        self.base = toy.toy_dataset("deblurring", n=8)(32, 0)

    def __iter__(self):
        for i in torch.randperm(len(self.base)).tolist():
            yield self.base[i]


def test_iterable_dataset_resume_is_bit_exact(tmp_path):
    card, build = toy.TOY_CARDS["deblurring"], lambda: toy.build_toy("deblurring")
    kw = dict(steps=7, checkpoint_every=3, progress=False)
    train(card, build, _Stream(), tmp_path / "ref", "smoke", 0, **kw)

    def stop(step, values):
        if step == 5:
            os.kill(os.getpid(), signal.SIGTERM)

    run = tmp_path / "run"
    assert train(card, build, _Stream(), run, "smoke", 0, callbacks=[stop], **kw).step == 5
    assert train(card, build, _Stream(), run, "smoke", 0, **kw).status == "complete"
    _assert_same_weights(tmp_path / "ref", run)


def test_requeue_runs_scontrol_after_saving(tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    fake = bin_dir / "scontrol"
    fake.write_text(f"#!/bin/sh\necho \"$@\" >> {calls}\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_JOB_ID", "4242")

    def stop(step, values):
        if step == 2:
            os.kill(os.getpid(), signal.SIGTERM)

    r = _run("deblurring", tmp_path / "run", 5, requeue=True, callbacks=[stop])
    assert (r.status, r.step) == ("preempted", 2)
    assert ck.load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["step"] == 2
    assert calls.read_text().split() == ["requeue", "4242"]


@pytest.mark.parametrize("arch", ["vgg16", "vgg19"])
def test_vgg_features_match_torchvision_layout(arch):
    """Pretrained torchvision state dicts load into the loss network as they are (same indices)."""
    from ssmrepro.compat.torchvision_shim import import_torchvision
    from ssmrepro.train.losses import VGG_ARCH_LAYERS, vgg_features

    tv = import_torchvision()
    with torch.device("meta"):
        ref = getattr(tv.models, arch)(weights=None).features
    ours = vgg_features(arch)
    assert {k: v.shape for k, v in ours.state_dict().items()} == {k: v.shape for k, v in ref.state_dict().items()}
    kinds = {"conv": torch.nn.Conv2d, "relu": torch.nn.ReLU, "pool": torch.nn.MaxPool2d}
    for name, layer in zip(VGG_ARCH_LAYERS[arch], ref):
        assert isinstance(layer, kinds[name[:4].rstrip("0123456789_")]), (name, layer)


@pytest.mark.slow
def test_real_evssm_card_on_embedded_data(tmp_path):
    """The shipped ``models/evssm.yaml`` at smoke scale on the embedded deblurring set."""
    cards = pytest.importorskip("ssmrepro.cards")
    pytest.importorskip("ssmrepro.data.loaders")
    from ssmrepro.data.embedded import ensure_embedded
    from ssmrepro.data.loaders import train_dataset

    try:
        card = cards.load_card("evssm")
    except (KeyError, FileNotFoundError):
        pytest.skip("no evssm card")
    root = tmp_path / "data"
    ensure_embedded("embedded_deblur", root=root, size=48, count=4, test_count=1)
    card_map = {k: v for k, v in card.__dict__.items() if k != "path"}
    r = train(card_map, lambda: card.build("smoke"),
              lambda patch, seed: train_dataset("embedded_deblur", card.task, patch, root=root, seed=seed),
              tmp_path / "run", "smoke", 0, steps=2, progress=False)
    assert r.status == "complete" and math.isfinite(r.last_values["loss"])
    config = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert config["card"] == "evssm" and config["switches"] == card.switches_at("smoke")
    assert config["recipe"]["recipe"] == "deblur_l1_fft" and config["recipe"]["patch"] == 32
