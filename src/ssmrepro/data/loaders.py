"""Training and test datasets (map-style `torch.utils.data.Dataset`).

Items are dicts of float32 tensors in [0, 1] (contract 2):

- inpainting: ``{"image": (3,H,W), "mask": (1,H,W) in {0,1} (1 = hole), "name": str}``
- deblurring: ``{"input": (3,H,W) blurred, "target": (3,H,W) sharp, "name": str}``

Training data follow each paper's reference code:

- SEM-Net (inpainting): the image is centre-cropped to a square and resized to ``patch`` x
  ``patch`` (Pillow bicubic; the reference resizes with Pillow's default filter); no flips by
  default (the reference has none; ``flip=True`` adds horizontal flips); a fresh random free-form
  mask per item from `ssmrepro.data.masks.FreeFormMaskGenerator` (the reference draws a random
  NVIDIA training mask; ``masks=<folder>`` reads masks from a folder instead, resized with nearest
  neighbour, pixels > 0 = hole).
- EVSSM (deblurring): a random ``patch`` x ``patch`` crop at the same place in input and target,
  then (BasicSR ``augment``) horizontal flip, vertical flip and transpose (90-degree rotation), each
  with probability 1/2 (``rotate=False`` keeps only the horizontal flip).

Randomness: item ``i`` in epoch ``e`` uses ``numpy.random.default_rng([seed, e, i])`` -- the same
item is the same whatever the worker or the order; call ``set_epoch(e)`` between epochs.

Test data: full images. Inpainting test items pair image i with mask i mod N of the condition's
bin (``pairing`` attribute); for CelebA-HQ / Places2 images are centre-cropped and resized to
256 x 256 and the NVIDIA masks (512 x 512) resized as the SEM-Net reference does (Pillow bicubic,
then pixels > 0 are holes, which dilates thin holes a little; ``mask_resize="nearest"`` for
nearest neighbour). Bins are those of the masks at their stored size.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from . import masks as masklib
from .imageio import read_image
from .manifest import DatasetMissing, dataset_dir, manifest_version, read_manifest
from .recipes import load_recipe

INPAINT_TEST_SIZE = 256  # SEM-Net tests at 256 x 256


def _to_tensor(arr: np.ndarray):
    """(H, W, 3) uint8/uint16 or (H, W) bool -> float32 tensor (C, H, W) in [0, 1]."""
    if arr.dtype == np.bool_:
        return torch.from_numpy(np.ascontiguousarray(arr[None].astype(np.float32)))
    scale = 65535.0 if arr.dtype == np.uint16 else 255.0
    t = torch.from_numpy(np.ascontiguousarray(arr.transpose(2, 0, 1)).astype(np.float32))
    return t.div_(scale)


def center_crop_resize(img: np.ndarray, size: int) -> np.ndarray:
    """Centre-crop to a square, then resize to size x size with Pillow bicubic (SEM-Net)."""
    from PIL import Image

    h, w = img.shape[:2]
    if h != w:
        side = min(h, w)
        top = (h - side) // 2
        left = (w - side) // 2
        img = img[top : top + side, left : left + side]
    if img.shape[0] == size:
        return np.ascontiguousarray(img)
    if img.dtype == np.uint16:
        chans = [np.asarray(Image.fromarray(np.ascontiguousarray(img[..., c])).resize((size, size), Image.BICUBIC))
                 for c in range(img.shape[2])]
        return np.stack(chans, -1)
    return np.asarray(Image.fromarray(np.ascontiguousarray(img)).resize((size, size), Image.BICUBIC))


def center_crop(img: np.ndarray, size: int) -> np.ndarray:
    """The central size x size square (the whole image where it is smaller)."""
    h, w = img.shape[:2]
    top = max(0, (h - size) // 2)
    left = max(0, (w - size) // 2)
    return img[top : top + size, left : left + size]


def resize_mask(mask_u8: np.ndarray, size: int, rule: str = "reference") -> np.ndarray:
    """Stored mask (H, W) uint8 -> (size, size) bool holes (pixels > 0).

    ``reference``: Pillow bicubic then > 0 (SEM-Net's test loader); ``nearest``: nearest neighbour."""
    from PIL import Image

    if mask_u8.shape != (size, size):
        flt = Image.BICUBIC if rule == "reference" else Image.NEAREST
        mask_u8 = np.asarray(Image.fromarray(mask_u8).resize((size, size), flt))
    return mask_u8 > 0


def _manifest(name: str, root) -> tuple[Path, dict]:
    d = dataset_dir(name, root)
    return d, read_manifest(d)


def _split_items(man: dict, name: str, split: str) -> list[dict]:
    splits = man.get("splits", {})
    if split not in splits:
        raise ValueError(f"dataset {name!r} has no {split!r} split (splits: {', '.join(splits)})")
    return splits[split]


def _check_task(name: str, man: dict, task: str | None) -> str:
    t = man.get("task")
    if task is not None and task != t:
        raise ValueError(f"dataset {name!r} is a {t} dataset, not {task}")
    return t


class _Base:
    def __init__(self):
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])


