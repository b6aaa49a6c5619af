"""``ssmrepro import-weights``: the authors' checkpoints into our cards' weights, strictly; and the
export back to the reference layout.

- EVSSM (kkkls/EVSSM, BasicSR style): weights under ``params`` (or ``params_ema``); our parameter
  names equal the reference's, so every key must map one-to-one with equal shapes.
- SEM-Net (ChrisChen1023/SEM-Net): the generator under ``generator``, keys possibly prefixed with
  ``module.`` (DataParallel). The reference builds modules its forward never uses (every block's
  ``norm1_1``/``ffn1``, the refinement blocks, ``down*.proj``, ``output_before``: 820 tensors,
  56,661,696 parameters in the default config); those are named and dropped, nothing else may be.
Loading is weights-only (``torch.load(weights_only=True)``): a file that needs unpickling code is
refused. Any key left over, missing or of another shape is an error naming it.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import torch

from .errors import UserError

REFERENCE_UNUSED = {
    "sem_net": (r"\.norm1_1\.", r"\.ffn1\.", r"^refinement\.", r"^down[^.]*\.proj\.", r"^output_before\."),
    "evssm": (),
}
CONTAINER_KEYS = {"sem_net": ("generator",), "evssm": ("params", "params_ema")}


class ConversionError(UserError):
    pass


def load_weights_only(path: Path) -> dict:
    """torch.load with weights_only=True and one-line errors for the usual problems."""
    if not path.exists():
        raise ConversionError(f"{path}: no such file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).splitlines()[0] if str(exc) else ""
        raise ConversionError(f"{path}: refused: the file needs unpickling code, which is never "
                              f"loaded (weights-only). {first}"[:400]) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ConversionError(f"{path}: not a readable checkpoint (truncated or corrupted?): {first}") from None


def _state_dict(obj, family: str, path: Path) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in CONTAINER_KEYS[family]:
            if key in obj and isinstance(obj[key], dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ConversionError(f"{path}: no state dict of tensors found under "
                              f"{' or '.join(CONTAINER_KEYS[family])}")
    prefix = "module."
    if obj and all(k.startswith(prefix) for k in obj):
        obj = {k[len(prefix):]: v for k, v in obj.items()}
    return obj


def reference_to_ours(ref: dict[str, torch.Tensor], ours: dict[str, torch.Tensor], family: str,
                      where: str = "checkpoint") -> tuple[dict[str, torch.Tensor], list[str]]:
    """Map a reference state dict onto our keys. Returns (state dict, dropped reference keys)."""
    unused = [re.compile(p) for p in REFERENCE_UNUSED[family]]
    dropped = sorted(k for k in ref if k not in ours and any(p.search(k) for p in unused))
    leftover = sorted(set(ref) - set(ours) - set(dropped))
    missing = sorted(set(ours) - set(ref))
    if leftover or missing:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of our parameters are not in it (e.g. {', '.join(missing[:3])})")
        if leftover:
            parts.append(f"{len(leftover)} of its tensors map to nothing (e.g. {', '.join(leftover[:3])})")
        raise ConversionError(f"{where}: not a {family} checkpoint of this configuration: "
                              + "; ".join(parts))
    bad = [k for k in ours if tuple(ref[k].shape) != tuple(ours[k].shape)]
    if bad:
        k = bad[0]
        raise ConversionError(f"{where}: {len(bad)} shape mismatches, e.g. {k}: checkpoint "
                              f"{tuple(ref[k].shape)}, model {tuple(ours[k].shape)}")
    return {k: ref[k].to(ours[k].dtype) for k in ours}, dropped


def import_weights(path: Path, card: str, out: Path, scale: str = "paper") -> Path:
    from .atomic import atomic_path
    from .cards import load_card

    c = load_card(card)
    model = c.build(scale)
    ref = _state_dict(load_weights_only(path), c.family, path)
    sd, dropped = reference_to_ours(ref, model.state_dict(), c.family, where=str(path))
    model.load_state_dict(sd, strict=True)
    with atomic_path(out) as tmp:
        torch.save({"format": "ssmrepro.imported/1", "card": card, "source": str(path),
                    "dropped_reference_keys": dropped, "model": sd}, tmp)
    return out


def export_reference(sd: dict[str, torch.Tensor], family: str) -> dict:
    """Our weights in the reference container (the reference loads SEM-Net with strict=False, so
    the unused modules it builds keep their initial values there)."""
    return {CONTAINER_KEYS[family][0]: dict(sd)}
