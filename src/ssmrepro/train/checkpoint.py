"""Checkpoints that survive preemption: atomic writes, checksums, safe loading, RNG states.

File format (``ssmrepro.checkpoint/1``): an ordinary ``torch.save`` file holding
``{"format", "sha256", "nbytes", "payload"}`` where ``payload`` is a uint8 tensor with the bytes
of a second ``torch.save`` file (the state) and ``sha256`` its checksum. Both levels load with
``torch.load(weights_only=True)``: a state holds only tensors, numbers, strings, lists and dicts
(RNG states included, see :func:`capture_rng_state`), never pickled objects.

- :func:`save_checkpoint` writes a temporary file in the destination folder, flushes and fsyncs
  it, then ``os.replace``-s it over the destination (and fsyncs the folder). A failure at any
  point (disk full, quota, I/O error, a kill) leaves the previous checkpoint as it was.
- :func:`load_checkpoint` refuses a file that needs unpickling (:class:`UnsafeCheckpoint`) and
  detects truncation or corruption (:class:`CorruptCheckpoint`); both name the file.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import random
from collections import OrderedDict
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import torch

from ..atomic import atomic_path

try:
    from ssmrepro.errors import UserError
except ImportError:  # pragma: no cover - the project's error base is optional here
    UserError = RuntimeError  # type: ignore[misc,assignment]

FORMAT = "ssmrepro.checkpoint/1"


class CheckpointError(UserError):
    """A checkpoint cannot be written or read (one-line message naming the file)."""


class CorruptCheckpoint(CheckpointError):
    """Truncated or corrupted file (checksum mismatch, broken archive)."""


class UnsafeCheckpoint(CheckpointError):
    """The file needs arbitrary unpickling; it is refused."""


class CheckpointWriteError(CheckpointError):
    """Writing failed; the previous checkpoint at the destination is intact."""


# ----------------------------------------------------------------------------------------------
# writing


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some filesystems refuse fsync on directories
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, write) -> Path:
    """Write a file atomically: ``write(fileobj)`` into a temporary file in the same folder,
    fsync, ``os.replace`` onto ``path`` (``ssmrepro.atomic.atomic_path``), then fsync the folder.

    On any failure the temporary file is removed, ``path`` is untouched, and an ``OSError`` is
    re-raised as :class:`CheckpointWriteError`.
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            write(f)
    except OSError as e:
        why = os.strerror(e.errno) if e.errno else str(e)
        raise CheckpointWriteError(
            f"could not write {path}: {why}; the previous file there (if any) is intact"
        ) from e
    _fsync_dir(path.parent)
    return path


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Delete temporary files left by a write that was killed (``.NAME.*.tmp``)."""
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for p in folder.glob(".*.tmp"):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                removed.append(p)
    return removed


def plain(obj: Any, where: str = "state") -> Any:
    """``obj`` with only the types ``torch.load(weights_only=True)`` accepts (str/int/float
    subclasses such as ``torch.__version__`` become plain values); anything else is a TypeError."""
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, Mapping):
        out = type(obj)() if type(obj) in (dict, OrderedDict) else {}
        for k, v in obj.items():
            out[plain(k, where)] = plain(v, f"{where}[{k!r}]")
        meta = getattr(obj, "_metadata", None)  # module versions of a state_dict
        if meta is not None:
            out._metadata = plain(meta, f"{where}._metadata")
        return out
    if isinstance(obj, (list, tuple)):
        seq = [plain(v, f"{where}[{i}]") for i, v in enumerate(obj)]
        return seq if isinstance(obj, list) else tuple(seq)
    if obj is None or type(obj) in (bool, int, float, str, complex, torch.dtype, torch.device):
        return obj
    for base in (bool, int, float, str):
        if isinstance(obj, base):
            return base(obj)
    if isinstance(obj, np.generic):
        return obj.item()
    raise TypeError(f"{where} holds a {type(obj).__name__}, which a weights_only checkpoint cannot store")


def save_checkpoint(path: str | os.PathLike, state: Mapping[str, Any]) -> Path:
    """Serialise ``state`` with a checksum and write it atomically to ``path``."""
    inner = io.BytesIO()
    torch.save(plain(dict(state)), inner)
    buf = inner.getbuffer()
    try:
        digest = hashlib.sha256(buf).hexdigest()
        payload = torch.frombuffer(buf, dtype=torch.uint8) if len(buf) else torch.empty(0, dtype=torch.uint8)
        outer = {"format": FORMAT, "sha256": digest, "nbytes": len(buf), "payload": payload}
        result = atomic_write_bytes(path, lambda f: torch.save(outer, f))
        del payload, outer
    finally:
        del buf
    return result


# ----------------------------------------------------------------------------------------------
# reading


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".strip()


def _torch_load(src, path: Path, what: str):
    try:
        return torch.load(src, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - classify every failure into one clear message
        msg = str(e)
        if "Weights only load failed" in msg or "weights_only" in msg and "Unsupported" in msg:
            raise UnsafeCheckpoint(
                f"refusing to load {path}: {what} needs arbitrary unpickling, which "
                "torch.load(weights_only=True) rejects; ssmrepro checkpoints never do "
                "(not written by ssmrepro, or tampered with)"
            ) from None
        raise CorruptCheckpoint(
            f"checkpoint {path} is truncated or corrupted ({_first_line(e)}); "
            "delete it to start over or restore a good copy"
        ) from None


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read and verify a checkpoint written by :func:`save_checkpoint`; tensors land on CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    outer = _torch_load(str(path), path, "the file")
    if not isinstance(outer, dict) or outer.get("format") != FORMAT or "payload" not in outer:
        raise CheckpointError(
            f"{path} is not an ssmrepro checkpoint ({FORMAT} with a checksum); "
            "it cannot be verified and is not used"
        )
    payload = outer["payload"]
    if not isinstance(payload, torch.Tensor) or payload.dtype != torch.uint8:
        raise CorruptCheckpoint(f"checkpoint {path} is corrupted (payload is not a byte tensor)")
    data = payload.contiguous().numpy()
    if data.size != outer.get("nbytes"):
        raise CorruptCheckpoint(
            f"checkpoint {path} is truncated ({data.size} payload bytes, {outer.get('nbytes')} expected)"
        )
    digest = hashlib.sha256(data).hexdigest()
    if digest != outer.get("sha256"):
        raise CorruptCheckpoint(
            f"checkpoint {path} is corrupted: sha256 {digest[:16]}... does not match the stored "
            f"{str(outer.get('sha256'))[:16]}...; delete it to start over or restore a good copy"
        )
    state = _torch_load(io.BytesIO(data.tobytes()), path, "its payload")
    if not isinstance(state, dict):
        raise CorruptCheckpoint(f"checkpoint {path} is corrupted (state is not a mapping)")
    return state


def load_model_weights(path: str | os.PathLike, key: str = "model") -> dict[str, torch.Tensor]:
    """The model state dict of a verified checkpoint (``final.pt`` or ``last.pt``)."""
    state = load_checkpoint(path)
    if key not in state:
        raise CheckpointError(f"checkpoint {path} has no {key!r} entry")
    return state[key]


# ----------------------------------------------------------------------------------------------
# random number generator states, as tensors and plain values (weights_only-safe)


def capture_rng_state() -> dict[str, Any]:
    """The states of python ``random``, numpy's global generator, torch CPU and every CUDA device."""
    version, internal, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state()
    state = {
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss_next": gauss},
        "numpy": {"name": str(np_name), "keys": torch.from_numpy(np_keys.astype(np.int64)),
                  "pos": int(np_pos), "has_gauss": int(np_has_gauss), "cached_gaussian": float(np_gauss)},
        "torch": torch.get_rng_state(),
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = [s.cpu() for s in torch.cuda.get_rng_state_all()]
    return state


def restore_rng_state(state: Mapping[str, Any]) -> None:
    """Inverse of :func:`capture_rng_state`."""
    py = state["python"]
    random.setstate((py["version"], tuple(int(v) for v in py["state"].tolist()), py["gauss_next"]))
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def seed_everything(seed: int) -> None:
    """Seed python ``random``, numpy's global generator and torch (CPU and CUDA)."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def derive_seed(*parts: int | str) -> int:
    """A 63-bit seed derived from the parts (stable across processes and platforms)."""
    h = hashlib.sha256(repr(tuple(parts)).encode()).digest()
    return int.from_bytes(h[:8], "little") & (2**63 - 1)


@contextlib.contextmanager
def isolated_rng(seed: int) -> Iterator[None]:
    """Seed the global python/numpy/torch generators for the block; restore them afterwards."""
    saved_py = random.getstate()
    saved_np = np.random.get_state()
    saved_torch = torch.get_rng_state()
    seed_everything(seed)
    try:
        yield
    finally:
        random.setstate(saved_py)
        np.random.set_state(saved_np)
        torch.set_rng_state(saved_torch)
