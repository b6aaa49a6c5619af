"""Pretrained weight inventory: status, one-line errors, loading from files, never downloading."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
import torch

from ssmrepro import pretrained
from ssmrepro.pretrained import MissingPretrainedWeights


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty TORCH_HOME; any download attempt fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.delenv(pretrained.ALLOW_DOWNLOAD_ENV, raising=False)

    def no_network(*args, **kwargs):
        raise AssertionError(f"tried to download: {args}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    ckpt = tmp_path / "th" / "hub" / "checkpoints"
    return ckpt


def tiny_state_dict(model_fn) -> dict:
    """A state dict of the right keys and shapes whose tensors take one float each on disk."""
    with torch.device("meta"):
        model = model_fn(weights=None)
    return {k: torch.full((1,), float(i)).expand(v.shape)
            for i, (k, v) in enumerate(model.state_dict().items())}


def test_inventory_entries():
    files = {w.file for w in pretrained.INVENTORY.values()}
    assert {"vgg16-397923af.pth", "vgg19-dcbb9e9d.pth", "alexnet-owt-7be5be79.pth",
            "pt_inception-2015-12-05-6726825d.pth", "vgg.pth", "alex.pth"} == files
    for w in pretrained.INVENTORY.values():
        assert w.url.endswith("/" + w.file) and w.used_by
        if w.location == "torch_hub":  # torch hub convention: the hash prefix is in the name
            assert re.search(r"-([a-f0-9]+)\.", w.file).group(1) == w.sha256_prefix


def test_lpips_linear_layers_ship_in_the_wheel_with_the_listed_hash():
    for key in ("lpips_vgg", "lpips_alex"):
        path = pretrained.require(key)
        assert path.parent.name == "v0.1" and path.parent.parent.name == "weights"
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        assert digest.startswith(pretrained.INVENTORY[key].sha256_prefix)


def test_status_follows_the_torch_home_folder(torch_home):
    status = {s["key"]: s for s in pretrained.weights_status()}
    assert set(status) == set(pretrained.INVENTORY)
    vgg = status["vgg16"]
    assert vgg["present"] is False and vgg["file"] == "vgg16-397923af.pth"
    assert vgg["path"] == str(torch_home / "vgg16-397923af.pth")
    assert vgg["url"] == "https://download.pytorch.org/models/vgg16-397923af.pth"
    assert status["lpips_vgg"]["present"] is True
    torch_home.mkdir(parents=True)
    (torch_home / "vgg16-397923af.pth").write_bytes(b"x")
    vgg = {s["key"]: s for s in pretrained.weights_status()}["vgg16"]
    assert vgg["present"] is True and vgg["size_bytes"] == 1


def test_require_missing_is_one_line_naming_file_folder_and_url(torch_home):
    with pytest.raises(MissingPretrainedWeights) as exc:
        pretrained.require("vgg16-397923af.pth")
    assert str(exc.value) == (
        f"missing pretrained weights vgg16-397923af.pth: put it in {torch_home}/ "
        "(download from https://download.pytorch.org/models/vgg16-397923af.pth)")
    assert isinstance(exc.value, RuntimeError)
    with pytest.raises(MissingPretrainedWeights, match="pt_inception-2015-12-05-6726825d.pth"):
        pretrained.require("inception_fid")
    with pytest.raises(KeyError, match="known: alexnet"):
        pretrained.require("resnet50")


def test_default_folder_is_the_torch_cache(monkeypatch):
    monkeypatch.delenv("TORCH_HOME", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert pretrained.torch_checkpoint_dir() == (
        Path.home() / ".cache" / "torch" / "hub" / "checkpoints")


def test_download_only_when_allowed(torch_home, monkeypatch):
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, dst, hash_prefix))
        Path(dst).write_bytes(b"weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    with pytest.raises(MissingPretrainedWeights):
        pretrained.require("alexnet")
    assert calls == []
    monkeypatch.setenv("SSMREPRO_ALLOW_DOWNLOAD", "1")
    path = pretrained.require("alexnet")
    assert path == torch_home / "alexnet-owt-7be5be79.pth" and path.read_bytes() == b"weights"
    assert calls == [("https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", str(path),
                      "7be5be79")]

    def failing(url, dst, hash_prefix=None, progress=True):
        raise OSError("Name or service not known\nmore")

    monkeypatch.setattr(torch.hub, "download_url_to_file", failing)
    with pytest.raises(MissingPretrainedWeights) as exc:
        pretrained.require("vgg19")
    assert "\n" not in str(exc.value) and "download failed: Name or service not known" in str(
        exc.value)


@pytest.mark.parametrize("name", ["vgg16", "vgg19", "alexnet"])
def test_torchvision_backbone_loads_the_file_without_network(torch_home, name):
    from ssmrepro.compat.torchvision_shim import import_torchvision

    tv = import_torchvision()
    with pytest.raises(MissingPretrainedWeights, match=pretrained.INVENTORY[name].file):
        pretrained.torchvision_backbone(name)
    state = tiny_state_dict(getattr(tv.models, name))
    torch_home.mkdir(parents=True)
    torch.save(state, torch_home / pretrained.INVENTORY[name].file)
    model = pretrained.torchvision_backbone(name)
    assert type(model).__name__ == ("AlexNet" if name == "alexnet" else "VGG")
    assert not model.training
    loaded = model.state_dict()
    assert list(loaded) == list(state)
    for k, v in state.items():
        assert loaded[k].device.type == "cpu" and torch.equal(loaded[k], v)
    assert not any(p.requires_grad for p in model.parameters())


def random_fid_inception_state() -> dict:
    """pytorch-fid's FID Inception structure with random weights (as fid_inception_v3 builds it)."""
    from ssmrepro.compat import ensure_torchvision_importable

    ensure_torchvision_importable()
    import pytorch_fid.inception as fi

    torch.manual_seed(0)
    net = fi._inception_v3(num_classes=1008, aux_logits=False, weights=None)
    net.Mixed_5b = fi.FIDInceptionA(192, pool_features=32)
    net.Mixed_5c = fi.FIDInceptionA(256, pool_features=64)
    net.Mixed_5d = fi.FIDInceptionA(288, pool_features=64)
    net.Mixed_6b = fi.FIDInceptionC(768, channels_7x7=128)
    net.Mixed_6c = fi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6d = fi.FIDInceptionC(768, channels_7x7=160)
    net.Mixed_6e = fi.FIDInceptionC(768, channels_7x7=192)
    net.Mixed_7b = fi.FIDInceptionE_1(1280)
    net.Mixed_7c = fi.FIDInceptionE_2(2048)
    return net.state_dict()


def test_inception_for_fid_loads_the_file(torch_home):
    import pytorch_fid.inception as fi

    with pytest.raises(MissingPretrainedWeights, match="pt_inception-2015-12-05-6726825d.pth"):
        pretrained.inception_for_fid()
    state = random_fid_inception_state()
    torch_home.mkdir(parents=True)
    torch.save(state, torch_home / "pt_inception-2015-12-05-6726825d.pth")
    model = pretrained.inception_for_fid()
    assert isinstance(model, fi.InceptionV3) and model.output_blocks == [3]
    assert model.resize_input and model.normalize_input and not model.training
    assert fi.load_state_dict_from_url is not None  # restored after construction
    conv = model.blocks[0][0].conv.weight
    assert torch.equal(conv, state["Conv2d_1a_3x3.conv.weight"])
    mixed = model.blocks[3][2].branch_pool.conv.weight
    assert torch.equal(mixed, state["Mixed_7c.branch_pool.conv.weight"])
