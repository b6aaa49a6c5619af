"""FID as pytorch-fid computes it: 2048-d pool3 features of its FID Inception, Frechet distance.

Images are uint8 HxWx3 (what a PNG file holds: score PNG outputs, a JPEG round trip moves FID),
turned into float32 in [0, 1] exactly as pytorch-fid's ``ToTensor`` does, fed in batches of 50
(pytorch-fid's default) to ``InceptionV3([3])``, which resizes to 299x299 (bilinear) and scales to
[-1, 1] inside. Statistics: ``np.mean`` and ``np.cov(rowvar=False)`` of the float64 features,
then pytorch-fid's ``calculate_frechet_distance``. The value depends on the image count (FID is
biased for small sets; under 2048 images the covariance is rank deficient), so results record it.
Any backbone can be injected (``model=``): a module mapping (B,3,H,W) in [0,1] to (B,D[,1,1]) or
to a list whose first item is that (as pytorch-fid's ``InceptionV3``).
"""

from __future__ import annotations

import threading
import warnings
from typing import Iterable

import numpy as np

from .image import to_uint8
from .protocol import MetricInputError, protocol

BATCH_SIZE = 50
_models: dict = {}
_lock = threading.Lock()


def fid_inception(device=None):
    """The cached pytorch-fid ``InceptionV3([3])`` with FID weights from the local file."""
    import torch

    from ..pretrained import inception_for_fid

    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    with _lock:
        if str(device) not in _models:
            _models[str(device)] = inception_for_fid().to(device).eval()
        return _models[str(device)]


def clear_model_cache() -> None:
    """Forget the cached FID Inception (after the weight file changed)."""
    with _lock:
        _models.clear()


def _features_of_batch(model, batch: list[np.ndarray]) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    try:
        device = next(model.parameters()).device
    except (StopIteration, AttributeError):
        device = torch.device("cpu")
    x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).contiguous()
    x = x.to(torch.float32).div(255).to(device)  # = torchvision ToTensor on a PIL RGB image
    with torch.no_grad():
        out = model(x)
    if isinstance(out, (list, tuple)):
        out = out[0]
    if out.ndim == 4:
        if out.shape[2] != 1 or out.shape[3] != 1:
            out = F.adaptive_avg_pool2d(out, output_size=(1, 1))
        out = out.squeeze(3).squeeze(2)
    return out.cpu().numpy().astype(np.float64)


class FeatureExtractor:
    """Streams images through the backbone in batches of equal-size images."""

    def __init__(self, model=None, batch_size: int = BATCH_SIZE):
        self.model = model if model is not None else fid_inception()
        if hasattr(self.model, "eval"):
            self.model.eval()
        self.batch_size = batch_size
        self._pending: list[np.ndarray] = []
        self._features: list[np.ndarray] = []
        self.count = 0

    def add(self, img) -> None:
        img = to_uint8(img)
        if self._pending and self._pending[0].shape != img.shape:
            self._flush()
        self._pending.append(img)
        self.count += 1
        if len(self._pending) >= self.batch_size:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            self._features.append(_features_of_batch(self.model, self._pending))
            self._pending = []

    def features(self) -> np.ndarray:
        self._flush()
        if not self._features:
            return np.empty((0, 0))
        return np.concatenate(self._features, axis=0)


def fid_features(images: Iterable, model=None, batch_size: int = BATCH_SIZE) -> np.ndarray:
    """(N, D) float64 features of ``images`` (uint8 HxWx3 or float in [0,1])."""
    ext = FeatureExtractor(model, batch_size)
    for img in images:
        ext.add(img)
    return ext.features()


def fid_from_features(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID between two feature sets (rows = images), with pytorch-fid's Frechet distance."""
    from ..compat import ensure_torchvision_importable

    ensure_torchvision_importable()  # pytorch_fid imports torchvision
    from pytorch_fid.fid_score import calculate_frechet_distance

    f1, f2 = np.asarray(f1, dtype=np.float64), np.asarray(f2, dtype=np.float64)
    for name, f in (("first", f1), ("second", f2)):
        if f.ndim != 2 or f.shape[0] < 2:
            raise MetricInputError(f"FID needs at least 2 images per set; the {name} set has "
                                   f"features of shape {f.shape}")
    if f1.shape[1] != f2.shape[1]:
        raise MetricInputError(f"FID feature sizes differ: {f1.shape[1]} vs {f2.shape[1]}")
    mu1, mu2 = np.mean(f1, axis=0), np.mean(f2, axis=0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    with warnings.catch_warnings():  # pytorch-fid 0.3.0 passes sqrtm's deprecated `disp`
        warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*disp.*")
        return float(calculate_frechet_distance(mu1, s1, mu2, s2))


def fid_from_images(list_a, list_b, model=None, batch_size: int = BATCH_SIZE) -> float:
    """FID between two lists of images (default backbone: pytorch-fid's FID Inception)."""
    if model is None:
        model = fid_inception()
    return fid_from_features(fid_features(list_a, model, batch_size),
                             fid_features(list_b, model, batch_size))


class FIDAccumulator:
    """Set-protocol state: features of predictions and ground truths, added pair by pair."""

    def __init__(self, model=None, batch_size: int = BATCH_SIZE):
        model = model if model is not None else fid_inception()
        self.pred = FeatureExtractor(model, batch_size)
        self.gt = FeatureExtractor(model, batch_size)

    def update(self, pred, gt, mask=None) -> None:
        self.pred.add(pred)
        self.gt.add(gt)

    def result(self) -> float:
        return fid_from_features(self.pred.features(), self.gt.features())


@protocol("fid[pytorch-fid,2048]", "fid", "lower", kind="set", backend="torch",
          accumulator=lambda model=None: FIDAccumulator(model))
def fid_pytorch_fid(preds, gts, masks=None, model=None, batch_size: int = BATCH_SIZE) -> float:
    """FID (pytorch-fid 0.3.0): Inception pool3 2048-d features over the whole test set.

    Predictions vs ground truths, batches of 50, bilinear resize to 299 inside the network.
    Moves with: image count, file format (PNG vs JPEG), resize (pytorch-fid vs clean-fid),
    which reference set (test ground truth vs training set), Inception weights.
    """
    return fid_from_images(preds, gts, model=model, batch_size=batch_size)

