"""LPIPS and FID protocols against lpips and pytorch-fid themselves, with test-made backbones."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from ssmrepro import pretrained
from ssmrepro.compat import ensure_torchvision_importable
from ssmrepro.metrics import (
    MetricInputError,
    evaluate_pairs,
    fid_features,
    fid_from_features,
    fid_from_images,
    get_protocol,
)
from ssmrepro.metrics import fid as fid_module
from ssmrepro.metrics import perceptual
from ssmrepro.pretrained import MissingPretrainedWeights

ensure_torchvision_importable()
import lpips  # noqa: E402
import torchvision  # noqa: E402
from pytorch_fid.fid_score import calculate_frechet_distance, get_activations  # noqa: E402
from test_pretrained import random_fid_inception_state  # noqa: E402


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """A fresh TORCH_HOME, no download possible, model caches emptied before and after."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    monkeypatch.delenv(pretrained.ALLOW_DOWNLOAD_ENV, raising=False)

    def no_network(*args, **kwargs):
        raise AssertionError(f"tried to download: {args}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    perceptual.clear_model_cache()
    fid_module.clear_model_cache()
    ckpt = tmp_path / "th" / "hub" / "checkpoints"
    ckpt.mkdir(parents=True)
    yield ckpt
    perceptual.clear_model_cache()
    fid_module.clear_model_cache()


def save_random_backbone(folder, name: str, seed: int) -> None:
    """A seeded random torchvision backbone saved under its official file name.

    Convolutions get seeded Gaussian weights; the classifier (unused by LPIPS) is stored as
    stride-0 zeros, so the file stays small and nothing slow is initialised.
    """
    with torch.device("meta"):
        model = getattr(torchvision.models, name)(weights=None)
    gen = torch.Generator().manual_seed(seed)
    state = {k: (torch.randn(v.shape, generator=gen) * (0.05 if k.endswith("weight") else 0.01)
                 if k.startswith("features") else torch.zeros(1).expand(v.shape))
             for k, v in model.state_dict().items()}
    torch.save(state, folder / pretrained.INVENTORY[name].file)


def images(seed: int, n: int, h: int = 36, w: int = 44) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for _ in range(n)]


@pytest.mark.parametrize("net,backbone", [("alex", "alexnet"), ("vgg", "vgg16")])
def test_lpips_equals_lpips_with_the_same_backbone(torch_home, net, backbone):
    save_random_backbone(torch_home, backbone, seed=1)
    pred, gt = images(0, 2), images(5, 2)
    ours = get_protocol(f"lpips[{net},v0.1]")(pred[0], gt[0])
    again = get_protocol(f"lpips[{net},v0.1]")(pred[1], gt[1])
    # lpips itself, loading the backbone through torchvision from the same TORCH_HOME file
    ref_model = lpips.LPIPS(net=net, version="0.1", verbose=False).eval()

    def t(a):
        return torch.from_numpy(a).permute(2, 0, 1)[None].float() / 255 * 2 - 1

    with torch.no_grad():
        ref = [float(ref_model(t(p), t(g))) for p, g in zip(pred, gt)]
    assert ours == pytest.approx(ref[0], rel=1e-6, abs=1e-7)
    assert again == pytest.approx(ref[1], rel=1e-6, abs=1e-7)
    assert get_protocol(f"lpips[{net},v0.1]")(gt[0], gt[0]) == pytest.approx(0.0, abs=1e-7)
    # the model is built once per process
    assert perceptual.lpips_model(net) is perceptual.lpips_model(net)


def test_lpips_does_not_move_the_callers_random_stream(torch_home):
    save_random_backbone(torch_home, "alexnet", seed=2)
    torch.manual_seed(123)
    perceptual.lpips_model("alex")
    after = torch.rand(3)
    torch.manual_seed(123)
    assert torch.equal(after, torch.rand(3))


def test_lpips_missing_backbone_is_one_line(torch_home):
    pred, gt = images(0, 2), images(5, 2)
    with pytest.raises(MissingPretrainedWeights) as exc:
        get_protocol("lpips[vgg,v0.1]")(pred[0], gt[0])
    assert str(exc.value) == (
        f"missing pretrained weights vgg16-397923af.pth: put it in {torch_home}/ "
        "(download from https://download.pytorch.org/models/vgg16-397923af.pth)")
    with pytest.raises(MissingPretrainedWeights, match="alexnet-owt-7be5be79.pth"):
        evaluate_pairs(pred, gt, protocols=["lpips[alex,v0.1]"])


