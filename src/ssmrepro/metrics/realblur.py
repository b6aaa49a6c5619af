"""RealBlur protocols: ECC homography alignment, masked PSNR, masked Gaussian SSIM.

Follows RealBlur's ``evaluation_RealBlur_ecc.py`` (rimchang/RealBlur; EVSSM's
``Real_blur_PSNR.py`` is the same code):

1. both images as float32 in [0, 1] (uint8 / 255);
2. intensity matching ``zs = (sum(gt*pred) / sum(pred*pred)) * pred``;
3. ``cv2.findTransformECC`` of the grey ``zs`` onto the grey ``gt``, ``MOTION_HOMOGRAPHY``,
   100 iterations, eps 0, ``gaussFiltSize=5``, starting from the identity;
4. ``zs`` warped with ``INTER_CUBIC + WARP_INVERSE_MAP`` (reflect border), a validity map ``cr``
   (ones warped with ``INTER_NEAREST``, constant 0 border); both images multiplied by ``cr``;
5. PSNR = 10 log10(1 / (sum((gt - pred)^2) / sum(cr)));
   SSIM = scikit-image Gaussian SSIM (``gaussian_weights=True, use_sample_covariance=False,
   data_range=1``, full map) times ``cr``, 5-pixel border dropped, per channel
   sum(map) / sum(cr), mean over channels.

OpenCV is optional (``pip install opencv-python-headless``); without it these two protocols
raise a one-line error. RealBlur pins scikit-image 0.17.2, which computes SSIM in float64: the
aligned float32 images are passed as float64 here to keep that (newer scikit-image keeps float32,
about 1e-6 away). The alignment is computed once per pair and shared by both protocols.
"""

from __future__ import annotations

import numpy as np

from .protocol import MetricInputError, protocol


def _cv2():
    try:
        import cv2
    except ImportError:
        raise MetricInputError(
            "the RealBlur protocols need OpenCV: pip install opencv-python-headless") from None
    return cv2


def ecc_align(deblurred: np.ndarray, gt: np.ndarray):
    """RealBlur's ``image_align``: returns (aligned pred, masked gt, validity map, warp matrix).

    Inputs are float32 HxWx3 in [0, 1]. Raises :class:`MetricInputError` when ECC fails.
    """
    cv2 = _cv2()
    z, x = deblurred, gt
    zs = (np.sum(x * z) / np.sum(z * z)) * z  # simple intensity matching
    warp = np.eye(3, 3, dtype=np.float32)
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 0)
    try:
        _cc, warp = cv2.findTransformECC(
            cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.cvtColor(zs, cv2.COLOR_RGB2GRAY), warp,
            cv2.MOTION_HOMOGRAPHY, criteria, inputMask=None, gaussFiltSize=5)
    except cv2.error as exc:
        msg = " ".join(str(exc).split())
        raise MetricInputError(f"RealBlur ECC alignment failed: {msg}") from None
    h, w = x.shape[:2]
    zr = cv2.warpPerspective(zs, warp, (w, h), flags=cv2.INTER_CUBIC + cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REFLECT)
    cr = cv2.warpPerspective(np.ones_like(zs, dtype="float32"), warp, (w, h),
                             flags=cv2.INTER_NEAREST + cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return zr * cr, x * cr, cr, warp


def _aligned(pred: np.ndarray, gt: np.ndarray, ctx: dict | None):
    if ctx is not None and "realblur" in ctx:
        return ctx["realblur"]
    out = ecc_align(pred.astype("float32") / 255, gt.astype("float32") / 255)
    if ctx is not None:
        ctx["realblur"] = out
    return out


def masked_psnr(gt: np.ndarray, pred: np.ndarray, valid: np.ndarray, data_range=1.0) -> float:
    err = np.sum((gt - pred) ** 2, dtype=np.float64) / np.sum(valid)
    with np.errstate(divide="ignore"):
        return float(10 * np.log10((data_range**2) / err))


def masked_ssim(gt: np.ndarray, pred: np.ndarray, valid: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    _, ssim_map = structural_similarity(
        gt.astype(np.float64), pred.astype(np.float64), channel_axis=2, gaussian_weights=True,
        use_sample_covariance=False, data_range=1.0, full=True)
    ssim_map = ssim_map * valid
    pad = int(3.5 * 1.5 + 0.5)  # the Gaussian's radius, as scikit-image crops
    s = ssim_map[pad:-pad, pad:-pad, :]
    c = valid[pad:-pad, pad:-pad, :]
    return float(np.mean(s.sum(axis=0).sum(axis=0) / c.sum(axis=0).sum(axis=0)))


@protocol("psnr[realblur,ecc]", "psnr", "higher")
def psnr_realblur(pred, gt, mask=None, ctx=None) -> float:
    """RealBlur PSNR: ECC homography alignment of the output to the ground truth, then PSNR over
    the valid (warped-in) region, data range 1 on uint8/255 floats.

    Moves with: alignment (none vs ECC homography, its iterations and blur), intensity matching,
    the validity mask, OpenCV version (RealBlur pins 4.2.0).
    """
    zr, xr, cr, _ = _aligned(pred, gt, ctx)
    return masked_psnr(xr, zr, cr)


@protocol("ssim[realblur,ecc]", "ssim", "higher")
def ssim_realblur(pred, gt, mask=None, ctx=None) -> float:
    """RealBlur SSIM: the same ECC alignment, scikit-image Gaussian SSIM (sigma 1.5, population
    covariance, data range 1) map weighted by the validity mask, 5-pixel border dropped, per
    channel sum(map)/sum(mask), mean over channels.

    Moves with: alignment, SSIM window, float32 vs float64 SSIM arithmetic (scikit-image version).
    """
    zr, xr, cr, _ = _aligned(pred, gt, ctx)
    return masked_ssim(xr, zr, cr)
