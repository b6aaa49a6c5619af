"""Irregular (free-form) hole masks, hole-ratio bins, deterministic test mask sets.

Convention everywhere: a mask is ``1`` (True) on hole pixels. A mask's hole ratio is the fraction
of hole pixels; bins are half-open intervals ``(lo, hi]`` in percent:

- the paper's groups ``"0.01-20"``, ``"20-40"``, ``"40-60"``;
- the NVIDIA test-set categories as 10% bins ``"0-10"``, ``"10-20"``, ..., ``"50-60"``
  (NVIDIA's own first category is (1%, 10%]).

Comparisons are exact integer arithmetic on pixel counts (bounds are held in basis points).

The generator draws brush strokes as in the free-form masks of DeepFill v2 / the PConv-style
generators: each stroke is a zig-zag polyline of 4-12 vertices (turning angles around 2*pi/5 +-
2*pi/15, alternating direction; segment length ~ N(d/8, d/16) clipped to [0, d/4] with d the image
diagonal; one brush width per stroke, uniform in [12, 40] px at 256x256, scaled with the size;
round joints and caps), with a random orientation per stroke. The number of strokes is chosen so
that the masks follow the statistics of the NVIDIA irregular test masks: a ratio category is
drawn uniformly among the six 10% bins (as the NVIDIA set has equally many masks per category),
a target ratio uniformly inside it, and the stroke count from the measured mean coverage of
masks with n strokes (`_coverage_curve`, computed once per size with a fixed seed); masks above
60% are redrawn; half of the masks keep a border margin (10% of the side) free of holes (the
NVIDIA set has masks "with and without border constraint"). `masks_in_bin` additionally rejects masks outside the requested bin,
so every mask it returns is inside.

Rasterisation is vectorised with numpy (no OpenCV): each stroke segment is a capsule (all points
within the brush radius of the segment); its intersection with a pixel column is one interval
whose end points have a closed form (maximise y(t) +- sqrt(r^2 - (x - x(t))^2) over the segment
parameter t). Interval starts/ends of all capsules of a batch of masks go into one int16
difference array (``np.add.at``) that a running sum over rows turns into coverage counts.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

# ------------------------------------------------------------------------------------------------
# bins

GROUP_BINS = ("0.01-20", "20-40", "40-60")
DECILE_BINS = ("0-10", "10-20", "20-30", "30-40", "40-50", "50-60")
ALL_BINS = GROUP_BINS + DECILE_BINS


def bin_bounds_bp(name: str) -> tuple[int, int]:
    """Bin ``"lo-hi"`` (percent) -> (lo, hi) in basis points (hundredths of a percent)."""
    try:
        lo_s, hi_s = name.split("-")
        lo = round(float(lo_s) * 100)
        hi = round(float(hi_s) * 100)
    except ValueError:
        raise ValueError(f"bad mask-ratio bin {name!r}; known: {', '.join(ALL_BINS)}") from None
    if not (0 <= lo < hi <= 10000):
        raise ValueError(f"bad mask-ratio bin {name!r}; known: {', '.join(ALL_BINS)}")
    return lo, hi


def check_bin(name: str) -> str:
    if name not in ALL_BINS:
        raise ValueError(f"unknown mask-ratio bin {name!r}; known: {', '.join(ALL_BINS)}")
    return name


def in_bin(holes: int | np.ndarray, pixels: int, name: str):
    """Whether ``holes / pixels`` lies in ``(lo, hi]`` percent, with exact integer arithmetic."""
    lo, hi = bin_bounds_bp(name)
    h = np.asarray(holes, dtype=np.int64) * 10000
    res = (h > lo * pixels) & (h <= hi * pixels)
    return bool(res) if np.ndim(res) == 0 else res


def bins_of(holes: int, pixels: int, bins: Iterable[str] = ALL_BINS) -> list[str]:
    return [b for b in bins if in_bin(holes, pixels, b)]


def hole_ratio(mask: np.ndarray) -> float:
    """Fraction of hole pixels of a (H, W) or (B, H, W) mask (per mask for a batch)."""
    m = np.asarray(mask).astype(bool)
    if m.ndim == 2:
        return float(m.mean())
    return m.reshape(m.shape[0], -1).mean(axis=1)


# ------------------------------------------------------------------------------------------------
# rasterisation


def render_capsules(
    owner: np.ndarray,
    x0: np.ndarray,
    y0: np.ndarray,
    x1: np.ndarray,
    y1: np.ndarray,
    radius: np.ndarray,
    batch: int,
    height: int,
    width: int,
    contiguous: bool = True,
) -> np.ndarray:
    """Fill capsules (segment (x0,y0)-(x1,y1) thickened by ``radius``) into ``batch`` masks.

    ``owner[i]`` is the mask index of capsule i. Pixel centres are at integer coordinates.
    Returns a bool array (batch, height, width).

    For each capsule and each image column it crosses, the rows inside the capsule form one
    interval [ys, ye] (closed form below). Interval starts (+1) and ends (-1) go into a
    difference array laid out (row, mask, column); a cumulative sum over rows (vectorised across
    masks and columns) counts the capsules covering each pixel.
    """
    owner = np.asarray(owner, dtype=np.int64)
    # work in the transposed frame: "c" runs along columns (x), intervals along rows (y)
    a0 = np.asarray(y0, dtype=np.float64)
    a1 = np.asarray(y1, dtype=np.float64)
    c0 = np.asarray(x0, dtype=np.float64)
    c1 = np.asarray(x1, dtype=np.float64)
    r = np.asarray(radius, dtype=np.float64)
    if owner.size == 0:
        return np.zeros((batch, height, width), dtype=bool)
    clo = np.clip(np.ceil(np.minimum(c0, c1) - r), 0, width - 1).astype(np.int64)
    chi = np.clip(np.floor(np.maximum(c0, c1) + r), 0, width - 1).astype(np.int64)
    ncols = np.maximum(chi - clo + 1, 0)
    total = int(ncols.sum())
    if total == 0:
        return np.zeros((batch, height, width), dtype=bool)
    seg = np.repeat(np.arange(owner.size), ncols)
    first = np.cumsum(ncols) - ncols
    col = clo[seg] + (np.arange(total) - first[seg])

    sa0 = a0[seg]
    da = (a1 - a0)[seg]
    dc = (c1 - c0)
    dc = np.where(np.abs(dc) < 1e-6, 1e-6, dc)
    length = np.sqrt((a1 - a0) ** 2 + dc * dc)
    dc = dc[seg]
    length = length[seg]
    rr = r[seg]
    q = col - c0[seg]  # column offset from the segment start
    # segment parameter t with |q - t*dc| <= r, within [0, 1]
    ta = (q - rr) / dc
    tb = (q + rr) / dc
    tmin = np.maximum(np.minimum(ta, tb), 0.0)
    tmax = np.minimum(np.maximum(ta, tb), 1.0)
    ok = tmin <= tmax
    k = rr * da * np.sign(dc) / length

    def extreme(direction: float, u_star: np.ndarray) -> np.ndarray:
        # maximise direction * a(t) + sqrt(r^2 - (q - t dc)^2) over feasible t (concave in t)
        t = np.clip((q - u_star) / dc, tmin, tmax)
        u = q - t * dc
        return direction * (sa0 + t * da) + np.sqrt(np.maximum(rr * rr - u * u, 0.0))

    hi = extreme(1.0, -k)
    lo = -extreme(-1.0, k)
    ys = np.clip(np.ceil(lo - 1e-9), 0, height).astype(np.int64)
    ye = np.clip(np.floor(hi + 1e-9), -1, height - 1).astype(np.int64) + 1  # exclusive
    ok &= ys < ye
    base = owner[seg] * width + col
    plane = batch * width
    diff = np.zeros((height + 1) * plane, dtype=np.int16)
    # (int16 scalars keep np.add.at on its fast path)
    np.add.at(diff, (ys * plane + base)[ok], np.int16(1))
    np.add.at(diff, (ye * plane + base)[ok], np.int16(-1))
    d2 = diff.reshape(height + 1, plane)
    # running sum over rows, in place; a loop of whole-row vector adds is far faster here than
    # np.add.accumulate(axis=0), whose inner loop runs along the strided axis
    for yy in range(1, height):
        np.add(d2[yy - 1], d2[yy], out=d2[yy])
    cover = d2[:height].reshape(height, batch, width) > 0
    return cover.transpose(1, 0, 2) if not contiguous else np.ascontiguousarray(cover.transpose(1, 0, 2))


# ------------------------------------------------------------------------------------------------
# strokes


@dataclass(frozen=True)
class StrokeParams:
    """Free-form stroke parameters at the reference size 256 (scaled with the mask size)."""

    min_vertex: int = 4
    max_vertex: int = 12
    mean_angle: float = 2 * math.pi / 5
    angle_range: float = 2 * math.pi / 15
    min_width: float = 12.0
    max_width: float = 40.0
    border_fraction: float = 0.1  # margin of a "border constrained" mask, as a fraction of the size


DEFAULT_STROKES = StrokeParams()


def _sample_strokes(rng: np.random.Generator, n_strokes: np.ndarray, size: int, margins: np.ndarray, p: StrokeParams):
    """Sample the capsules of ``sum(n_strokes)`` strokes; returns capsule arrays with owners."""
    h = w = size
    scale = size / 256.0
    owners = np.repeat(np.arange(n_strokes.size), n_strokes)
    s = owners.size
    if s == 0:
        e = np.zeros(0)
        return owners, e, e, e, e, e
    nv = rng.integers(p.min_vertex, p.max_vertex + 1, size=s)
    width = rng.uniform(p.min_width, p.max_width, size=s) * scale
    rad = width / 2.0
    theta = rng.uniform(0.0, 2 * math.pi, size=s)
    kmax = p.max_vertex
    ang = rng.uniform(p.mean_angle - p.angle_range, p.mean_angle + p.angle_range, size=(s, kmax))
    ang[:, 0::2] = 2 * math.pi - ang[:, 0::2]
    ang = ang + theta[:, None]
    avg_r = math.sqrt(h * h + w * w) / 8.0
    seglen = np.clip(rng.normal(avg_r, avg_r / 2.0, size=(s, kmax)), 0.0, 2 * avg_r)
    m = margins[owners]
    lo = m + rad
    hi = (size - 1) - m - rad
    hi = np.maximum(hi, lo)
    sx = lo + rng.random(s) * (hi - lo)
    sy = lo + rng.random(s) * (hi - lo)
    # walk: vertex k+1 = clip(vertex k + len * (cos, sin)) -- the clip makes it sequential in k,
    # but vectorised over strokes
    xs = np.empty((s, kmax + 1))
    ys = np.empty((s, kmax + 1))
    xs[:, 0] = sx
    ys[:, 0] = sy
    cosa = np.cos(ang) * seglen
    sina = np.sin(ang) * seglen
    for k in range(kmax):
        xs[:, k + 1] = np.clip(xs[:, k] + cosa[:, k], lo, hi)
        ys[:, k + 1] = np.clip(ys[:, k] + sina[:, k], lo, hi)
    valid = np.arange(kmax)[None, :] < nv[:, None]
    cap_owner = np.broadcast_to(owners[:, None], (s, kmax))[valid]
    cx0 = xs[:, :-1][valid]
    cy0 = ys[:, :-1][valid]
    cx1 = xs[:, 1:][valid]
    cy1 = ys[:, 1:][valid]
    cr = np.broadcast_to(rad[:, None], (s, kmax))[valid]
    return cap_owner, cx0, cy0, cx1, cy1, cr


def render_strokes(rng: np.random.Generator, n_strokes: np.ndarray, size: int, margins: np.ndarray, p: StrokeParams = DEFAULT_STROKES) -> np.ndarray:
    """Masks (len(n_strokes), size, size) with n_strokes[i] free-form strokes each."""
    n_strokes = np.asarray(n_strokes, dtype=np.int64)
    caps = _sample_strokes(rng, n_strokes, size, np.asarray(margins, dtype=np.float64), p)
    return render_capsules(*caps, batch=n_strokes.size, height=size, width=size, contiguous=False)


_CURVE_MAX_STROKES = 24


@lru_cache(maxsize=32)
def _coverage_curve(size: int, border: bool, p: StrokeParams = DEFAULT_STROKES) -> np.ndarray:
    """Mean hole fraction of masks with n = 0..24 strokes, measured once per size (fixed seed:
    deterministic). Used to pick the stroke count that aims at a target ratio."""
    rng = np.random.default_rng(12345)
    per = 16
    n = np.repeat(np.arange(1, _CURVE_MAX_STROKES + 1), per)
    margin = np.full(n.size, round(p.border_fraction * size) if border else 0.0)
    cov = np.empty(n.size)
    for s in range(0, n.size, 64):
        m = render_strokes(rng, n[s : s + 64], size, margin[s : s + 64], p)
        cov[s : s + 64] = m.reshape(m.shape[0], -1).mean(axis=1)
    curve = np.concatenate([[0.0], cov.reshape(_CURVE_MAX_STROKES, per).mean(axis=1)])
    return np.maximum.accumulate(curve)


def _strokes_for_ratio(target: np.ndarray, size: int, border: np.ndarray, p: StrokeParams, rng) -> np.ndarray:
    """Stroke counts aimed at ``target`` ratios: the measured coverage curve inverted by linear
    interpolation, then rounded stochastically."""
    n = np.empty(target.shape, dtype=np.int64)
    u = rng.random(target.shape)
    ks = np.arange(_CURVE_MAX_STROKES + 1, dtype=np.float64)
    for flag in (False, True):
        sel = border == flag
        if not np.any(sel):
            continue
        curve = _coverage_curve(size, flag, p)
        n_real = np.interp(target[sel], curve, ks)
        n[sel] = np.floor(n_real + u[sel]).astype(np.int64)
    return np.clip(n, 1, None)


# ------------------------------------------------------------------------------------------------
# public generators


def free_form_masks(
    n: int,
    size: int = 256,
    rng: np.random.Generator | int | None = None,
    *,
    bins: Sequence[str] = DECILE_BINS,
    border_probability: float = 0.5,
    params: StrokeParams = DEFAULT_STROKES,
    chunk: int = 32,
) -> np.ndarray:
    """``n`` random free-form masks (n, size, size) bool, following the NVIDIA test statistics:
    a target ratio bin drawn uniformly from ``bins``, a target ratio uniform inside it, a stroke
    count from the calibrated coverage model; border margin with probability
    ``border_probability``. Masks are not forced into the bin (use `masks_in_bin` for that)."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    out = np.empty((n, size, size), dtype=bool)
    bounds = np.array([bin_bounds_bp(b) for b in bins], dtype=np.float64) / 10000.0
    cap_bp = int(bounds[:, 1].max() * 10000 + 0.5)
    pixels = size * size

    def draw(b: int) -> np.ndarray:
        which = rng.integers(0, len(bins), size=b)
        lo = np.maximum(bounds[which, 0], 0.01)
        hi = bounds[which, 1]
        target = lo + rng.random(b) * (hi - lo)
        border = rng.random(b) < border_probability
        nst = _strokes_for_ratio(target, size, border, params, rng)
        margins = np.where(border, round(params.border_fraction * size), 0.0)
        return render_strokes(rng, nst, size, margins, params)

    for s in range(0, n, chunk):
        b = min(chunk, n - s)
        m = draw(b)
        # like the NVIDIA set, no mask above the highest bin: redraw the few that overshoot
        for _ in range(8):
            over = np.flatnonzero(m.reshape(b, -1).sum(axis=1) * 10000 > cap_bp * pixels)
            if over.size == 0:
                break
            m[over] = draw(over.size)
        out[s : s + b] = m
    return out