class InpaintingTrain(Dataset, _Base):
    def __init__(self, folder: Path, items: list[dict], patch: int, seed: int = 0, flip: bool = False,
                 masks: str | Path | None = None, mask_bins: Sequence[str] = masklib.DECILE_BINS,
                 data_version: str = ""):
        _Base.__init__(self)
        self.folder = Path(folder)
        self.items = items
        self.patch = int(patch)
        self.seed = int(seed)
        self.flip = flip
        self.data_version = data_version
        self.generator = masklib.FreeFormMaskGenerator(self.patch, bins=mask_bins)
        self.mask_files: list[Path] | None = None
        if masks is not None:
            mdir = Path(masks)
            self.mask_files = sorted(mdir.rglob("*.png"))
            if not self.mask_files:
                raise FileNotFoundError(f"no mask PNG files under {mdir}")

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        it = self.items[index]
        rng = self._rng(index)
        img = center_crop_resize(read_image(self.folder / it["image"]), self.patch)
        if self.mask_files is not None:
            j = int(rng.integers(0, len(self.mask_files)))
            m = masklib.load_mask_file(self.mask_files[j], size=self.patch)
        else:
            m = self.generator(rng)
        if self.flip and rng.random() < 0.5:
            img = img[:, ::-1]
        return {"image": _to_tensor(img), "mask": _to_tensor(m), "name": it["name"]}


def read_pair(folder: Path, it: dict, depth: int, resolution: int | None) -> tuple[np.ndarray, np.ndarray]:
    """The input and target images of a manifest item, checked to have one size, then
    centre-cropped to ``resolution`` when given."""
    inp = read_image(Path(folder) / it["input"], depth=depth)
    tgt = read_image(Path(folder) / it["target"], depth=depth)
    if inp.shape != tgt.shape:
        raise ValueError(f"{it['name']}: input {inp.shape[:2]} and target {tgt.shape[:2]} differ in size")
    if resolution:
        inp, tgt = center_crop(inp, resolution), center_crop(tgt, resolution)
    return inp, tgt


def paired_random_crop(inp: np.ndarray, tgt: np.ndarray, patch: int, rng: np.random.Generator, name: str):
    if inp.shape != tgt.shape:
        raise ValueError(f"{name}: input {inp.shape[:2]} and target {tgt.shape[:2]} differ in size")
    h, w = inp.shape[:2]
    if h < patch or w < patch:
        raise ValueError(f"{name}: image {h}x{w} is smaller than the patch {patch}; use a smaller patch")
    top = int(rng.integers(0, h - patch + 1))
    left = int(rng.integers(0, w - patch + 1))
    return inp[top : top + patch, left : left + patch], tgt[top : top + patch, left : left + patch]


def augment_pair(inp: np.ndarray, tgt: np.ndarray, rng: np.random.Generator, rotate: bool = True):
    """BasicSR ``augment``: hflip (p 1/2); with ``rotate`` also vflip and transpose (p 1/2 each)."""
    hflip = rng.random() < 0.5
    vflip = rotate and rng.random() < 0.5
    rot90 = rotate and rng.random() < 0.5
    out = []
    for a in (inp, tgt):
        if hflip:
            a = a[:, ::-1]
        if vflip:
            a = a[::-1]
        if rot90:
            a = a.transpose(1, 0, 2)
        out.append(a)
    return out[0], out[1]


