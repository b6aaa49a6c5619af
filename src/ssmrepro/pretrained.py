"""Pretrained weight files the project may need: where they live, loading them, clear errors.

No network is used: every backbone is built empty and its weights are read from the file that
torch itself would look for, ``$TORCH_HOME/hub/checkpoints/<file>`` (``torch.hub.get_dir()``;
default ``~/.cache/torch/hub/checkpoints``). A missing file raises
:class:`MissingPretrainedWeights` with one line naming the file, the folder and the URL.
On a machine with internet, ``SSMREPRO_ALLOW_DOWNLOAD=1`` lets :func:`require` fetch a missing
file with torch's own downloader (``torch.hub.download_url_to_file``, hash prefix checked).

| key | file | used by |
|---|---|---|
| ``vgg16`` | ``vgg16-397923af.pth`` | LPIPS vgg; VGG-16 perceptual loss (SEM-Net paper) |
| ``vgg19`` | ``vgg19-dcbb9e9d.pth`` | perceptual and style losses (SEM-Net code: VGG-19) |
| ``alexnet`` | ``alexnet-owt-7be5be79.pth`` | LPIPS alex |
| ``inception_fid`` | ``pt_inception-2015-12-05-6726825d.pth`` | FID (pytorch-fid) |
| ``lpips_vgg``, ``lpips_alex`` | ``lpips/weights/v0.1/{vgg,alex}.pth`` | LPIPS linear layers |

The lpips linear layers ship in the lpips wheel (their folder is inside the installed package).
"""

from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass
from pathlib import Path

from .errors import UserError

ALLOW_DOWNLOAD_ENV = "SSMREPRO_ALLOW_DOWNLOAD"


class MissingPretrainedWeights(UserError):
    """A pretrained weight file is not on this machine; the message says where to put it."""


@dataclass(frozen=True)
class WeightFile:
    key: str
    file: str
    url: str
    sha256_prefix: str | None  # torch hub convention: the hex after the last '-' of the name
    used_by: str
    location: str  # "torch_hub" ($TORCH_HOME/hub/checkpoints) or "lpips_package"
    builder: str | None = None  # torchvision model function for backbones

    def folder(self) -> Path:
        if self.location == "torch_hub":
            return torch_checkpoint_dir()
        return _lpips_weights_dir()

    def path(self) -> Path:
        return self.folder() / self.file


_LPIPS_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/"

INVENTORY: dict[str, WeightFile] = {
    w.key: w
    for w in [
        WeightFile("vgg16", "vgg16-397923af.pth",
                   "https://download.pytorch.org/models/vgg16-397923af.pth", "397923af",
                   "lpips[vgg,v0.1] backbone; VGG-16 perceptual loss (SEM-Net paper)",
                   "torch_hub", "vgg16"),
        WeightFile("vgg19", "vgg19-dcbb9e9d.pth",
                   "https://download.pytorch.org/models/vgg19-dcbb9e9d.pth", "dcbb9e9d",
                   "VGG-19 perceptual and style losses (SEM-Net reference code)",
                   "torch_hub", "vgg19"),
        WeightFile("alexnet", "alexnet-owt-7be5be79.pth",
                   "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth", "7be5be79",
                   "lpips[alex,v0.1] backbone", "torch_hub", "alexnet"),
        WeightFile("inception_fid", "pt_inception-2015-12-05-6726825d.pth",
                   "https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/"
                   "pt_inception-2015-12-05-6726825d.pth", "6726825d",
                   "fid[pytorch-fid,2048] (pytorch-fid's FID Inception)", "torch_hub"),
        WeightFile("lpips_vgg", "vgg.pth", _LPIPS_URL + "vgg.pth", "a78928a0",
                   "lpips[vgg,v0.1] linear layers (ship in the lpips wheel)", "lpips_package"),
        WeightFile("lpips_alex", "alex.pth", _LPIPS_URL + "alex.pth", "df73285e",
                   "lpips[alex,v0.1] linear layers (ship in the lpips wheel)", "lpips_package"),
    ]
}


