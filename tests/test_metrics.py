"""PSNR / SSIM / L1 protocols against scikit-image and hand formulas; evaluate_pairs and folders."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ssmrepro.metrics import (
    MetricInputError,
    evaluate_pairs,
    get_protocol,
    metrics_for_dirs,
    rgb_to_y,
    ssim_3d,
    to_mask,
    to_uint8,
)
from ssmrepro.registry import METRICS

IDS = [
    "psnr[rgb,uint8]", "psnr[y,uint8]", "ssim[uniform7,rgb,uint8]", "ssim[gauss11,rgb,uint8]",
    "ssim[gauss11x11x11,rgb,uint8]", "ssim[gauss11,y,uint8]", "l1[whole,percent]",
    "l1[hole,percent]", "lpips[vgg,v0.1]", "lpips[alex,v0.1]", "fid[pytorch-fid,2048]",
    "psnr[realblur,ecc]", "ssim[realblur,ecc]",
]


def make_pair(seed: int, h: int = 40, w: int = 52):
    """A textured ground truth (different per channel) and a noisy, slightly biased prediction."""
    rng = np.random.default_rng(seed)
    base = gaussian_filter(rng.random((h, w, 3)), sigma=(2, 2, 0)) * 3 - 1
    gt = np.clip(np.round(np.clip(base, 0, 1) * 255), 0, 255).astype(np.uint8)
    noise = rng.normal(0, 12, gt.shape) + 4
    pred = np.clip(np.round(gt + noise), 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), bool)
    mask[h // 4: h // 2 + 3, w // 3: w // 3 + 15] = True
    return pred, gt, mask


@pytest.fixture(scope="module")
def pair():
    return make_pair(0)


def test_every_id_is_registered_with_its_attributes():
    for pid in IDS:
        p = METRICS.get(pid)
        assert p.id == pid
        assert p.name == pid.split("[")[0]
        assert p.better == ("lower" if p.name in ("l1", "lpips", "fid") else "higher")
        assert p.kind == ("set" if p.name == "fid" else "per_image")
        assert p.__doc__ and len(p.__doc__.strip()) > 40
    assert set(IDS) <= set(METRICS.names())


def test_unknown_protocol_lists_the_known(pair):
    with pytest.raises(MetricInputError) as exc:
        evaluate_pairs([pair[0]], [pair[1]], protocols=["psnr[bgr]"])
    msg = str(exc.value)
    assert "psnr[bgr]" in msg and "psnr[rgb,uint8]" in msg and "\n" not in msg


# --- the shared conversion rule -----------------------------------------------------------------

def test_float_to_uint8_clamps_and_rounds_half_to_even():
    x = np.array([-0.2, 0.0, 0.5 / 255, 1.5 / 255, 2.5 / 255, 0.999, 1.0, 1.7])
    img = np.stack([x, x, x], axis=-1)[None]  # 1 x 8 x 3
    out = to_uint8(img)
    assert out.dtype == np.uint8
    assert out[0, :, 0].tolist() == [0, 0, 0, 2, 2, 255, 255, 255]
    assert to_uint8(out) is out  # uint8 passes through


def test_to_uint8_accepts_chw_tensors_and_rejects_bad_input():
    import torch

    t = torch.rand(3, 5, 7)
    np.testing.assert_array_equal(
        to_uint8(t), np.round(np.clip(t.permute(1, 2, 0).numpy(), 0, 1) * 255).astype(np.uint8))
    with pytest.raises(MetricInputError, match="NaN"):
        to_uint8(np.full((4, 4, 3), np.nan))
    with pytest.raises(MetricInputError, match="HxWx3"):
        to_uint8(np.zeros((4, 4)))
    with pytest.raises(MetricInputError, match="uint8"):
        to_uint8(np.zeros((4, 4, 3), np.uint16))


def test_masks_from_bool_01_255_and_channel_dims():
    m = np.zeros((3, 4), bool)
    m[1, 2] = True
    for variant in (m, m.astype(np.uint8), m.astype(np.uint8) * 255, m[..., None].astype(float),
                    m[None].astype(np.float32)):
        np.testing.assert_array_equal(to_mask(variant, (3, 4)), m)
    with pytest.raises(MetricInputError, match="shape"):
        to_mask(m, (4, 3))


# --- PSNR ---------------------------------------------------------------------------------------

def test_psnr_rgb_is_scikit_image(pair):
    pred, gt, _ = pair
    got = get_protocol("psnr[rgb,uint8]")(pred, gt)
    assert got == peak_signal_noise_ratio(gt, pred, data_range=255)
    mse = np.mean((pred.astype(float) - gt.astype(float)) ** 2)
    assert got == pytest.approx(10 * np.log10(255**2 / mse), rel=1e-12)


def test_psnr_of_identical_images_is_inf_without_warning(pair, recwarn):
    assert get_protocol("psnr[rgb,uint8]")(pair[1], pair[1]) == float("inf")
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_y_channel_is_the_bt601_formula(pair):
    _, gt, _ = pair
    r, g, b = (gt[..., c].astype(np.float64) for c in range(3))
    hand = 16 + (65.481 * r + 128.553 * g + 24.966 * b) / 255
    np.testing.assert_allclose(rgb_to_y(gt), hand, rtol=0, atol=1e-10)
    assert rgb_to_y(np.zeros((2, 2, 3), np.uint8)).max() == pytest.approx(16)
    assert rgb_to_y(np.full((2, 2, 3), 255, np.uint8)).min() == pytest.approx(235)


def test_psnr_y_and_ssim_y_are_scikit_image_on_the_hand_y(pair):
    pred, gt, _ = pair

    def y(a):
        a = a.astype(np.float64)
        return 16 + (65.481 * a[..., 0] + 128.553 * a[..., 1] + 24.966 * a[..., 2]) / 255

    assert get_protocol("psnr[y,uint8]")(pred, gt) == pytest.approx(
        peak_signal_noise_ratio(y(gt), y(pred), data_range=255), rel=1e-12)
    assert get_protocol("ssim[gauss11,y,uint8]")(pred, gt) == pytest.approx(
        structural_similarity(y(gt), y(pred), data_range=255, gaussian_weights=True, sigma=1.5,
                              use_sample_covariance=False), rel=1e-12)


# --- SSIM ---------------------------------------------------------------------------------------

def test_ssim_uniform7_is_scikit_image_defaults(pair):
    pred, gt, _ = pair
    got = get_protocol("ssim[uniform7,rgb,uint8]")(pred, gt)
    assert got == structural_similarity(gt, pred, channel_axis=2, data_range=255)
    per_channel = [structural_similarity(gt[..., c], pred[..., c], win_size=7, data_range=255)
                   for c in range(3)]
    assert got == pytest.approx(np.mean(per_channel), rel=1e-14)


def test_ssim_gauss11_rgb_is_scikit_image_gaussian(pair):
    pred, gt, _ = pair
    got = get_protocol("ssim[gauss11,rgb,uint8]")(pred, gt)
    assert got == structural_similarity(gt, pred, channel_axis=2, data_range=255,
                                        gaussian_weights=True, sigma=1.5,
                                        use_sample_covariance=False)
    assert got != get_protocol("ssim[uniform7,rgb,uint8]")(pred, gt)


def slow_ssim_3d(pred: np.ndarray, gt: np.ndarray) -> float:
    """Independent 3-D SSIM: explicit 11x11x11 kernel, edge padding, one shift at a time."""
    k1 = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    k1 /= k1.sum()
    k3 = k1[:, None, None] * k1[None, :, None] * k1[None, None, :]

    def filt(a):
        p = np.pad(a, 5, mode="edge")
        out = np.zeros_like(a)
        h, w, c = a.shape
        for i in range(11):
            for j in range(11):
                for k in range(11):
                    out += k3[i, j, k] * p[i:i + h, j:j + w, k:k + c]
        return out

    x, y = pred.astype(np.float64), gt.astype(np.float64)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx**2, filt(y * y) - my**2, filt(x * y) - mx * my
    m = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    return float(m.mean())


def torch_reference_ssim_3d(pred, gt, dtype):
    """EVSSM's construction: Conv3d(11x11x11, padding 5, replicate) on the H x W x 3 volume."""
    import torch

    k1 = np.exp(-((np.arange(11) - 5) ** 2) / (2 * 1.5**2))
    k1 /= k1.sum()
    window = np.outer(k1, k1)
    kernel = torch.tensor(np.stack([window * k for k in k1], axis=0), dtype=dtype)
    conv = torch.nn.Conv3d(1, 1, 11, padding=5, bias=False, padding_mode="replicate").to(dtype)
    with torch.no_grad():
        conv.weight[0, 0] = kernel

        def f(a):
            return conv(a[None, None])[0, 0]

        x = torch.tensor(pred.astype(np.float64), dtype=dtype)
        y = torch.tensor(gt.astype(np.float64), dtype=dtype)
        c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
        mu1, mu2 = f(x), f(y)
        s1, s2, s12 = f(x * x) - mu1**2, f(y * y) - mu2**2, f(x * y) - mu1 * mu2
        m = ((2 * mu1 * mu2 + c1) * (2 * s12 + c2)) / ((mu1**2 + mu2**2 + c1) * (s1 + s2 + c2))
        return float(m.mean())


