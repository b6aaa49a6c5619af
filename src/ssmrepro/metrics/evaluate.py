"""Score predictions against ground truths under named protocols: arrays or folders.

Per-image protocols give the mean over images; set protocols (FID) one value over the set.
Pairs are streamed (a folder is never held in memory whole). ``workers > 1`` runs the plain
CPU protocols (PSNR, SSIM, L1, RealBlur) in worker processes; the values are the same numbers
as with one worker (the same functions on the same arrays). Networks (LPIPS, FID) run once in the
calling process.
"""

from __future__ import annotations

import math
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from ..registry import UnknownName
from .image import to_mask, to_uint8
from .protocol import MetricInputError, Protocol, get_protocol

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


# --- protocols -----------------------------------------------------------------------------------

def resolve_protocols(protocols) -> list[Protocol]:
    """Protocol objects for ids (or objects); duplicates dropped; unknown ids list the known."""
    if protocols is None or isinstance(protocols, (str, Protocol)):
        protocols = [] if protocols is None else [protocols]
    out: list[Protocol] = []
    for p in protocols:
        if not isinstance(p, Protocol):
            try:
                p = get_protocol(p)
            except UnknownName as exc:
                raise MetricInputError(str(exc)) from None
        if p.id not in [q.id for q in out]:
            out.append(p)
    if not out:
        from .protocol import protocol_ids

        raise MetricInputError("no metric protocol given; known: " + ", ".join(protocol_ids()))
    return out


# --- pair loading -------------------------------------------------------------------------------

def _size(a: np.ndarray) -> str:
    return f"{a.shape[1]}x{a.shape[0]}"  # width x height, as image tools print it


def check_pair(pred, gt, mask=None, name: str = "image"):
    """(pred uint8, gt uint8, mask bool|None) after the shared conversion; sizes must agree."""
    p = to_uint8(pred, f"{name} (pred)")
    g = to_uint8(gt, f"{name} (gt)")
    if p.shape != g.shape:
        raise MetricInputError(f"{name}: pred is {_size(p)}, gt is {_size(g)} (width x height)")
    m = None if mask is None else to_mask(mask, g.shape[:2], f"{name} (mask)")
    return p, g, m


class _ArrayPairs:
    def __init__(self, pred: Sequence, gt: Sequence, masks: Sequence | None, names: list[str]):
        self.pred, self.gt, self.masks, self.names = pred, gt, masks, names

    def __len__(self) -> int:
        return len(self.names)

    def __call__(self, i: int):
        m = None if self.masks is None else self.masks[i]
        return check_pair(self.pred[i], self.gt[i], m, self.names[i])


def read_image(path: Path) -> np.ndarray:
    """An image file as HxWx3 uint8 RGB, by the project's one stated rule
    (``ssmrepro.data.imageio.read_image``: grayscale replicated, alpha composited over white,
    16-bit rounded as v/257, anything else refused)."""
    from ..data.imageio import ImageReadError
    from ..data.imageio import read_image as read_rgb8

    try:
        return read_rgb8(path)
    except ImageReadError as exc:
        raise MetricInputError(str(exc).splitlines()[0]) from None


def read_mask(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("L"))
    except Exception as exc:  # noqa: BLE001
        raise MetricInputError(f"cannot read mask {path}: {exc}") from None


class _FilePairs:
    def __init__(self, pred: list[Path], gt: list[Path], masks: list[Path] | None):
        self.pred, self.gt, self.masks = pred, gt, masks
        self.names = [p.name for p in pred]

    def __len__(self) -> int:
        return len(self.pred)

    def __call__(self, i: int):
        m = None if self.masks is None else read_mask(self.masks[i])
        return check_pair(read_image(self.pred[i]), read_image(self.gt[i]), m, self.names[i])


# --- scoring ------------------------------------------------------------------------------------

def _score_pair(protocols: list[Protocol], pred, gt, mask, name: str) -> list[float]:
    ctx: dict = {}
    values = []
    for p in protocols:
        if p.needs_mask and mask is None:
            raise MetricInputError(f"{p.id} needs masks (none given)")
        try:
            values.append(float(p.fn(pred, gt, mask, ctx)))
        except MetricInputError as exc:
            raise MetricInputError(f"{name}: {exc}") from None
    return values