class PairedTrain(Dataset, _Base):
    def __init__(self, folder: Path, items: list[dict], patch: int, seed: int = 0, rotate: bool = True,
                 bit_depth: int = 8, data_version: str = "", resolution: int | None = None):
        _Base.__init__(self)
        self.folder = Path(folder)
        self.items = items
        self.patch = int(patch)
        self.seed = int(seed)
        self.rotate = rotate
        self.bit_depth = bit_depth
        self.data_version = data_version
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        it = self.items[index]
        rng = self._rng(index)
        inp, tgt = read_pair(self.folder, it, self.bit_depth, self.resolution)
        inp, tgt = paired_random_crop(inp, tgt, self.patch, rng, it["name"])
        inp, tgt = augment_pair(inp, tgt, rng, self.rotate)
        return {"input": _to_tensor(inp), "target": _to_tensor(tgt), "name": it["name"]}


class PairedTest(Dataset):
    def __init__(self, folder: Path, items: list[dict], condition: str, bit_depth: int = 8, data_version: str = "",
                 resolution: int | None = None):
        self.folder = Path(folder)
        self.items = items
        self.condition = condition
        self.bit_depth = bit_depth
        self.data_version = data_version
        self.resolution = resolution

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        it = self.items[index]
        inp, tgt = read_pair(self.folder, it, self.bit_depth, self.resolution)
        return {"input": _to_tensor(inp), "target": _to_tensor(tgt), "name": it["name"]}


class InpaintingTest(Dataset):
    """Fixed pairing: image i with mask i mod N of the condition's bin (``self.pairing``)."""

    def __init__(self, folder: Path, items: list[dict], condition: str, mask_source: str,
                 mask_rows: list[dict] | None, mask_folder: Path | None, size: int | None,
                 mask_resize: str = "nearest", seed: int = 0, data_version: str = "",
                 mask_version: str = ""):
        self.folder = Path(folder)
        self.items = items
        self.condition = condition
        self.mask_source = mask_source
        self.mask_rows = mask_rows
        self.mask_folder = mask_folder
        self.size = size
        self.mask_resize = mask_resize
        self.seed = seed
        self.data_version = data_version
        self.mask_version = mask_version
        names = [it["name"] for it in items]
        if mask_rows is not None:
            if not mask_rows:
                raise ValueError(f"no masks in bin {condition!r} ({mask_source})")
            self.pairing = masklib.pair_with_masks(names, [r["name"] for r in mask_rows])
            self._mask_index = [i % len(mask_rows) for i in range(len(items))]
        else:  # generated on the fly, one mask per image, deterministic
            self.pairing = [(n, f"generated/{condition}/{i:05d}") for i, n in enumerate(names)]
            self._mask_index = list(range(len(items)))

    @property
    def pairing_sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.pairing).encode()).hexdigest()

    def pairing_record(self) -> dict:
        """What an evaluation records about the test pairing."""
        return {"condition": self.condition, "mask_source": self.mask_source,
                "mask_version": self.mask_version, "mask_resize": self.mask_resize,
                "size": self.size, "n_images": len(self.items), "pairing_sha256": self.pairing_sha256}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict[str, Any]:
        it = self.items[index]
        img = read_image(self.folder / it["image"])
        if self.size is not None:
            img = center_crop_resize(img, self.size)
        h, w = img.shape[:2]
        j = self._mask_index[index]
        if self.mask_rows is not None:
            from .imageio import read_mask

            m8 = read_mask(self.mask_folder / self.mask_rows[j]["mask"])
            if m8.shape != (h, w):
                if h != w:
                    raise ValueError(f"{it['name']}: image {h}x{w} is not square; masks are square")
                m = resize_mask(m8, h, self.mask_resize)
            else:
                m = m8 > 0
        else:
            if h != w:
                raise ValueError(f"{it['name']}: image {h}x{w} is not square; generated masks are square")
            rng = np.random.default_rng([self.seed, *self.condition.encode(), j])
            m = masklib.masks_in_bin(1, self.condition, h, rng)[0]
        return {"image": _to_tensor(img), "mask": _to_tensor(m), "name": it["name"]}


# ------------------------------------------------------------------------------------------------
# public entry points