def test_ssim_3d_matches_an_independent_slow_implementation():
    pred, gt, _ = make_pair(3, h=17, w=14)
    got = get_protocol("ssim[gauss11x11x11,rgb,uint8]")(pred, gt)
    assert got == pytest.approx(slow_ssim_3d(pred, gt), rel=1e-12)


def test_ssim_3d_matches_the_reference_conv3d(pair):
    import torch

    pred, gt, _ = pair
    got = ssim_3d(pred, gt)
    assert got == pytest.approx(torch_reference_ssim_3d(pred, gt, torch.float64), rel=1e-12)
    # the reference runs in float32: within 1e-5 of this float64 value
    assert got == pytest.approx(torch_reference_ssim_3d(pred, gt, torch.float32), abs=1e-5)
    # mixing channels moves the number: not the per-channel 2-D Gaussian SSIM
    assert abs(got - get_protocol("ssim[gauss11,rgb,uint8]")(pred, gt)) > 1e-4
    assert ssim_3d(gt, gt) == pytest.approx(1.0, abs=1e-12)


# --- L1 -----------------------------------------------------------------------------------------

def test_l1_whole_and_hole(pair):
    pred, gt, mask = pair
    p, g = pred / 255.0, gt / 255.0
    assert get_protocol("l1[whole,percent]")(pred, gt) == pytest.approx(
        np.mean(np.abs(p - g)) * 100, rel=1e-12)
    hole = get_protocol("l1[hole,percent]")(pred, gt, mask)
    assert hole == pytest.approx(np.abs(p - g)[mask].mean() * 100, rel=1e-12)
    m3 = np.repeat(mask[..., None], 3, axis=2)
    assert hole == pytest.approx((np.abs(p - g) * m3).sum() / m3.sum() * 100, rel=1e-12)
    with pytest.raises(MetricInputError, match="needs a mask"):
        get_protocol("l1[hole,percent]")(pred, gt)
    with pytest.raises(MetricInputError, match="no hole"):
        get_protocol("l1[hole,percent]")(pred, gt, np.zeros_like(mask))


