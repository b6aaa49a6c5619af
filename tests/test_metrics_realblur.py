"""RealBlur protocols against RealBlur's evaluation steps (OpenCV ECC + scikit-image)."""

from __future__ import annotations

import sys

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter, shift
from skimage.metrics import structural_similarity

from ssmrepro.metrics import MetricInputError, ecc_align, evaluate_pairs, get_protocol

cv2 = pytest.importorskip("cv2")


def textured(seed: int, h: int = 96, w: int = 120) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = gaussian_filter(rng.random((h, w, 3)), sigma=(3, 3, 0))
    x = (x - x.min()) / (x.max() - x.min())
    return x


@pytest.fixture(scope="module")
def shifted_pair():
    base = textured(0)
    gt = np.round(base * 255).astype(np.uint8)
    moved = shift(base, (1.4, -0.7, 0), order=3, mode="nearest")
    rng = np.random.default_rng(1)
    pred = np.round(np.clip(moved * 0.97 + rng.normal(0, 0.004, moved.shape), 0, 1) * 255)
    return pred.astype(np.uint8), gt


def realblur_reference(pred_u8: np.ndarray, gt_u8: np.ndarray):
    """RealBlur's evaluation_RealBlur_ecc.py, step by step (skimage 0.17 computed in float64)."""
    z = pred_u8.astype("float32") / 255
    x = gt_u8.astype("float32") / 255
    zs = (np.sum(x * z) / np.sum(z * z)) * z
    warp = np.eye(3, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 0)
    _, warp = cv2.findTransformECC(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY),
                                   cv2.cvtColor(zs, cv2.COLOR_RGB2GRAY), warp,
                                   cv2.MOTION_HOMOGRAPHY, criteria, inputMask=None,
                                   gaussFiltSize=5)
    shape = x.shape
    zr = cv2.warpPerspective(zs, warp, (shape[1], shape[0]),
                             flags=cv2.INTER_CUBIC + cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REFLECT)
    cr = cv2.warpPerspective(np.ones_like(zs, dtype="float32"), warp, (shape[1], shape[0]),
                             flags=cv2.INTER_NEAREST + cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    zr, xr = zr * cr, x * cr
    err = np.sum((xr - zr) ** 2, dtype=np.float64) / np.sum(cr)
    psnr = 10 * np.log10(1.0 / err)
    _, smap = structural_similarity(xr.astype(np.float64), zr.astype(np.float64), channel_axis=2,
                                    gaussian_weights=True, use_sample_covariance=False,
                                    data_range=1.0, full=True)
    smap = smap * cr
    pad = 5
    ssim = np.mean(smap[pad:-pad, pad:-pad].sum(axis=0).sum(axis=0)
                   / cr[pad:-pad, pad:-pad].sum(axis=0).sum(axis=0))
    return psnr, ssim, warp


def test_realblur_protocols_follow_the_reference_steps(shifted_pair):
    pred, gt = shifted_pair
    ref_psnr, ref_ssim, ref_warp = realblur_reference(pred, gt)
    assert get_protocol("psnr[realblur,ecc]")(pred, gt) == pytest.approx(ref_psnr, rel=1e-12)
    assert get_protocol("ssim[realblur,ecc]")(pred, gt) == pytest.approx(ref_ssim, rel=1e-12)
    _, _, _, warp = ecc_align(pred.astype("float32") / 255, gt.astype("float32") / 255)
    np.testing.assert_array_equal(warp, ref_warp)


def test_alignment_recovers_the_shift_and_raises_the_scores(shifted_pair):
    pred, gt = shifted_pair
    _, _, valid, warp = ecc_align(pred.astype("float32") / 255, gt.astype("float32") / 255)
    assert warp[0, 2] == pytest.approx(-0.7, abs=0.1) and warp[1, 2] == pytest.approx(1.4, abs=0.1)
    assert valid.min() == 0 and valid.max() == 1  # the warped-out border is excluded
    aligned = get_protocol("psnr[realblur,ecc]")(pred, gt)
    plain = get_protocol("psnr[rgb,uint8]")(pred, gt)
    assert aligned > plain + 5


def test_one_alignment_per_pair_in_evaluate_pairs(shifted_pair, monkeypatch):
    from ssmrepro.metrics import realblur

    calls = []
    original = realblur.ecc_align

    def counting(*args):
        calls.append(1)
        return original(*args)

    monkeypatch.setattr(realblur, "ecc_align", counting)
    pred, gt = shifted_pair
    out = evaluate_pairs([pred, pred], [gt, gt],
                         protocols=["psnr[realblur,ecc]", "ssim[realblur,ecc]"])
    assert len(calls) == 2
    ref_psnr, ref_ssim, _ = realblur_reference(pred, gt)
    assert out["metrics"]["psnr[realblur,ecc]"]["value"] == pytest.approx(ref_psnr, rel=1e-12)
    assert out["metrics"]["ssim[realblur,ecc]"]["value"] == pytest.approx(ref_ssim, rel=1e-12)


def test_identical_images_score_near_perfect():
    gt = np.round(textured(2, 64, 80) * 255).astype(np.uint8)
    assert get_protocol("ssim[realblur,ecc]")(gt, gt) == pytest.approx(1.0, abs=1e-6)
    assert get_protocol("psnr[realblur,ecc]")(gt, gt) > 60


def test_ecc_failure_and_missing_opencv_are_one_line(monkeypatch):
    flat = np.full((32, 32, 3), 128, np.uint8)
    with pytest.raises(MetricInputError) as exc:
        get_protocol("psnr[realblur,ecc]")(flat, flat)
    assert "ECC alignment failed" in str(exc.value) and "\n" not in str(exc.value)
    monkeypatch.setitem(sys.modules, "cv2", None)
    gt = np.round(textured(3, 32, 32) * 255).astype(np.uint8)
    with pytest.raises(MetricInputError, match="pip install opencv-python-headless"):
        get_protocol("ssim[realblur,ecc]")(gt, gt)
