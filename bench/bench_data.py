"""Data benchmark: irregular masks per second at 256 x 256 on one core, loader throughput.

    OMP_NUM_THREADS=1 python bench/bench_data.py [--masks 2000] [--no-write]

Prints one JSON line and replaces (or appends) the section "## Data" of BENCHMARKS.md at the
repository root, leaving every other section as it is. Rates are given per CPU second of this
process (``*_per_cpu_s``: what one core delivers, robust to other load on a shared machine) and
per wall-clock second (``*_per_wall_s``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402

from ssmrepro.provenance import cpu_model  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_all import replace_section  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TARGET_MASKS_PER_S = 1000


def _timed(fn, *args, **kwargs):
    c0, w0 = time.process_time(), time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.process_time() - c0, time.perf_counter() - w0


def bench_masks(n: int, size: int = 256) -> dict:
    from ssmrepro.data import masks as M

    M.free_form_masks(64, size, 0)  # warm-up (calibration, caches)
    best_cpu = best_wall = 0.0
    for rep in range(3):
        ms, cpu, wall = _timed(M.free_form_masks, n, size, rep)
        best_cpu = max(best_cpu, n / cpu)
        best_wall = max(best_wall, n / wall)
    ratios = M.hole_ratio(ms)
    hist = np.histogram(ratios, bins=[0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1.0])[0].tolist()
    binned = {}
    for b in M.GROUP_BINS:
        k = max(n // 4, 50)
        _, cpu, wall = _timed(M.masks_in_bin, k, b, size, 1)
        binned[b] = {"per_cpu_s": round(k / cpu, 1), "per_wall_s": round(k / wall, 1)}
    return {
        "size": size,
        "n": n,
        "free_form_per_cpu_s": round(best_cpu, 1),
        "free_form_per_wall_s": round(best_wall, 1),
        "ratio_histogram_0_10_20_30_40_50_60_100": hist,
        "in_bin": binned,
    }


def bench_loaders(size: int = 256, count: int = 32) -> dict:
    import torch

    torch.set_num_threads(1)
    from ssmrepro.data import loaders
    from ssmrepro.data.embedded import build_embedded

    res = {}
    with tempfile.TemporaryDirectory() as root:
        for name in ("embedded_inpainting", "embedded_deblur"):
            _, cpu, wall = _timed(build_embedded, name, root=root, size=size, count=count,
                                  test_count=8, masks_per_bin=8)
            res[f"build_{name}_s"] = round(wall, 2)

        def run(ds, reps=2):
            n = 0
            c0, w0 = time.process_time(), time.perf_counter()
            for e in range(reps):
                if hasattr(ds, "set_epoch"):
                    ds.set_epoch(e)
                for i in range(len(ds)):
                    ds[i]
                    n += 1
            return round(n / (time.process_time() - c0), 1), round(n / (time.perf_counter() - w0), 1)

        cases = {
            "inpainting_train_256": loaders.train_dataset("embedded_inpainting", "inpainting", 256, root=root),
            "inpainting_test_256_40-60": loaders.test_dataset("embedded_inpainting", "40-60", root=root),
            "deblur_train_patch128": loaders.train_dataset("embedded_deblur", "deblurring", 128, root=root),
            "deblur_test_256": loaders.test_dataset("embedded_deblur", "embedded_deblur", root=root),
        }
        for k, ds in cases.items():
            cpu_rate, wall_rate = run(ds)
            res[k] = {"items_per_cpu_s": cpu_rate, "items_per_wall_s": wall_rate}
    res["image_size"] = size
    return res


def write_section(result: dict, command: str, path: Path) -> None:
    m = result["masks"]
    lo = result["loaders"]
    lines = [
        "## Data",
        "",
        f"Command: `{command}`  ",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores visible "
        f"(shared; load average {result['machine']['loadavg']}), Python {result['machine']['python']}, "
        f"numpy {result['machine']['numpy']}, one thread (OMP_NUM_THREADS=1).  ",
        f"Date: {result['date']}",
        "",
        "Rates per CPU second of the benchmark process (what one core delivers) and per wall-clock "
        "second (lower when other jobs share the machine).",
        "",
        "| measure | per CPU s | per wall s |",
        "|---|---|---|",
        f"| free-form irregular masks, {m['size']}x{m['size']} (target >= {TARGET_MASKS_PER_S}/s) "
        f"| {m['free_form_per_cpu_s']} | {m['free_form_per_wall_s']} |",
    ]
    for b, r in m["in_bin"].items():
        lines.append(f"| masks forced into bin {b} %, {m['size']}x{m['size']} | {r['per_cpu_s']} | {r['per_wall_s']} |")
    for k in ("inpainting_train_256", "inpainting_test_256_40-60", "deblur_train_patch128", "deblur_test_256"):
        lines.append(f"| loader items: {k} | {lo[k]['items_per_cpu_s']} | {lo[k]['items_per_wall_s']} |")
    lines += [
        "",
        f"Hole-ratio histogram of {m['n']} free-form masks (0-10-20-30-40-50-60-100 %): "
        f"{m['ratio_histogram_0_10_20_30_40_50_60_100']}. Loader items are read from PNG, "
        f"{lo['image_size']}x{lo['image_size']} embedded images, single process (no DataLoader workers).",
        "",
    ]
    replace_section(path, "## Data", "\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--masks", type=int, default=2000)
    ap.add_argument("--no-write", action="store_true", help="do not touch BENCHMARKS.md")
    ap.add_argument("--benchmarks", default=str(REPO / "BENCHMARKS.md"))
    args = ap.parse_args(argv)
    result = {
        "bench": "data",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "machine": {
            "cpu": cpu_model(),
            "cores": os.cpu_count(),
            "loadavg": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None,
            "python": platform.python_version(),
            "numpy": np.__version__,
        },
        "masks": bench_masks(args.masks),
        "loaders": bench_loaders(),
    }
    result["masks"]["meets_target"] = result["masks"]["free_form_per_cpu_s"] >= TARGET_MASKS_PER_S
    print(json.dumps(result, sort_keys=True))
    if not args.no_write:
        cmd = "OMP_NUM_THREADS=1 python bench/bench_data.py" + (f" --masks {args.masks}" if args.masks != 2000 else "")
        write_section(result, cmd, Path(args.benchmarks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