# --- evaluate_pairs ------------------------------------------------------------------------------

FAST = ["psnr[rgb,uint8]", "psnr[y,uint8]", "ssim[uniform7,rgb,uint8]", "ssim[gauss11,rgb,uint8]",
        "ssim[gauss11x11x11,rgb,uint8]", "ssim[gauss11,y,uint8]", "l1[whole,percent]",
        "l1[hole,percent]"]


@pytest.fixture(scope="module")
def pairs():
    return [make_pair(s) for s in range(5)]


def test_evaluate_pairs_means_per_image_values(pairs):
    preds, gts, masks = zip(*pairs)
    out = evaluate_pairs(preds, gts, masks, protocols=FAST, per_image=True)
    assert out["n_images"] == 5 and out["protocols"] == FAST
    for pid in FAST:
        per = [get_protocol(pid)(p, g, m) for p, g, m in pairs]
        assert out["per_image"][pid] == per
        entry = out["metrics"][pid]
        assert entry["value"] == pytest.approx(np.mean(per), rel=1e-14)
        assert entry["protocol"] == pid and entry["n_images"] == 5


def test_evaluate_pairs_floats_follow_the_shared_rule(pairs):
    preds, gts, _ = zip(*pairs)
    floats = [p.astype(np.float32) / 255 + 0.001 for p in preds]  # rounds back to the same uint8
    a = evaluate_pairs(floats, gts, protocols=FAST[:3])
    b = evaluate_pairs(preds, gts, protocols=FAST[:3])
    assert a["metrics"] == b["metrics"]


def test_worker_processes_give_identical_numbers(pairs):
    preds, gts, masks = zip(*pairs)
    one = evaluate_pairs(preds, gts, masks, protocols=FAST, per_image=True, workers=1)
    two = evaluate_pairs(preds, gts, masks, protocols=FAST, per_image=True, workers=2)
    assert one == two


def test_evaluate_pairs_errors(pairs):
    preds, gts, masks = zip(*pairs)
    with pytest.raises(MetricInputError, match="pred has 4 images, gt has 5"):
        evaluate_pairs(preds[:4], gts, protocols=FAST[:1])
    with pytest.raises(MetricInputError, match="no images"):
        evaluate_pairs([], [], protocols=FAST[:1])
    small = [p[:-1] for p in preds]
    with pytest.raises(MetricInputError, match=r"a\.png: pred is 52x39, gt is 52x40"):
        evaluate_pairs(small[:1], gts[:1], protocols=FAST[:1], names=["a.png"])
    with pytest.raises(MetricInputError, match="needs masks"):
        evaluate_pairs(preds, gts, protocols=["l1[hole,percent]"])
    with pytest.raises(MetricInputError, match="known: .*psnr"):
        evaluate_pairs(preds, gts)


