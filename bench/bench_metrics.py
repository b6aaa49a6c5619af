"""Benchmark: SEM-Net metric protocols (PSNR, SSIM 7x7 uniform, L1) over many 256x256 pairs.

Compares a plain scikit-image loop with ``ssmrepro.metrics.evaluate_pairs`` (one process and
worker processes) on the same in-memory uint8 pairs, checks that the per-image numbers agree,
prints one JSON line and writes the "Metrics" section of BENCHMARKS.md.

    OMP_NUM_THREADS=1 python bench/bench_metrics.py            # 1,000 pairs, workers 1 and 2
    python bench/bench_metrics.py --n 200 --no-write           # quick look, file untouched
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from scipy.ndimage import gaussian_filter
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

from ssmrepro.metrics import evaluate_pairs

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_all import machine as machine_info, replace_section  # noqa: E402

PROTOCOLS = ["psnr[rgb,uint8]", "ssim[uniform7,rgb,uint8]", "l1[whole,percent]"]
ROOT = Path(__file__).resolve().parents[1]


def make_pairs(n: int, size: int, seed: int = 0):
    """n (pred, gt) uint8 pairs: 16 textured ground truths, each pred with its own noise."""
    rng = np.random.default_rng(seed)
    bases = []
    for _ in range(16):
        x = gaussian_filter(rng.random((size, size, 3)), sigma=(4, 4, 0))
        x = (x - x.min()) / (x.max() - x.min())
        bases.append(np.round(x * 255).astype(np.uint8))
    preds, gts = [], []
    for i in range(n):
        gt = bases[i % len(bases)]
        noise = rng.normal(0, 8, gt.shape).astype(np.float32)
        preds.append(np.clip(np.round(gt + noise), 0, 255).astype(np.uint8))
        gts.append(gt)
    return preds, gts


def plain_loop(preds, gts):
    """What a script does: scikit-image calls (and the L1 formula) pair by pair."""
    psnr, ssim, l1 = [], [], []
    for p, g in zip(preds, gts):
        psnr.append(peak_signal_noise_ratio(g, p, data_range=255))
        ssim.append(structural_similarity(g, p, channel_axis=2, data_range=255))
        l1.append(np.mean(np.abs(p / 255.0 - g / 255.0)) * 100)
    return {"psnr[rgb,uint8]": psnr, "ssim[uniform7,rgb,uint8]": ssim, "l1[whole,percent]": l1}


def timed(fn, *args, **kwargs):
    t = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - t


def machine() -> str:
    m = machine_info()
    return f"{m['cpu']}, {m['cores']} cores available, Python {m['python']}"


def write_section(path: Path, body: str) -> None:
    """Replace (or append) the '## Metrics' section, leaving every other section as it is."""
    replace_section(path, "## Metrics", "## Metrics\n\n" + body.strip() + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    ap.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = ap.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]

    preds, gts = make_pairs(args.n, args.size)
    load_before = os.getloadavg()[0]
    plain, t_plain = timed(plain_loop, preds, gts)
    runs = {}
    max_diff = {pid: 0.0 for pid in PROTOCOLS}
    identical = {pid: True for pid in PROTOCOLS}
    for w in workers:
        out, t = timed(evaluate_pairs, preds, gts, protocols=PROTOCOLS, per_image=True, workers=w)
        runs[w] = {"seconds": round(t, 3), "ms_per_pair": round(1000 * t / args.n, 3),
                   "speedup_vs_plain": round(t_plain / t, 2),
                   "means": {pid: out["metrics"][pid]["value"] for pid in PROTOCOLS}}
        for pid in PROTOCOLS:
            a, b = np.asarray(out["per_image"][pid]), np.asarray(plain[pid])
            identical[pid] &= bool(np.array_equal(a, b))
            max_diff[pid] = max(max_diff[pid], float(np.max(np.abs(a - b))))
    load_after = os.getloadavg()[0]

    command = "OMP_NUM_THREADS=1 python bench/bench_metrics.py" + (
        f" --n {args.n}" if args.n != 1000 else "") + (
        f" --workers {args.workers}" if args.workers != "1,2" else "")
    result = {
        "bench": "metrics", "protocols": PROTOCOLS, "n_pairs": args.n,
        "size": [args.size, args.size], "plain_skimage_loop_s": round(t_plain, 3),
        "plain_ms_per_pair": round(1000 * t_plain / args.n, 3),
        "ours": {str(w): r for w, r in runs.items()},
        "identical_per_image": identical, "max_abs_diff_per_image": max_diff,
        "load_avg_1min": [round(load_before, 2), round(load_after, 2)],
        "machine": machine(),
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    print(json.dumps(result))

    if not args.no_write:
        rows = [f"| plain scikit-image loop | 1 | {t_plain:.2f} | {1000 * t_plain / args.n:.2f} "
                "| 1.00 |"]
        for w, r in runs.items():
            rows.append(f"| `evaluate_pairs` | {w} | {r['seconds']:.2f} | {r['ms_per_pair']:.2f} "
                        f"| {r['speedup_vs_plain']:.2f} |")
        same = ", ".join(
            f"`{pid}` " + ("bit-identical" if identical[pid] else f"max diff {max_diff[pid]:.1e}")
            for pid in PROTOCOLS)
        body = f"""
SEM-Net protocols ({", ".join(f"`{p}`" for p in PROTOCOLS)}) over {args.n:,} pairs of
{args.size}x{args.size} uint8 images, in memory, CPU.

- command: `{command}`
- machine: {result["machine"]}; 1-minute load average {load_before:.2f} before,
  {load_after:.2f} after (the machine is shared: timings move with the other work on it)
- date: {result["date"]}

| path | processes | seconds | ms / pair | speed-up |
|---|---|---|---|---|
{chr(10).join(rows)}

Per-image values against the plain loop: {same}. `evaluate_pairs` calls the same scikit-image
functions, so the speed-up comes only from worker processes (`workers=`); with one process it
pays for input checks. L1 is computed from integer differences (mean |p - g| / 255 * 100) where
the loop divides first, hence the last-bit differences.
"""
        write_section(Path(args.out), body)
    return 0


if __name__ == "__main__":
    sys.exit(main())
