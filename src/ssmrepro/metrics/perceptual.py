"""LPIPS protocols (lpips 0.1.4, version 0.1) built without any download.

``lpips.LPIPS(net=..., version='0.1', pretrained=True, pnet_rand=True)`` takes its linear layers
from the lpips wheel and builds a random backbone, whose convolutions are then overwritten with
the ImageNet weights read by :func:`ssmrepro.pretrained.torchvision_backbone` (or the one-line
:class:`~ssmrepro.pretrained.MissingPretrainedWeights`). The result is the same module as
``lpips.LPIPS(net=...)`` with torchvision's weights. One model per (net, device) per process.
"""

from __future__ import annotations

import threading
import warnings

import numpy as np

from .protocol import protocol

_BACKBONE_FILE = {"vgg": "vgg16", "alex": "alexnet"}
_models: dict = {}
_lock = threading.Lock()


def _default_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def lpips_model(net: str, device=None):
    """The cached ``lpips.LPIPS`` for ``net`` ('vgg' or 'alex'), version 0.1, eval mode."""
    if net not in _BACKBONE_FILE:
        raise KeyError(f"unknown LPIPS net {net!r}; known: {', '.join(sorted(_BACKBONE_FILE))}")
    import torch

    device = torch.device(device) if device is not None else _default_device()
    key = (net, str(device))
    with _lock:
        if key in _models:
            return _models[key]
        from .. import pretrained

        pretrained.require(_BACKBONE_FILE[net])  # fail before the (slow) construction
        pretrained.require(f"lpips_{net}")
        backbone = pretrained.torchvision_backbone(_BACKBONE_FILE[net])
        from ..compat import ensure_torchvision_importable

        ensure_torchvision_importable()
        import lpips

        # pnet_rand=True: the backbone is built randomly (no download), then overwritten; keep
        # the caller's random stream untouched.
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():
            warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
            model = lpips.LPIPS(net=net, version="0.1", pretrained=True, pnet_rand=True,
                                verbose=False)
        load_backbone(model, backbone)
        model = model.to(device).eval().requires_grad_(False)
        _models[key] = model
        return model


def clear_model_cache() -> None:
    """Forget the cached LPIPS models (after the weight files changed)."""
    with _lock:
        _models.clear()


def load_backbone(model, backbone) -> None:
    """Copy a torchvision VGG/AlexNet's ``features`` into an lpips model's ``net.sliceK``."""
    features = backbone.features.state_dict()
    mapped = {}
    for slice_name, block in model.net.named_children():
        for idx, _ in block.named_children():
            for pname in ("weight", "bias"):
                src = f"{idx}.{pname}"
                if src in features:
                    mapped[f"{slice_name}.{idx}.{pname}"] = features[src]
    model.net.load_state_dict(mapped, strict=True)


def to_lpips_input(img: np.ndarray, device):
    """uint8 HxWx3 -> float32 (1,3,H,W) in [-1, 1] (``x / 255 * 2 - 1``)."""
    import torch

    t = torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None].float().div(255)
    return (t * 2 - 1).to(device)


def lpips_distance(pred: np.ndarray, gt: np.ndarray, net: str, device=None) -> float:
    import torch

    model = lpips_model(net, device)
    dev = next(model.parameters()).device
    with torch.no_grad():
        return float(model(to_lpips_input(pred, dev), to_lpips_input(gt, dev)).item())


@protocol("lpips[vgg,v0.1]", "lpips", "lower", backend="torch",
          prepare=lambda: lpips_model("vgg"))
def lpips_vgg(pred, gt, mask=None, ctx=None) -> float:
    """LPIPS 0.1 with the VGG-16 backbone (torchvision ImageNet weights), inputs in [-1, 1].

    Inputs are the uint8 images (x/255*2-1). SEM-Net's script feeds the float composite without
    uint8 rounding (a small difference). Moves with: net (vgg vs alex), version (0.0 vs 0.1),
    input range ([0,1] vs [-1,1]), backbone weights.
    """
    return lpips_distance(pred, gt, "vgg")


@protocol("lpips[alex,v0.1]", "lpips", "lower", backend="torch",
          prepare=lambda: lpips_model("alex"))
def lpips_alex(pred, gt, mask=None, ctx=None) -> float:
    """LPIPS 0.1 with the AlexNet backbone (torchvision ImageNet weights), inputs in [-1, 1].

    Moves with: net (vgg vs alex), version, input range, backbone weights.
    """
    return lpips_distance(pred, gt, "alex")