# --- FID ----------------------------------------------------------------------------------------

def test_fid_from_features_is_pytorch_fid():
    rng = np.random.default_rng(0)
    f1 = rng.normal(size=(40, 8))
    f2 = rng.normal(0.3, 1.2, size=(30, 8))
    ref = calculate_frechet_distance(f1.mean(0), np.cov(f1, rowvar=False), f2.mean(0),
                                     np.cov(f2, rowvar=False))
    assert fid_from_features(f1, f2) == pytest.approx(ref, rel=1e-12)
    assert fid_from_features(f1, f1) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(MetricInputError, match="at least 2 images"):
        fid_from_features(f1[:1], f2)
    with pytest.raises(MetricInputError, match="feature sizes differ"):
        fid_from_features(f1, f2[:, :4])


class TinyNet(torch.nn.Module):
    """A random 'backbone': conv, ReLU, global pool to 6 features (returned like InceptionV3)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv = torch.nn.Conv2d(3, 6, 3, stride=2)

    def forward(self, x):
        return [torch.nn.functional.adaptive_avg_pool2d(torch.relu(self.conv(x)), 1)]


def test_fid_from_images_with_an_injected_backbone():
    net = TinyNet().eval()
    a, b = images(1, 12), images(2, 9, h=30, w=30)  # sets may differ in size
    with torch.no_grad():
        fa = np.concatenate([net(torch.from_numpy(x).permute(2, 0, 1)[None].float() / 255)[0]
                             .flatten(1).numpy() for x in a]).astype(np.float64)
        fb = np.concatenate([net(torch.from_numpy(x).permute(2, 0, 1)[None].float() / 255)[0]
                             .flatten(1).numpy() for x in b]).astype(np.float64)
    np.testing.assert_allclose(fid_features(a, net, batch_size=5), fa, rtol=1e-5, atol=1e-7)
    expected = calculate_frechet_distance(fa.mean(0), np.cov(fa, rowvar=False), fb.mean(0),
                                          np.cov(fb, rowvar=False))
    assert fid_from_images(a, b, model=net) == pytest.approx(expected, rel=1e-4)
    # through evaluate_pairs (set protocol, image count recorded); floats follow the uint8 rule
    c = images(4, 9)
    out = evaluate_pairs([x / 255.0 for x in a[:9]], c, protocols=["fid[pytorch-fid,2048]"],
                         fid_model=net)
    entry = out["metrics"]["fid[pytorch-fid,2048]"]
    assert entry["n_images"] == 9 and entry["kind"] == "set" and entry["better"] == "lower"
    assert entry["value"] == pytest.approx(fid_from_images(a[:9], c, model=net), rel=1e-9)


def test_fid_features_match_pytorch_fid_on_png_files(torch_home, tmp_path):
    """Our features of uint8 arrays = pytorch-fid's get_activations on the PNG files, with the
    real InceptionV3([3]) (random weights in the official file, built by pytorch-fid itself)."""
    import pytorch_fid.inception as fi

    torch.save(random_fid_inception_state(), torch_home / "pt_inception-2015-12-05-6726825d.pth")
    imgs = images(3, 3, h=32, w=32)
    files = []
    for i, x in enumerate(imgs):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(x).save(files[-1])
    theirs_model = fi.InceptionV3([3])  # loads the file from TORCH_HOME through torch.hub
    theirs = get_activations(files, theirs_model, batch_size=50, dims=2048, device="cpu",
                             num_workers=0)
    ours = fid_features(imgs)  # default backbone: ssmrepro.pretrained.inception_for_fid()
    assert ours.shape == theirs.shape == (3, 2048)
    np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)


def test_fid_missing_weights_is_one_line(torch_home):
    a = images(0, 2)
    with pytest.raises(MissingPretrainedWeights) as exc:
        fid_from_images(a, a)
    assert str(exc.value).startswith(
        "missing pretrained weights pt_inception-2015-12-05-6726825d.pth: put it in "
        f"{torch_home}/ (download from https://github.com/mseitzer/pytorch-fid/")