# --- folders ------------------------------------------------------------------------------------

def write_dirs(tmp_path, pairs, mask_dir=True):
    d = {k: tmp_path / k for k in ("pred", "gt", "mask")}
    for p in d.values():
        p.mkdir()
    for i, (p, g, m) in enumerate(pairs):
        Image.fromarray(p).save(d["pred"] / f"img{i:02d}.png")
        Image.fromarray(g).save(d["gt"] / f"img{i:02d}.png")
        Image.fromarray((m * 255).astype(np.uint8)).save(d["mask"] / f"img{i:02d}.png")
    return d


def test_metrics_for_dirs_equals_evaluate_pairs(tmp_path, pairs):
    d = write_dirs(tmp_path, pairs)
    out = metrics_for_dirs(d["pred"], d["gt"], d["mask"], protocol_ids=FAST, per_image=True)
    preds, gts, masks = zip(*pairs)
    ref = evaluate_pairs(preds, gts, masks, protocols=FAST, per_image=True,
                         names=[f"img{i:02d}.png" for i in range(5)])
    assert out["metrics"] == ref["metrics"]
    assert out["per_image"] == ref["per_image"]
    assert out["file_formats"] == ["png"] and out["n_images"] == 5


def test_metrics_for_dirs_errors(tmp_path, pairs):
    d = write_dirs(tmp_path, pairs)
    ids = FAST[:1]
    (d["gt"] / "img04.png").unlink()
    with pytest.raises(MetricInputError) as exc:
        metrics_for_dirs(d["pred"], d["gt"], protocol_ids=ids)
    assert str(exc.value) == ("pred folder has 5 images, gt folder has 4; only in pred: img04")
    (d["pred"] / "img04.png").unlink()
    Image.fromarray(pairs[0][1][:-2]).save(d["gt"] / "img01.png")
    with pytest.raises(MetricInputError, match=r"img01\.png: pred is 52x40, gt is 52x38"):
        metrics_for_dirs(d["pred"], d["gt"], protocol_ids=ids)
    Image.fromarray(pairs[1][1]).save(d["gt"] / "img01.png")
    (d["mask"] / "img02.png").unlink()
    with pytest.raises(MetricInputError, match="no mask in .* for 1 images: img02"):
        metrics_for_dirs(d["pred"], d["gt"], d["mask"], protocol_ids=ids)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(MetricInputError, match="no images in gt folder"):
        metrics_for_dirs(d["pred"], empty, protocol_ids=ids)
    with pytest.raises(MetricInputError, match="does not exist"):
        metrics_for_dirs(tmp_path / "nope", d["gt"], protocol_ids=ids)
    Image.fromarray(pairs[0][0]).save(d["pred"] / "img00.jpg")
    with pytest.raises(MetricInputError, match="two images named img00"):
        metrics_for_dirs(d["pred"], d["gt"], protocol_ids=ids)


def test_network_metrics_work_in_a_fresh_process(tmp_path):
    """lpips / pytorch-fid import torchvision: the package must apply the CPU shim itself."""
    import json
    import os
    import subprocess
    import sys

    code = (
        "import json, numpy as np\n"
        "from ssmrepro.metrics import fid_from_features, evaluate_pairs\n"
        "from ssmrepro.pretrained import MissingPretrainedWeights\n"
        "f = np.random.default_rng(0).normal(size=(20, 4))\n"
        "out = {'fid': fid_from_features(f, f + 1)}\n"
        "img = np.zeros((8, 8, 3), np.uint8)\n"
        "try:\n"
        "    evaluate_pairs([img], [img], protocols=['lpips[alex,v0.1]'])\n"
        "except MissingPretrainedWeights as exc:\n"
        "    out['lpips'] = str(exc)\n"
        "print(json.dumps(out))\n")
    env = {**os.environ, "TORCH_HOME": str(tmp_path), "OMP_NUM_THREADS": "1"}
    env.pop("SSMREPRO_ALLOW_DOWNLOAD", None)
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out["fid"] == pytest.approx(4.0, abs=1e-9)  # identical covariances, mean shift 1 x 4
    assert out["lpips"].startswith("missing pretrained weights alexnet-owt-7be5be79.pth: put it "
                                   f"in {tmp_path}/hub/checkpoints/ (download from ")
