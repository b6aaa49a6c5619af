"""The embedded datasets: small, built offline, byte-identical across builds.

``build_embedded(name, root="data", size=64, count=24, test_count=8)`` writes ``root/<name>/``
from

- photographs shipped inside scikit-image (``skimage/data/*.png``: astronaut, chelsea, coffee,
  ihc, motorcycle_left, color, and the grayscale camera, brick, grass, gravel, moon -- only PNG
  files that are bundled with the wheel; none of the images scikit-image downloads, and no JPEG,
  whose decoding may vary between libjpeg builds), cropped and resized with Pillow, and
- procedural images (random shapes on gradients, multi-scale smoothed noise textures, gratings
  with checkerboards) drawn with a seeded `numpy.random.Generator`.

Every random choice comes from ``numpy.random.default_rng([seed, set, split, index])``; PNGs are
written by `ssmrepro.data.imageio.encode_png` (no metadata, fixed zlib level); the manifest has no
timestamps. Two builds with the same arguments and the same library versions give the same bytes.

Sets:

- ``embedded_inpainting``: ``train/images``, ``test/images``; test masks per ratio bin
  (``test/masks/<bin>/*.png``, white = hole, with ``masks.csv``/``masks.json`` giving each mask's
  ratio); pairing image i <-> mask i mod N per bin, recorded in the manifest.
- ``embedded_deblur``: ``{train,test}/{input,target}`` pairs; input = sharp image blurred with a
  random camera-shake kernel (`degradations.motion_kernel`) plus Gaussian noise sigma 0.5-2 (of 255).
- ``embedded_defocus``: the same with a uniform disk kernel, radius 1-3.5 px at 64x64 (scaled with
  the size), noise sigma 0.5-1.5.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import uuid
from pathlib import Path

import numpy as np

from . import degradations as deg
from . import masks as masklib
from .imageio import encode_png, read_image
from .manifest import build_manifest, list_files, manifest_version, resolve_splits, sha256_file, write_manifest
from .recipes import load_recipe

EMBEDDED = ("embedded_inpainting", "embedded_deblur", "embedded_defocus")
GENERATOR_VERSION = "ssmrepro.data.embedded/1"

SKIMAGE_SOURCES = (
    "astronaut.png",
    "chelsea.png",
    "coffee.png",
    "ihc.png",
    "motorcycle_left.png",
    "color.png",
    "camera.png",
    "brick.png",
    "grass.png",
    "gravel.png",
    "moon.png",
)

_SET_IDS = {"embedded_inpainting": 1, "embedded_deblur": 2, "embedded_defocus": 3}
_SPLIT_IDS = {"train": 0, "test": 1}


def skimage_data_dir() -> Path:
    import skimage.data

    return Path(skimage.data.__file__).parent


def _sources() -> list[tuple[str, np.ndarray]]:
    d = skimage_data_dir()
    out = []
    for f in SKIMAGE_SOURCES:
        p = d / f
        if p.exists():
            out.append((f, read_image(p)))
    if not out:
        raise FileNotFoundError(f"none of the bundled scikit-image images found in {d}")
    return out


def source_checksums() -> dict[str, str]:
    d = skimage_data_dir()
    return {f: sha256_file(d / f) for f in SKIMAGE_SOURCES if (d / f).exists()}


# ------------------------------------------------------------------------------------------------
# images


def _resize(arr: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(arr).resize((size, size), Image.BICUBIC))


def _natural(rng: np.random.Generator, sources, size: int, pick: int) -> np.ndarray:
    _, img = sources[pick % len(sources)]
    h, w = img.shape[:2]
    side = int(round(min(h, w) * rng.uniform(0.3, 0.7)))
    side = max(side, min(size, min(h, w)))
    y = int(rng.integers(0, h - side + 1))
    x = int(rng.integers(0, w - side + 1))
    crop = img[y : y + side, x : x + side]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return _resize(np.ascontiguousarray(crop), size)


def _gradient(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] / max(size - 1, 1)
    ang = rng.uniform(0, 2 * math.pi)
    t = np.cos(ang) * xx + np.sin(ang) * yy
    t = (t - t.min()) / max(t.max() - t.min(), 1e-9)
    c0 = rng.uniform(0, 255, 3)
    c1 = rng.uniform(0, 255, 3)
    return c0 * (1 - t[..., None]) + c1 * t[..., None]


def _shapes(rng: np.random.Generator, size: int) -> np.ndarray:
    from skimage.draw import ellipse, polygon

    img = _gradient(rng, size)
    for _ in range(int(rng.integers(3, 9))):
        col = rng.uniform(0, 255, 3)
        if rng.random() < 0.5:
            r, c = ellipse(rng.uniform(0, size), rng.uniform(0, size), rng.uniform(size / 16, size / 3),
                           rng.uniform(size / 16, size / 3), shape=(size, size), rotation=rng.uniform(0, math.pi))
        else:
            k = int(rng.integers(3, 7))
            r, c = polygon(rng.uniform(0, size, k), rng.uniform(0, size, k), shape=(size, size))
        img[r, c] = col
    return img


def _texture(rng: np.random.Generator, size: int) -> np.ndarray:
    from scipy import ndimage

    acc = np.zeros((size, size, 3))
    for octave in range(4):
        sigma = size / (4.0 * 2**octave)
        noise = rng.standard_normal((size, size, 3))
        sm = np.stack([ndimage.gaussian_filter(noise[..., c], sigma, mode="wrap") for c in range(3)], -1)
        sm /= max(sm.std(), 1e-9)
        acc += sm * (0.6**octave)
    acc = (acc - acc.min()) / max(acc.max() - acc.min(), 1e-9)
    mix = rng.uniform(0, 1, (3, 3))
    return np.clip(acc @ mix / mix.sum(axis=0).max(), 0, 1) * 255


def _grating(rng: np.random.Generator, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float64)
    ang = rng.uniform(0, math.pi)
    freq = rng.uniform(2, 8) / size * 2 * math.pi
    g = 0.5 + 0.5 * np.sin(freq * (np.cos(ang) * xx + np.sin(ang) * yy) + rng.uniform(0, 2 * math.pi))
    cell = int(rng.integers(max(2, size // 16), max(3, size // 4)))
    checker = ((yy // cell + xx // cell) % 2)[..., None]
    base = _gradient(rng, size)
    col = rng.uniform(0, 255, 3)
    img = base * (1 - 0.5 * g[..., None]) + col * 0.5 * g[..., None]
    return np.where(checker > 0, img, 255 - img * 0.7)


def make_image(rng: np.random.Generator, sources, size: int, index: int) -> np.ndarray:
    """Image ``index``: two of three are photo crops, one of three procedural."""
    if index % 3 != 2:
        return _natural(rng, sources, size, pick=index - index // 3)  # cycles through the sources
    kind = (index // 3) % 3
    f = (_shapes, _texture, _grating)[kind]
    return np.clip(np.floor(f(rng, size) + 0.5), 0, 255).astype(np.uint8)


# ------------------------------------------------------------------------------------------------
# builders


def _rng(seed: int, name: str, split: str, index: int, stream: int = 0) -> np.random.Generator:
    return np.random.default_rng([seed, _SET_IDS[name], _SPLIT_IDS[split], index, stream])


def _build_inpainting(d: Path, size: int, counts: dict, seed: int, per_bin: int) -> dict:
    sources = _sources()
    for split, n in counts.items():
        (d / split / "images").mkdir(parents=True)
        for i in range(n):
            img = make_image(_rng(seed, "embedded_inpainting", split, i), sources, size, i)
            (d / split / "images" / f"{i:05d}.png").write_bytes(encode_png(img))
    mdir = d / "test" / "masks"
    masklib.make_test_mask_set(mdir, size=size, per_bin=per_bin, seed=seed)
    return {"per_bin": per_bin}


def _build_blur(d: Path, name: str, size: int, counts: dict, seed: int) -> dict:
    sources = _sources()
    for split, n in counts.items():
        (d / split / "input").mkdir(parents=True)
        (d / split / "target").mkdir(parents=True)
        for i in range(n):
            sharp = make_image(_rng(seed, name, split, i), sources, size, i)
            krng = _rng(seed, name, split, i, stream=1)
            if name == "embedded_deblur":
                ksize = 2 * int(round(size * krng.uniform(0.06, 0.11))) + 1
                kernel = deg.motion_kernel(krng, size=max(ksize, 5))
                sigma = krng.uniform(0.5, 2.0)
            else:
                radius = krng.uniform(1.0, 3.5) * size / 64.0
                kernel = deg.disk_kernel(radius)
                sigma = krng.uniform(0.5, 1.5)
            blurred = deg.blur_image(sharp, kernel, krng, noise_sigma=sigma)
            (d / split / "target" / f"{i:05d}.png").write_bytes(encode_png(sharp))
            (d / split / "input" / f"{i:05d}.png").write_bytes(encode_png(blurred))
    return {}


def build_embedded(
    name: str,
    root="data",
    size: int | None = None,
    count: int | None = None,
    test_count: int | None = None,
    *,
    seed: int | None = None,
    masks_per_bin: int | None = None,
    dvc: bool = False,
):
    """Build an embedded dataset into ``root/name`` (replacing it atomically). ``count``: train
    images (default 24), ``test_count``: test images (default 8), ``size``: side in pixels
    (default 64), ``masks_per_bin``: test masks per ratio bin (inpainting; default 8).
    Returns a `FetchResult` (path, data version)."""
    from .fetch import FetchResult, dvc_add, place_atomically, recover

    if name not in EMBEDDED:
        raise ValueError(f"unknown embedded dataset {name!r}; known: {', '.join(EMBEDDED)}")
    rec = load_recipe(name)
    defaults = dict(rec.builder.get("defaults", {}))
    size = int(size if size is not None else defaults.get("size", 64))
    n_train = int(count if count is not None else defaults.get("count", 24))
    n_test = int(test_count if test_count is not None else defaults.get("test_count", 8))
    seed = int(seed if seed is not None else defaults.get("seed", 0))
    per_bin = int(masks_per_bin if masks_per_bin is not None else defaults.get("masks_per_bin", 8))
    if size < 16:
        raise ValueError(f"size must be at least 16, got {size}")
    if n_train < 1 or n_test < 1 or per_bin < 1:
        raise ValueError("count, test_count and masks_per_bin must be positive")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    recover(root, name)
    counts = {"train": n_train, "test": n_test}
    build = {
        "generator": GENERATOR_VERSION,
        "size": size,
        "count": n_train,
        "test_count": n_test,
        "seed": seed,
        "sources": source_checksums(),
    }
    tmp = root / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        if name == "embedded_inpainting":
            build.update(_build_inpainting(tmp, size, counts, seed, per_bin))
        else:
            build.update(_build_blur(tmp, name, size, counts, seed))
        rec_counts = dataclasses.replace(rec, counts={"train": n_train, "test": n_test})
        files = list_files(tmp)
        resolved = resolve_splits(rec_counts, tmp, files)
        if name == "embedded_inpainting":
            table = masklib.read_mask_table(tmp / "test" / "masks")
            resolved["masks"] = {
                b: [{"name": r["file"][:-4], "mask": f"test/masks/{r['file']}", "holes": r["holes"],
                     "pixels": r["pixels"], "ratio": r["ratio"]} for r in rows]
                for b, rows in table.items()
            }
            resolved["mask_hole"] = "nonzero"
            names = [it["name"] for it in resolved["splits"]["test"]]
            resolved["pairing"] = {
                b: [list(p) for p in masklib.pair_with_masks(names, [r["name"] for r in rows])]
                for b, rows in resolved["masks"].items()
            }
        man = build_manifest(name, rec.task, rec.kind, tmp, resolved, files=files, build=build)
        write_manifest(tmp, man)
        place_atomically(tmp, root / name)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    final = root / name
    dvc_file = dvc_add(final) if dvc else None
    return FetchResult(name, final, manifest_version(final), dict(man["counts"]), dvc_file)


def ensure_embedded(name: str, root="data", **kwargs) -> Path:
    """Build ``name`` if ``root/name`` has no manifest yet; return its folder."""
    d = Path(root) / name
    if not (d / "manifest.json").exists():
        build_embedded(name, root=root, **kwargs)
    return d

