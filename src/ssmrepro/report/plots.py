"""Plots (matplotlib, Agg): metric vs mask ratio, receptive fields, activation maps, training curves.

Every function writes one PNG and returns its path, or None when there is nothing to draw; none
raises on odd input (a bad array or log is skipped and said so in the page).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Iterable

import numpy as np

ERF_THRESHOLDS = (0.2, 0.3, 0.5, 0.99)


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def mask_ratio_plot(title: str, conditions: list[str], labels: list[str], columns: list[tuple[str, str]],
                    series: list[dict], out: Path) -> Path | None:
    """One panel per metric column; per row the printed values (dashed) and the reproduced mean
    with its std across seeds (solid, error bars). ``series``: {label, paper: {col: [..]},
    mean: {col: [..]}, std: {col: [..]}} with None for gaps."""
    if len(conditions) < 2 or not series or not columns:
        return None
    plt = _plt()
    n = len(columns)
    fig, axes = plt.subplots(1, n, figsize=(3.1 * n, 3.0), squeeze=False)
    x = np.arange(len(conditions))
    cmap = plt.get_cmap("tab10")
    for j, (col, col_label) in enumerate(columns):
        ax = axes[0][j]
        for i, s in enumerate(series):
            color = cmap(i % 10)
            p = [np.nan if v is None else v for v in s["paper"].get(col, [])]
            if p and not all(math.isnan(v) for v in p):
                ax.plot(x, p, "--o", color=color, ms=3, lw=1, alpha=0.8,
                        label=f"{s['label']} (paper)" if j == 0 else None)
            m = [np.nan if v is None else v for v in s["mean"].get(col, [])]
            if m and not all(math.isnan(v) for v in m):
                e = [0.0 if v is None else v for v in s["std"].get(col, [])]
                ax.errorbar(x, m, yerr=e, fmt="-s", color=color, ms=3, lw=1.5, capsize=2,
                            label=f"{s['label']} (reproduced)" if j == 0 else None)
        ax.set_xticks(x)
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_title(col_label, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    handles, names = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="lower center", ncol=min(4, len(names)), fontsize=7, frameon=False)
    fig.suptitle(f"{title}: metric vs mask ratio", fontsize=10)
    height = 2.6 + 0.2 * math.ceil(len(names) / 4)
    fig.set_figheight(height)
    bottom = (0.1 + 0.2 * math.ceil(len(names) / 4)) / height
    fig.subplots_adjust(left=0.04, right=0.99, top=1 - 0.45 / height, bottom=bottom + 0.35 / height, wspace=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def load_map(path: Path) -> tuple[np.ndarray | None, str | None]:
    """A receptive-field / activation array from ``.npy`` (2-D, or summed over a leading channel axis)."""
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported, not raised
        return None, f"cannot read {path.name}: {type(e).__name__}"
    arr = np.asarray(arr, dtype=np.float64)
    if arr.ndim == 3 and arr.shape[0] not in (0,):
        return arr, None
    if arr.ndim != 2 or arr.size == 0 or not np.isfinite(arr).all():
        return None, f"{path.name}: expected a finite 2-D (or 3-D) array, got shape {arr.shape}"
    return arr, None


def erf_2d(arr: np.ndarray) -> np.ndarray:
    a = np.abs(arr) if arr.ndim == 2 else np.abs(arr).sum(axis=0)
    return np.maximum(a, 0)


def erf_area_ratios(arr: np.ndarray, thresholds: Iterable[float] = ERF_THRESHOLDS) -> dict[str, float]:
    """RepLKNet's high-contribution area ratio: the smallest centred square holding a fraction t
    of the total contribution, as a fraction of the image area (larger = wider receptive field)."""
    a = erf_2d(arr)
    total = a.sum()
    h, w = a.shape
    if total <= 0:
        return {f"{t:g}": float("nan") for t in thresholds}
    a = a / total
    cy, cx = h // 2, w // 2
    out = {}
    for t in thresholds:
        area = 1.0
        for r in range(0, max(h, w)):
            y0, y1, x0, x1 = max(cy - r, 0), min(cy + r + 1, h), max(cx - r, 0), min(cx + r + 1, w)
            if a[y0:y1, x0:x1].sum() >= t - 1e-12:
                area = (y1 - y0) * (x1 - x0) / (h * w)
                break
        out[f"{t:g}"] = float(area)
    return out


def erf_plot(title: str, panels: list[tuple[str, np.ndarray]], out: Path) -> Path | None:
    if not panels:
        return None
    plt = _plt()
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(2.6 * n, 2.9), squeeze=False)
    for ax, (label, arr) in zip(axes[0], panels):
        a = erf_2d(arr)
        a = (a / a.max()) ** 0.25 if a.max() > 0 else a
        ax.imshow(a, cmap="RdYlGn", vmin=0, vmax=1)
        ax.set_title(label, fontsize=8)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.82, wspace=0.08)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def activation_plot(title: str, maps: list[np.ndarray], names: list[str], out: Path) -> Path | None:
    """One panel per map (e.g. per EVS block), normalised like the ERF."""
    if not maps:
        return None
    plt = _plt()
    n = min(len(maps), 8)
    fig, axes = plt.subplots(1, n, figsize=(2.4 * n, 2.7), squeeze=False)
    for i, ax in enumerate(axes[0]):
        a = np.maximum(np.asarray(maps[i], dtype=np.float64), 0)
        a = (a / a.max()) ** 0.25 if a.max() > 0 else a
        ax.imshow(a, cmap="RdYlGn", vmin=0, vmax=1)
        ax.set_title(names[i], fontsize=7)
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.8, wspace=0.08)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


_SKIP_KEYS = {"step", "iter", "iteration", "epoch", "time", "time_s", "wall", "elapsed", "seed", "lr"}


def read_log(path: Path) -> list[dict]:
    """Numeric records of a ``log.jsonl`` (bad lines skipped)."""
    records = []
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict):
            records.append(rec)
    return records


def curves_plot(title: str, logs: dict[str, list[dict]], out: Path, max_keys: int = 4) -> Path | None:
    """Training curves: one panel per logged quantity (loss first), one line per run."""
    keys: list[str] = []
    for recs in logs.values():
        for r in recs:
            for k, v in r.items():
                if k not in _SKIP_KEYS and isinstance(v, (int, float)) and not isinstance(v, bool) and k not in keys:
                    keys.append(k)
    if not keys:
        return None
    keys.sort(key=lambda k: (0 if k == "loss" else 1 if "loss" in k else 2, k))
    keys = keys[:max_keys]
    plt = _plt()
    nlines = math.ceil(len(logs) / 3)
    fig, axes = plt.subplots(1, len(keys), figsize=(3.4 * len(keys), 2.6 + 0.2 * nlines), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for label, recs in logs.items():
            pts = [(r.get("step", r.get("iter", i)), r[key]) for i, r in enumerate(recs)
                   if isinstance(r.get(key), (int, float)) and not isinstance(r.get(key), bool)]
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, lw=1, label=label)
        ax.set_title(key, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if key.startswith("loss") or "loss" in key:
            if all(y > 0 for recs in logs.values() for r in recs for y in [r.get(key)] if isinstance(y, (int, float))):
                ax.set_yscale("log")
    handles, names = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, names, loc="lower center", ncol=min(3, len(names)), fontsize=7, frameon=False)
    fig.suptitle(title, fontsize=9)
    height = fig.get_figheight()
    bottom = (0.35 + 0.2 * math.ceil(len(names) / 3)) / height
    fig.subplots_adjust(left=0.07, right=0.98, top=1 - 0.45 / height, bottom=bottom + 0.3 / height, wspace=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
