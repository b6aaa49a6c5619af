"""PSNR, SSIM and L1 protocols on uint8 images (scikit-image does the PSNR/SSIM arithmetic).

Every function takes ``pred`` and ``gt`` as HxWx3 uint8 (see :mod:`.image` for the conversion
rule), an optional HxW bool ``mask`` (True = hole) and an optional per-pair ``ctx`` dict.
A perfect prediction has PSNR ``inf`` (scikit-image's value; SEM-Net's script caps it at 100).
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from .image import rgb_to_y
from .protocol import MetricInputError, protocol

DATA_RANGE = 255


def _psnr(gt: np.ndarray, pred: np.ndarray) -> float:
    with np.errstate(divide="ignore"):  # identical images: inf, without a warning
        return float(peak_signal_noise_ratio(gt, pred, data_range=DATA_RANGE))


def _y(img: np.ndarray, ctx: dict | None, key: str) -> np.ndarray:
    if ctx is None:
        return rgb_to_y(img)
    if key not in ctx:
        ctx[key] = rgb_to_y(img)
    return ctx[key]


@protocol("psnr[rgb,uint8]", "psnr", "higher")
def psnr_rgb(pred, gt, mask=None, ctx=None) -> float:
    """PSNR over all RGB channels of uint8 images, data range 255, no border crop.

    scikit-image ``peak_signal_noise_ratio(gt, pred, data_range=255)`` (float64 MSE over H x W x 3).
    Moves with: RGB vs Y, data range, border crop, uint8 rounding of the output, composite or raw
    output (inpainting). SEM-Net's and EVSSM's GoPro/HIDE protocol.
    """
    return _psnr(gt, pred)


@protocol("psnr[y,uint8]", "psnr", "higher")
def psnr_y(pred, gt, mask=None, ctx=None) -> float:
    """PSNR on the BT.601 Y channel (16..235, float64, not rounded) of uint8 RGB images.

    Y from scikit-image ``rgb2ycbcr`` (= BasicSR ``to_y_channel`` up to float32 vs float64);
    ``peak_signal_noise_ratio(y_gt, y_pred, data_range=255)``. Moves with: rounding Y to integers
    (MATLAB ``rgb2ycbcr`` on uint8 does), border crop, data range.
    """
    return _psnr(_y(gt, ctx, "y_gt"), _y(pred, ctx, "y_pred"))


@protocol("ssim[uniform7,rgb,uint8]", "ssim", "higher")
def ssim_uniform7_rgb(pred, gt, mask=None, ctx=None) -> float:
    """SSIM with scikit-image defaults: 7x7 uniform window, sample covariance, K1 0.01, K2 0.03.

    ``structural_similarity(gt, pred, channel_axis=2, data_range=255)``: per channel, mean over
    the map without a 3-pixel border, then the mean of the three channels. SEM-Net's protocol.
    Moves with: window (uniform 7 vs Gaussian 11 vs 3-D), covariance normalisation, RGB vs Y.
    """
    return float(structural_similarity(gt, pred, channel_axis=2, data_range=DATA_RANGE))


@protocol("ssim[gauss11,rgb,uint8]", "ssim", "higher")
def ssim_gauss11_rgb(pred, gt, mask=None, ctx=None) -> float:
    """SSIM with an 11x11 Gaussian window (sigma 1.5), population covariance (Wang et al. 2004).

    ``structural_similarity(gt, pred, channel_axis=2, data_range=255, gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False)``: per channel (reflect padding, 5-pixel border
    dropped from the mean), then the mean over channels. Moves with: window, channel handling.
    """
    return float(structural_similarity(gt, pred, channel_axis=2, data_range=DATA_RANGE,
                                       gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False))


@protocol("ssim[gauss11,y,uint8]", "ssim", "higher")
def ssim_gauss11_y(pred, gt, mask=None, ctx=None) -> float:
    """SSIM on the Y channel (as ``psnr[y,uint8]``) with the 11x11 Gaussian window (sigma 1.5).

    ``structural_similarity(y_gt, y_pred, data_range=255, gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False)``. BasicSR's Y-SSIM filters with cv2 and replicate borders and
    averages the whole map, which moves the value slightly; this one drops the 5-pixel border.
    """
    return float(structural_similarity(_y(gt, ctx, "y_gt"), _y(pred, ctx, "y_pred"),
                                       data_range=DATA_RANGE, gaussian_weights=True, sigma=1.5,
                                       use_sample_covariance=False))


def gaussian_3d(a: np.ndarray) -> np.ndarray:
    """11x11x11 Gaussian (sigma 1.5, normalised) over H, W and channels, edge-replicate padding.

    The kernel equals the outer product of three ``cv2.getGaussianKernel(11, 1.5)``; scipy's
    separable filter with ``mode='nearest'`` is PyTorch's ``Conv3d(padding=5,
    padding_mode='replicate')`` with that kernel.
    """
    return gaussian_filter(a, sigma=1.5, mode="nearest", radius=5)


def ssim_3d(pred: np.ndarray, gt: np.ndarray, data_range: float = DATA_RANGE) -> float:
    x = pred.astype(np.float64)
    y = gt.astype(np.float64)
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2
    mu1, mu2 = gaussian_3d(x), gaussian_3d(y)
    mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = gaussian_3d(x * x) - mu1_sq
    s2 = gaussian_3d(y * y) - mu2_sq
    s12 = gaussian_3d(x * y) - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + c1) * (2 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2))
    return float(ssim_map.mean())


@protocol("ssim[gauss11x11x11,rgb,uint8]", "ssim", "higher")
def ssim_gauss3d_rgb(pred, gt, mask=None, ctx=None) -> float:
    """EVSSM GoPro/HIDE SSIM: one 11x11x11 Gaussian (sigma 1.5) over the H x W x 3 volume.

    As FFTformer/EVSSM's BasicSR ``calculate_ssim(ssim3d=True)`` (``_ssim_3d``): the Gaussian
    runs over rows, columns and the colour axis with edge-replicate padding (5 on every side, so
    each channel's window mixes the neighbouring channels), C1 = (0.01*255)^2, C2 = (0.03*255)^2,
    population (co)variances, and the mean of the whole H x W x 3 map (no border dropped).
    Computed here in float64; the reference runs torch float32 on a GPU (about 1e-6 away), reads
    images BGR (same value: the kernel is symmetric) and uses data range 1 for an image whose
    maximum is <= 1 (an all-black image), where this protocol always uses 255.
    """
    return ssim_3d(pred, gt)


def _abs_diff(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    return np.abs(pred.astype(np.int16) - gt.astype(np.int16))


@protocol("l1[whole,percent]", "l1", "lower")
def l1_whole(pred, gt, mask=None, ctx=None) -> float:
    """Mean |pred - gt| over all pixels and channels in [0, 1], times 100 (SEM-Net tables).

    Computed as mean(|p - g|) / 255 * 100 on the uint8 values (exact integer differences).
    Score the composited inpainting output (hole from the model, the rest from the ground truth,
    as SEM-Net does). SEM-Net's script takes it on the float output (no uint8 rounding) and
    prints a fraction (the tables show percent). Moves with: whole vs hole, composite vs raw.
    """
    return float(_abs_diff(pred, gt).mean(dtype=np.float64) / 255.0 * 100.0)


@protocol("l1[hole,percent]", "l1", "lower", needs_mask=True)
def l1_hole(pred, gt, mask=None, ctx=None) -> float:
    """Mean |pred - gt| over the hole pixels only (all three channels), in [0, 1], times 100.

    Needs the mask (True / 1 / 255 = hole). Moves with: the mask threshold, whole vs hole.
    """
    if mask is None:
        raise MetricInputError("l1[hole,percent] needs a mask")
    if not mask.any():
        raise MetricInputError("l1[hole,percent]: the mask has no hole pixels")
    return float(_abs_diff(pred, gt)[mask].mean(dtype=np.float64) / 255.0 * 100.0)
