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

``ssmrepro export-weights RUN_OR_FILE --card CARD --out FILE`` goes back: our weights (a run folder,
``final.pt``/``last.pt``, or an imported file) in the reference container, keys in the reference
order: ``{"params": ...}`` for EVSSM (``torch.load(p)['params']``, ``strict=True`` in the authors'
``test.py``), ``{"iteration": N, "generator": ...}`` for SEM-Net (the authors' ``load()`` reads
both keys). SEM-Net's unused reference modules are *not* written: the authors' loader uses
``strict=False``, so they keep the reference's initial values, and its forward never reads them
(the fixture tests prove the outputs equal without them). Inventing values for them would only
make the file look complete.
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
        found = re.search(r"GLOBAL ([\w.]+)", re.sub(r"\x1b\[[0-9;]*m", "", str(exc)))
        what = f" ({found.group(1)})" if found else ""
        raise ConversionError(f"{path}: refused: the file needs unpickling code{what}, which is "
                              "never loaded (weights-only)") from None
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


IMPORTED_FORMAT = "ssmrepro.imported/1"
CHECKPOINT_FORMAT = "ssmrepro.checkpoint/1"


def read_weights(path: Path, card: str, scale: str = "paper",
                 model: torch.nn.Module | None = None) -> tuple[dict[str, torch.Tensor], dict]:
    """Our state dict for ``card`` at ``scale`` from any weights this project knows, strictly:
    an authors' checkpoint (reference container and keys), a file ``import-weights`` wrote, one of
    our checkpoints (``final.pt``, ``last.pt``) or a run folder (its ``final.pt``).
    ``model``: the card's model already built (its keys and shapes are the target).
    Returns (state dict, info: ``kind``, ``source``, ``dropped_reference_keys``, ``step``)."""
    from .cards import load_card

    path = Path(path)
    if path.is_dir():
        if not (path / "final.pt").exists():
            raise ConversionError(f"{path}: a folder without final.pt (not a finished run)")
        path = path / "final.pt"
    c = load_card(card)
    ours = (model if model is not None else c.build(scale)).state_dict()
    obj = load_weights_only(path)
    info: dict = {"source": str(path), "dropped_reference_keys": [], "step": None}
    fmt = obj.get("format") if isinstance(obj, dict) else None
    if fmt == CHECKPOINT_FORMAT:  # ours, checksummed: verified by the checkpoint module
        from .train.checkpoint import load_checkpoint

        state = load_checkpoint(path)
        ref, info["kind"], info["step"] = state.get("model"), "ssmrepro checkpoint", state.get("step")
        if not isinstance(ref, dict):
            raise ConversionError(f"{path}: an ssmrepro checkpoint without model weights")
    elif fmt == IMPORTED_FORMAT:
        ref, info["kind"], info["step"] = obj.get("model"), "imported", obj.get("step")
        info["dropped_reference_keys"] = list(obj.get("dropped_reference_keys", []))
        if not isinstance(ref, dict):
            raise ConversionError(f"{path}: an imported file without model weights")
    else:
        ref, info["kind"] = _state_dict(obj, c.family, path), "reference"
        if isinstance(obj, dict) and isinstance(obj.get("iteration"), int):
            info["step"] = obj["iteration"]
    sd, dropped = reference_to_ours(ref, ours, c.family, where=str(path))
    if info["kind"] == "reference":
        info["dropped_reference_keys"] = dropped
    return sd, info


def import_weights(path: Path, card: str, out: Path, scale: str = "paper") -> Path:
    from .atomic import atomic_path
    from .cards import load_card

    c = load_card(card)
    model = c.build(scale)
    obj = load_weights_only(path)
    ref = _state_dict(obj, c.family, path)
    sd, dropped = reference_to_ours(ref, model.state_dict(), c.family, where=str(path))
    model.load_state_dict(sd, strict=True)
    step = obj.get("iteration") if isinstance(obj, dict) else None
    with atomic_path(out) as tmp:
        torch.save({"format": IMPORTED_FORMAT, "card": card, "source": str(path),
                    "dropped_reference_keys": dropped,
                    "step": step if isinstance(step, int) else None, "model": sd}, tmp)
    return out


def export_reference(sd: dict[str, torch.Tensor], family: str, iteration: int = 0) -> dict:
    """Our weights in the reference container, keys in the reference order (ours is the reference
    order minus SEM-Net's unused modules). SEM-Net's unused modules are left out: the reference
    loads its generator with ``strict=False`` and never reads them (see the module docstring)."""
    if family not in CONTAINER_KEYS:
        raise ConversionError(f"no reference layout for model family {family!r}; "
                              f"known: {', '.join(CONTAINER_KEYS)}")
    out: dict = {CONTAINER_KEYS[family][0]: {k: v.detach().clone() for k, v in sd.items()}}
    if family == "sem_net":  # the reference's load() reads data['iteration'] after the weights
        out = {"iteration": int(iteration), **out}
    return out


def export_weights(src: Path, card: str, out: Path, scale: str = "paper") -> Path:
    """``ssmrepro export-weights``: a run folder or weights file -> the reference container."""
    from .atomic import atomic_path
    from .cards import load_card

    c = load_card(card)
    model = c.build(scale)
    sd, info = read_weights(Path(src), card, scale, model=model)
    model.load_state_dict(sd, strict=True)  # the weights are exactly this card's
    obj = export_reference(sd, c.family, iteration=info.get("step") or 0)
    with atomic_path(out) as tmp:
        torch.save(obj, tmp)
    return out