_worker_state: dict = {}


def _worker_init(loader, protocol_ids: list[str]) -> None:
    _worker_state["loader"] = loader
    _worker_state["protocols"] = [get_protocol(pid) for pid in protocol_ids]


def _worker_chunk(indices: list[int]) -> list[tuple[int, list[float]]]:
    loader, protocols = _worker_state["loader"], _worker_state["protocols"]
    out = []
    for i in indices:
        p, g, m = loader(i)
        out.append((i, _score_pair(protocols, p, g, m, loader.names[i])))
    return out


def _pool_scores(loader, protocols: list[Protocol], workers: int) -> np.ndarray:
    n = len(loader)
    # Not "fork": this process has threads (torch's, a test runner's), and a child forked while
    # one of them holds a lock can hang for ever. forkserver children start from a clean process.
    method = "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"
    chunk = max(1, math.ceil(n / (workers * 4)))
    chunks = [list(range(s, min(n, s + chunk))) for s in range(0, n, chunk)]
    scores = np.empty((n, len(protocols)))
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context(method),
                             initializer=_worker_init,
                             initargs=(loader, [p.id for p in protocols])) as ex:
        for part in ex.map(_worker_chunk, chunks):
            for i, vals in part:
                scores[i] = vals
    return scores


def _evaluate(loader, protocols, *, workers: int = 1, per_image: bool = False,
              fid_model=None, progress: Callable[[int, int], None] | None = None) -> dict:
    ps = resolve_protocols(protocols)
    n = len(loader)
    if n == 0:
        raise MetricInputError("no images to evaluate")
    per = [p for p in ps if p.kind == "per_image"]
    pooled = [p for p in per if p.backend == "numpy"] if workers > 1 else []
    local = [p for p in per if p not in pooled]
    sets = [p for p in ps if p.kind == "set"]

    for p in local:  # load networks first: missing weights fail before any work
        if p.prepare is not None:
            p.prepare()
    acc = {p.id: (p.accumulator(model=fid_model) if p.accumulator is not None
                  else _CollectAll(p)) for p in sets}

    scores: dict[str, np.ndarray] = {}
    if pooled:
        pooled_scores = _pool_scores(loader, pooled, workers)
        for j, p in enumerate(pooled):
            scores[p.id] = pooled_scores[:, j]
    if local or sets:
        local_scores = np.empty((n, len(local)))
        for i in range(n):
            pred, gt, mask = loader(i)
            local_scores[i] = _score_pair(local, pred, gt, mask, loader.names[i])
            for a in acc.values():
                a.update(pred, gt, mask)
            if progress is not None:
                progress(i + 1, n)
        for j, p in enumerate(local):
            scores[p.id] = local_scores[:, j]

    metrics = {}
    for p in ps:
        value = float(np.mean(scores[p.id])) if p.kind == "per_image" else float(acc[p.id].result())
        metrics[p.id] = {"value": value, "protocol": p.id, "name": p.name, "better": p.better,
                         "kind": p.kind, "n_images": n}
    out = {"n_images": n, "protocols": [p.id for p in ps], "metrics": metrics}
    if per_image:
        out["per_image"] = {"names": list(loader.names),
                            **{pid: [float(v) for v in s] for pid, s in scores.items()}}
    return out


class _CollectAll:
    """Accumulator for a set protocol without its own: keep the pairs, call it once."""

    def __init__(self, p: Protocol):
        self.p, self.preds, self.gts, self.masks = p, [], [], []

    def update(self, pred, gt, mask=None) -> None:
        self.preds.append(pred)
        self.gts.append(gt)
        self.masks.append(mask)

    def result(self) -> float:
        return self.p.fn(self.preds, self.gts, self.masks)


