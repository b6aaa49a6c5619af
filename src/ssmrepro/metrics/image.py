"""The one conversion every metric input goes through, masks, and compositing.

Shared rule: a float output is clamped to [0, 1] and ``np.round(x * 255)`` to uint8 (numpy rounds
half to even). uint8 images pass through unchanged. Torch tensors (3,H,W) or (H,W,3) are accepted.
Note: SEM-Net's reference test code truncates (``astype(np.uint8)`` after ``* 255``) instead of
rounding; the harness rounds everywhere (EVSSM and RealBlur round).
"""

from __future__ import annotations

import numpy as np

from .protocol import MetricInputError


def _to_numpy(x, what: str) -> np.ndarray:
    if isinstance(x, np.ndarray):
        return x
    mod = type(x).__module__
    if mod.startswith("torch"):
        import torch

        t = x.detach().cpu()
        if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
            t = t.float()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim == 3 and t.shape[0] in (1, 3) and t.shape[-1] not in (1, 3):
            t = t.permute(1, 2, 0)
        elif t.ndim == 3 and t.shape[0] == 3 and t.shape[-1] == 3:
            raise MetricInputError(f"{what}: ambiguous 3x?x3 tensor shape {tuple(t.shape)}; "
                                   "pass a numpy HxWx3 array")
        return t.numpy()
    try:
        return np.asarray(x)
    except Exception as exc:  # noqa: BLE001
        raise MetricInputError(f"{what}: cannot read {type(x).__name__} as an image") from exc


def to_uint8(x, what: str = "image") -> np.ndarray:
    """HxWx3 uint8 from a uint8 image or a float image in [0, 1] (clamp, ``np.round(x*255)``)."""
    a = _to_numpy(x, what)
    if a.ndim != 3 or a.shape[2] != 3:
        raise MetricInputError(f"{what}: expected an HxWx3 RGB image, got shape {a.shape}")
    if a.dtype == np.uint8:
        return a
    if np.issubdtype(a.dtype, np.floating):
        if not np.isfinite(a).all():
            raise MetricInputError(f"{what}: contains NaN or infinite values")
        return np.round(np.clip(a, 0.0, 1.0) * 255).astype(np.uint8)
    if a.dtype == np.bool_ or np.issubdtype(a.dtype, np.integer):
        raise MetricInputError(f"{what}: integer images must be uint8 (0..255), got {a.dtype}; "
                               "floats must be in [0, 1]")
    raise MetricInputError(f"{what}: unsupported dtype {a.dtype}")


def to_mask(m, shape: tuple[int, int], what: str = "mask") -> np.ndarray:
    """HxW bool, True = hole, from bool, {0,1} or {0,255} data of shape HxW, HxWx1 or 1xHxW.

    Values are read as floats, divided by 255 when the maximum is above 1, and thresholded at 0.5.
    """
    a = _to_numpy(m, what)
    a = np.squeeze(a)
    if a.ndim == 3 and a.shape[-1] in (3, 4):  # an RGB(A) mask image: any channel is the same
        a = a[..., 0]
    if a.shape != tuple(shape):
        raise MetricInputError(f"{what}: shape {a.shape} does not match image {tuple(shape)}")
    if a.dtype == np.bool_:
        return a
    f = a.astype(np.float64)
    if f.size and f.max() > 1:
        f = f / 255.0
    return f >= 0.5


def composite(pred, gt, mask) -> np.ndarray:
    """Inpainting composite: the output inside the hole, the ground truth outside (uint8)."""
    p, g = to_uint8(pred, "pred"), to_uint8(gt, "gt")
    m = to_mask(mask, g.shape[:2])
    return np.where(m[..., None], p, g)


def rgb_to_y(img: np.ndarray) -> np.ndarray:
    """BT.601 luma in [16, 235] as float64 (scikit-image ``rgb2ycbcr`` channel 0, not rounded).

    Y = 16 + (65.481 R + 128.553 G + 24.966 B) / 255 with R, G, B in 0..255 (BasicSR's
    ``to_y_channel`` computes the same in float32; MATLAB's ``rgb2ycbcr`` on uint8 rounds it).
    """
    from skimage.color import rgb2ycbcr

    return rgb2ycbcr(img)[..., 0]