def torch_checkpoint_dir() -> Path:
    """The folder torch's model downloads use: ``torch.hub.get_dir()/checkpoints``."""
    try:
        import torch.hub

        hub = torch.hub.get_dir()
    except ImportError:  # pragma: no cover - torch is a dependency
        home = os.environ.get("TORCH_HOME") or os.path.join(
            os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch")
        hub = os.path.join(home, "hub")
    return Path(hub) / "checkpoints"


def _lpips_weights_dir() -> Path:
    spec = importlib.util.find_spec("lpips")
    if spec is None or spec.origin is None:
        return Path("<lpips not installed>") / "weights" / "v0.1"
    return Path(spec.origin).parent / "weights" / "v0.1"


def _entry(name: str) -> WeightFile:
    if name in INVENTORY:
        return INVENTORY[name]
    for w in INVENTORY.values():
        if name == w.file and w.location == "torch_hub":
            return w
    known = ", ".join(sorted(INVENTORY)) + "; or a file name: " + ", ".join(
        w.file for w in INVENTORY.values() if w.location == "torch_hub")
    raise KeyError(f"unknown pretrained weights {name!r}; known: {known}")


def weights_status() -> list[dict]:
    """Every inventory entry with ``present`` and ``path`` (for ``ssmrepro env``)."""
    out = []
    for w in INVENTORY.values():
        p = w.path()
        present = p.is_file()
        out.append({
            "key": w.key, "file": w.file, "present": present, "path": str(p),
            "folder": str(p.parent), "size_bytes": p.stat().st_size if present else None,
            "url": w.url, "sha256_prefix": w.sha256_prefix, "used_by": w.used_by,
        })
    return out


def _missing_message(w: WeightFile, extra: str = "") -> str:
    return (f"missing pretrained weights {w.file}: put it in {w.folder()}{os.sep} "
            f"(download from {w.url}){extra}")


def require(name: str) -> Path:
    """Path of the weight file ``name`` (inventory key or file name), or a one-line error.

    With ``SSMREPRO_ALLOW_DOWNLOAD=1`` a missing torch-hub file is downloaded first.
    """
    w = _entry(name)
    p = w.path()
    if p.is_file():
        return p
    if w.location == "torch_hub" and os.environ.get(ALLOW_DOWNLOAD_ENV) == "1":
        import torch.hub

        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(w.url, str(p), hash_prefix=w.sha256_prefix,
                                           progress=False)
        except Exception as exc:  # noqa: BLE001 - reported in the one-line error
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise MissingPretrainedWeights(
                _missing_message(w, f"; download failed: {reason}")) from None
        if p.is_file():
            return p
    raise MissingPretrainedWeights(_missing_message(w))


def load_state_dict(name: str) -> dict:
    """The tensors of weight file ``name``, read with ``torch.load(weights_only=True)`` on CPU."""
    import torch

    return torch.load(require(name), map_location="cpu", weights_only=True)


_BACKBONES = {"vgg16", "vgg19", "alexnet"}


def torchvision_backbone(name: str, frozen: bool = True):
    """torchvision ``vgg16``/``vgg19``/``alexnet`` with ImageNet weights read from its file.

    The model is built on the meta device (no random initialisation, no download) and the
    file's tensors are assigned to it. Returned in eval mode; ``frozen`` turns off gradients.
    """
    if name not in _BACKBONES:
        raise KeyError(f"unknown backbone {name!r}; known: {', '.join(sorted(_BACKBONES))}")
    path = require(name)  # fail before building anything
    from .compat.torchvision_shim import import_torchvision

    import torch

    tv = import_torchvision()
    state = torch.load(path, map_location="cpu", weights_only=True)
    with torch.device("meta"):
        model = getattr(tv.models, INVENTORY[name].builder)(weights=None)
    model.load_state_dict(state, strict=True, assign=True)
    model.eval()
    if frozen:
        model.requires_grad_(False)
    return model


_fid_lock = threading.Lock()


def inception_for_fid(state_dict: dict | None = None):
    """pytorch-fid's ``InceptionV3([3])`` (2048-d pool3, bilinear resize to 299 inside).

    Weights come from ``pt_inception-2015-12-05-6726825d.pth`` (or ``state_dict``, e.g. random
    weights in tests). pytorch-fid builds the network with its own code; only its call to the
    downloader is replaced, for the duration of the construction, by the tensors read here.
    """
    from .compat import ensure_torchvision_importable

    import torch

    if state_dict is None:
        path = require("inception_fid")
        state_dict = torch.load(path, map_location="cpu", weights_only=True)
    ensure_torchvision_importable()
    import pytorch_fid.inception as fid_inception

    def from_file(*_args, **_kwargs):
        return state_dict

    with _fid_lock, torch.random.fork_rng(devices=[]):
        original = fid_inception.load_state_dict_from_url
        fid_inception.load_state_dict_from_url = from_file
        try:
            model = fid_inception.InceptionV3([fid_inception.InceptionV3.BLOCK_INDEX_BY_DIM[2048]])
        finally:
            fid_inception.load_state_dict_from_url = original
    return model.eval()