def evaluate_pairs(pred: Sequence, gt: Sequence, masks: Sequence | None = None,
                   protocols=None, *, names: Sequence[str] | None = None, workers: int = 1,
                   per_image: bool = False, fid_model=None) -> dict:
    """Score ``pred[i]`` against ``gt[i]`` (HxWx3 uint8, or float in [0,1]; numpy or torch).

    ``masks[i]``: HxW hole mask (True/1/255 = hole) for the protocols that need one.
    Returns ``{"n_images", "protocols", "metrics": {id: {"value", "protocol", "name", "better",
    "kind", "n_images"}}}`` plus ``"per_image"`` (names and values) when asked.
    """
    if len(pred) != len(gt):
        raise MetricInputError(f"pred has {len(pred)} images, gt has {len(gt)}")
    if masks is not None and len(masks) != len(gt):
        raise MetricInputError(f"{len(masks)} masks for {len(gt)} images")
    names = [str(s) for s in names] if names is not None else [f"#{i}" for i in range(len(gt))]
    if len(names) != len(gt):
        raise MetricInputError(f"{len(names)} names for {len(gt)} images")
    return _evaluate(_ArrayPairs(pred, gt, masks, names), protocols, workers=workers,
                     per_image=per_image, fid_model=fid_model)


# --- folders ------------------------------------------------------------------------------------

def _list_images(folder, what: str) -> dict[str, Path]:
    d = Path(folder)
    if not d.is_dir():
        raise MetricInputError(f"{what} folder {d} does not exist")
    files = sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise MetricInputError(f"no images in {what} folder {d} "
                               f"(looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
    by_stem: dict[str, Path] = {}
    for p in files:
        if p.stem in by_stem:
            raise MetricInputError(f"{what} folder {d} has two images named {p.stem}: "
                                   f"{by_stem[p.stem].name} and {p.name}")
        by_stem[p.stem] = p
    return by_stem


def _few(names, k: int = 5) -> str:
    names = sorted(names)
    more = f" (and {len(names) - k} more)" if len(names) > k else ""
    return ", ".join(names[:k]) + more


def pair_files(pred_dir, gt_dir, mask_dir=None):
    """Pair the images of two folders by file name (without extension); masks likewise."""
    pred, gt = _list_images(pred_dir, "pred"), _list_images(gt_dir, "gt")
    only_pred, only_gt = set(pred) - set(gt), set(gt) - set(pred)
    if only_pred or only_gt:
        parts = [f"pred folder has {len(pred)} images, gt folder has {len(gt)}"]
        if only_pred:
            parts.append(f"only in pred: {_few(only_pred)}")
        if only_gt:
            parts.append(f"only in gt: {_few(only_gt)}")
        raise MetricInputError("; ".join(parts))
    stems = sorted(pred)
    masks = None
    if mask_dir is not None:
        mk = _list_images(mask_dir, "mask")
        missing = set(stems) - set(mk)
        if missing:
            raise MetricInputError(f"no mask in {mask_dir} for {len(missing)} images: "
                                   f"{_few(missing)}")
        masks = [mk[s] for s in stems]
    return [pred[s] for s in stems], [gt[s] for s in stems], masks


def metrics_for_dirs(pred_dir, gt_dir, mask_dir=None, protocol_ids=None, *, workers: int = 1,
                     per_image: bool = False, fid_model=None) -> dict:
    """Score the images of ``pred_dir`` against the same-named images of ``gt_dir``.

    The result of :func:`evaluate_pairs` plus the folders and the file formats seen (FID moves
    with the format: score PNG files).
    """
    ps = resolve_protocols(protocol_ids)
    pred, gt, masks = pair_files(pred_dir, gt_dir, mask_dir)
    out = _evaluate(_FilePairs(pred, gt, masks), ps, workers=workers, per_image=per_image,
                    fid_model=fid_model)
    out["pred_dir"], out["gt_dir"] = str(pred_dir), str(gt_dir)
    out["mask_dir"] = None if mask_dir is None else str(mask_dir)
    out["file_formats"] = sorted({p.suffix.lower().lstrip(".") for p in pred + gt})
    return out


def default_workers() -> int:
    """Worker processes to use when asked for "all": the CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)