def masks_in_bin(
    n: int,
    bin_name: str,
    size: int = 256,
    rng: np.random.Generator | int | None = None,
    *,
    border: Sequence[bool] | None = None,
    params: StrokeParams = DEFAULT_STROKES,
    chunk: int = 32,
    max_rounds: int = 1000,
) -> np.ndarray:
    """``n`` masks whose hole ratio lies in ``bin_name`` (rejection sampling with a stroke count
    aimed at a ratio drawn uniformly inside the bin). ``border[i]``: whether mask i keeps a border
    margin (default: alternating, False first, as the NVIDIA set's with/without halves)."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    lo_bp, hi_bp = bin_bounds_bp(bin_name)
    lo = max(lo_bp / 10000.0, 0.01 if hi_bp > 100 else lo_bp / 10000.0)
    hi = hi_bp / 10000.0
    if border is None:
        border = [i % 2 == 1 for i in range(n)]
    border = np.asarray(list(border), dtype=bool)
    if border.size != n:
        raise ValueError("border must have one entry per mask")
    pixels = size * size
    out = np.empty((n, size, size), dtype=bool)
    todo = np.arange(n)
    rounds = 0
    while todo.size:
        rounds += 1
        if rounds > max_rounds:
            raise RuntimeError(f"could not generate masks in bin {bin_name} at size {size}")
        nxt = []
        for s in range(0, todo.size, chunk):
            idx = todo[s : s + chunk]
            b = idx.size
            target = lo + rng.random(b) * (hi - lo)
            nst = _strokes_for_ratio(target, size, border[idx], params, rng)
            margins = np.where(border[idx], round(params.border_fraction * size), 0.0)
            m = render_strokes(rng, nst, size, margins, params)
            holes = m.reshape(b, -1).sum(axis=1)
            good = in_bin(holes, pixels, bin_name)
            out[idx[good]] = m[good]
            nxt.append(idx[~good])
        todo = np.concatenate(nxt) if nxt else np.zeros(0, dtype=np.int64)
    return out


class FreeFormMaskGenerator:
    """Random training masks: ``gen(rng)`` -> one (size, size) bool mask; ``gen.batch(n, rng)``."""

    def __init__(self, size: int = 256, bins: Sequence[str] = DECILE_BINS, border_probability: float = 0.5,
                 params: StrokeParams = DEFAULT_STROKES):
        self.size = size
        self.bins = tuple(bins)
        self.border_probability = border_probability
        self.params = params

    def batch(self, n: int, rng: np.random.Generator | int | None = None) -> np.ndarray:
        return free_form_masks(n, self.size, rng, bins=self.bins,
                               border_probability=self.border_probability, params=self.params)

    def __call__(self, rng: np.random.Generator | int | None = None) -> np.ndarray:
        return self.batch(1, rng)[0]


# ------------------------------------------------------------------------------------------------
# mask sets on disk


MASK_TABLE = "masks.csv"


def _bin_seed(seed: int, bin_name: str) -> list[int]:
    return [seed, *bin_name.encode()]


def make_test_mask_set(out_dir, size: int = 256, per_bin: int = 100, seed: int = 0,
                       bins: Sequence[str] = ALL_BINS) -> dict:
    """Write a deterministic binned test mask set: ``<out_dir>/<bin>/<i:05d>.png`` (white = hole)
    and ``masks.csv`` / ``masks.json`` (bin, file, holes, pixels, ratio). Returns the table."""
    from .imageio import encode_png

    out = Path(out_dir)
    rows = []
    for b in bins:
        check_bin(b)
        rng = np.random.default_rng(_bin_seed(seed, b))
        ms = masks_in_bin(per_bin, b, size, rng)
        (out / b).mkdir(parents=True, exist_ok=True)
        for i, m in enumerate(ms):
            rel = f"{b}/{i:05d}.png"
            (out / rel).write_bytes(encode_png(m.astype(np.uint8) * 255))
            holes = int(m.sum())
            rows.append({"bin": b, "file": rel, "holes": holes, "pixels": size * size,
                         "ratio": round(holes / (size * size), 6), "border": bool(i % 2 == 1)})
    write_mask_table(out, rows, {"generator": "ssmrepro.data.masks/1", "size": size,
                                 "per_bin": per_bin, "seed": seed, "bins": list(bins)})
    return {"rows": rows}


def write_mask_table(out_dir, rows: list[dict], meta: dict) -> None:
    out = Path(out_dir)
    buf = io.StringIO()
    wr = csv.DictWriter(buf, fieldnames=["bin", "file", "holes", "pixels", "ratio", "border"],
                        lineterminator="\n", extrasaction="ignore")
    wr.writeheader()
    for r in rows:
        wr.writerow({**{"border": ""}, **r})
    (out / MASK_TABLE).write_text(buf.getvalue())
    (out / "masks.json").write_text(json.dumps({"meta": meta, "masks": rows}, indent=1, sort_keys=True) + "\n")


def read_mask_table(folder) -> dict[str, list[dict]]:
    """bin -> rows (file, holes, pixels, ratio) from a folder written by `make_test_mask_set`."""
    res: dict[str, list[dict]] = {}
    with open(Path(folder) / MASK_TABLE, newline="") as fh:
        for r in csv.DictReader(fh):
            res.setdefault(r["bin"], []).append(
                {"file": r["file"], "holes": int(r["holes"]), "pixels": int(r["pixels"]),
                 "ratio": float(r["ratio"])})
    return res


def load_mask_file(path, size: int | None = None, hole: str = "nonzero") -> np.ndarray:
    """A mask file -> (H, W) bool (True = hole). ``hole="nonzero"``: pixels > 0 are holes (NVIDIA
    test masks, SEM-Net's reading); ``"zero"``: pixels == 0 are holes. With ``size``, the mask is
    resized with nearest-neighbour sampling first."""
    from PIL import Image

    from .imageio import read_mask

    arr = read_mask(path)
    if size is not None and arr.shape != (size, size):
        arr = np.asarray(Image.fromarray(arr).resize((size, size), Image.NEAREST))
    return arr > 0 if hole == "nonzero" else arr == 0


def bin_mask_files(paths: Sequence, root=None, hole: str = "nonzero",
                   bins: Sequence[str] = ALL_BINS) -> dict[str, list[dict]]:
    """Bin mask files by their hole ratio at their own resolution, the way generated masks are
    binned. Returns bin -> rows {file, holes, pixels, ratio}, files in the given order."""
    res: dict[str, list[dict]] = {b: [] for b in bins}
    for p in paths:
        full = Path(root) / p if root is not None else Path(p)
        m = load_mask_file(full, hole=hole)
        holes = int(m.sum())
        pixels = int(m.size)
        row = {"file": str(p), "holes": holes, "pixels": pixels, "ratio": round(holes / pixels, 6)}
        for b in bins:
            if in_bin(holes, pixels, b):
                res[b].append(row)
    return res


def load_nvidia_masks(folder, hole: str = "nonzero", bins: Sequence[str] = ALL_BINS) -> dict[str, list[dict]]:
    """Bin the NVIDIA irregular test masks found in ``folder`` (``*.png``, any depth, sorted)."""
    folder = Path(folder)
    files = sorted(str(p.relative_to(folder)).replace("\\", "/") for p in folder.rglob("*.png"))
    if not files:
        raise FileNotFoundError(f"no mask PNG files under {folder}")
    return bin_mask_files(files, root=folder, hole=hole, bins=bins)


def pair_with_masks(image_names: Sequence[str], mask_names: Sequence[str]) -> list[tuple[str, str]]:
    """Fixed test pairing: image i with mask i mod N."""
    if not mask_names:
        raise ValueError("no masks to pair with")
    n = len(mask_names)
    return [(im, mask_names[i % n]) for i, im in enumerate(image_names)]