def train_dataset(name: str, task: str | None, patch: int, root="data", seed: int = 0, *,
                  resolution: int | None = None, flip: bool = False, rotate: bool = True,
                  masks: str | Path | None = None, bit_depth: int = 8, split: str = "train"):
    """The training set of ``name`` (see the module docstring for the augmentations).

    ``resolution`` (a dataset "at a stated resolution", ``celeba_hq@64``): inpainting images are
    centre-cropped and resized to ``resolution`` (it replaces ``patch``); deblurring pairs are
    first centre-cropped to ``resolution`` x ``resolution`` (no resampling, which would change the
    blur), then the random ``patch`` crop is taken inside."""
    folder, man = _manifest(name, root)
    t = _check_task(name, man, task)
    items = _split_items(man, name, split)
    version = manifest_version(folder)
    if t == "inpainting":
        return InpaintingTrain(folder, items, resolution or patch, seed, flip=flip, masks=masks,
                               data_version=version)
    if t == "deblurring":
        return PairedTrain(folder, items, patch, seed, rotate=rotate, bit_depth=bit_depth,
                           data_version=version, resolution=resolution)
    raise ValueError(f"dataset {name!r} ({t}) has no training set")


def test_dataset(name: str, condition: str, root="data", *, resolution: int | None = None,
                 masks: str = "auto", size: int | None | str = "auto", mask_resize: str = "auto",
                 bit_depth: int = 8, seed: int = 0, split: str = "test"):
    """The test set of ``name`` for ``condition``.

    Inpainting: ``condition`` is a mask-ratio bin; ``masks``: ``"auto"`` (the dataset's own test
    masks for the embedded set, else the NVIDIA masks from ``root/nvidia_masks``), ``"nvidia"``,
    ``"generated"`` (deterministic masks from the generator, one per image) or a dataset name
    holding masks. ``mask_resize`` for stored masks of another size: ``"reference"`` (Pillow
    bicubic then > 0, SEM-Net's test loader; it dilates thin holes), ``"nearest"``, or ``"auto"``
    = reference for the NVIDIA masks, nearest for the others.
    ``size``: ``"auto"`` = 256 for external sets, native for embedded ones;
    ``resolution`` (``celeba_hq@64``) overrides it.
    Deblurring: ``condition`` is the test set's name (``gopro``, ``hide``, ..., or the embedded
    set's name); with ``resolution`` both images are centre-cropped to that square."""
    folder, man = _manifest(name, root)
    t = man.get("task")
    version = manifest_version(folder)
    items = _split_items(man, name, split)
    if t == "deblurring":
        if condition not in (name, split):
            raise ValueError(f"deblurring test condition for {name!r} is {name!r}, got {condition!r}")
        return PairedTest(folder, items, name, bit_depth=bit_depth, data_version=version,
                          resolution=resolution)
    if t != "inpainting":
        raise ValueError(f"dataset {name!r} ({t}) has no test images")
    masklib.check_bin(condition)
    embedded = man.get("kind") == "embedded"
    if resolution is not None:
        size = int(resolution)
    elif size == "auto":
        size = None if embedded else INPAINT_TEST_SIZE
    src = masks
    if src == "auto":
        src = "own" if "masks" in man else "nvidia_masks"
    if src == "nvidia":
        src = "nvidia_masks"
    if mask_resize == "auto":
        mask_resize = "reference" if src == "nvidia_masks" else "nearest"
    if mask_resize not in ("reference", "nearest"):
        raise ValueError(f"mask_resize must be reference, nearest or auto, got {mask_resize!r}")
    if src == "generated":
        return InpaintingTest(folder, items, condition, "generated", None, None, size,
                              mask_resize, seed=seed, data_version=version)
    if src == "own":
        if "masks" not in man:
            raise ValueError(f"dataset {name!r} has no masks of its own")
        return InpaintingTest(folder, items, condition, name, man["masks"].get(condition, []), folder,
                              size, mask_resize, data_version=version, mask_version=version)
    mfolder, mman = _manifest(src, root)
    if "masks" not in mman:
        raise ValueError(f"dataset {src!r} holds no binned masks")
    return InpaintingTest(folder, items, condition, src, mman["masks"].get(condition, []), mfolder,
                          size, mask_resize, data_version=version, mask_version=manifest_version(mfolder))


test_dataset.__test__ = False  # not a pytest test, whatever module imports it


def dataset_info(name: str, root="data") -> dict:
    """Recipe summary plus, when present on disk, the data version and counts."""
    rec = load_recipe(name)
    info = {"name": rec.name, "title": rec.title, "task": rec.task, "kind": rec.kind,
            "licence": rec.licence, "command": rec.command(), "present": False}
    try:
        d = dataset_dir(name, root)
    except DatasetMissing:
        return info
    man = read_manifest(d)
    info.update(present=True, data_version=manifest_version(d), counts=man.get("counts", {}))
    return info
