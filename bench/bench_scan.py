"""Benchmark of the selective scan on the CPU: ``chunked`` vs ``reference``, forward + backward.

    OMP_NUM_THREADS=1 python bench/bench_scan.py

Batch 1, d = 192, n = 16, float32, input-dependent B/C (b, n, l), with z, D, delta_bias and
softplus (the Mamba-1 call). The loss is out.sum(); gradients for every input. Times are the
median over repeats of forward + backward (wall clock, and CPU time of this process, which moves
less when other jobs share the machine). ``chunked`` alone is also timed at longer lengths.
``--legacy`` also times the reference loop as first written (one index operation per step,
as mamba-ssm's ``selective_scan_ref``; its backward is O(L^2)): slow, one repeat.

Prints one JSON line and writes the section "Selective scan (CPU)" of BENCHMARKS.md (replaced
if present, other sections kept).
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from pathlib import Path

import torch

from ssmrepro.ssm.chunked import selective_scan_chunked
from ssmrepro.ssm.reference import (
    compute_dtype,
    expand_groups,
    finish,
    prepare_delta,
    selective_scan_reference,
)

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_all import machine as machine_info, replace_section  # noqa: E402

SECTION = "## Selective scan (CPU)"


def legacy_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                     return_last_state=False):
    """The loop with one index operation per step (each backward of x[:, :, i] adds a full-size
    zero tensor: O(L^2) memory traffic). Same values as ``selective_scan_reference``."""
    dtype_in, dtype = u.dtype, compute_dtype(u, delta, A, B, C)
    u_c = u.to(dtype)
    delta = prepare_delta(delta, delta_bias, delta_softplus, dtype)
    A = A.to(dtype)
    b, d, length = u.shape
    B = (expand_groups(B, d) if B.dim() == 4 else B).to(dtype)
    C = (expand_groups(C, d) if C.dim() == 4 else C).to(dtype)
    deltaA = torch.exp(delta.unsqueeze(-1) * A[None, :, None, :])
    deltaB_u = (delta * u_c).unsqueeze(-1) * B.transpose(1, 2)[:, None, :, :]
    x = u_c.new_zeros((b, d, A.shape[1]))
    ys = []
    for i in range(length):
        x = deltaA[:, :, i] * x + deltaB_u[:, :, i]
        ys.append((x * C[:, None, :, i]).sum(-1))
    out = finish(torch.stack(ys, dim=2), u, D, z, dtype_in, dtype)
    return (out, x) if return_last_state else out


def inputs(length, d=192, n=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return {"u": r(1, d, length), "delta": 0.5 * r(1, d, length), "A": -torch.exp(0.5 * r(d, n)),
            "B": r(1, n, length), "C": r(1, n, length), "D": r(d), "z": r(1, d, length),
            "delta_bias": 0.5 * r(d)}


def time_fwd_bwd(fn, inp, repeats, warmup):
    walls, cpus = [], []
    for i in range(warmup + repeats):
        leaves = {k: v.clone().requires_grad_() for k, v in inp.items()}
        w0, c0 = time.perf_counter(), time.process_time()
        fn(**leaves, delta_softplus=True).sum().backward()
        w1, c1 = time.perf_counter(), time.process_time()
        if i >= warmup:
            walls.append(w1 - w0)
            cpus.append(c1 - c0)
    return {"wall_s": statistics.median(walls), "cpu_s": statistics.median(cpus),
            "repeats": repeats, "all_wall_s": [round(t, 4) for t in walls]}


def write_section(result, path):
    m = result["machine"]
    rows = [f"| `reference` | {result['length']} | {result['reference']['wall_s']:.3f} | "
            f"{result['reference']['cpu_s']:.3f} | {result['reference']['repeats']} |",
            f"| `chunked` | {result['length']} | {result['chunked']['wall_s']:.4f} | "
            f"{result['chunked']['cpu_s']:.4f} | {result['chunked']['repeats']} |"]
    for L, r in result["chunked_long"].items():
        rows.append(f"| `chunked` | {L} | {r['wall_s']:.3f} | {r['cpu_s']:.3f} | {r['repeats']} |")
    if "legacy_reference" in result:
        r = result["legacy_reference"]
        rows.append(f"| legacy reference loop (per-step indexing) | {result['length']} | "
                    f"{r['wall_s']:.1f} | {r['cpu_s']:.1f} | {r['repeats']} |")
    lines = [
        SECTION, "",
        "Forward + backward (loss = out.sum(), gradients for u, delta, A, B, C, D, z, delta_bias), "
        "batch 1, d = 192, n = 16, float32, B/C (1, n, L), z, D, delta_bias, softplus.",
        "Median over repeats (after one warm-up run) of wall-clock and process CPU seconds.", "",
        f"- command: `{result['command']}`",
        f"- machine: {m['cpu']}, {m['cores']} cores visible (shared; 1-minute load average "
        f"{m['load_avg_1min']} at the start), Python {m['python']}, torch {m['torch']}, "
        f"{m['threads']} thread(s)",
        f"- date: {result['date']}", "",
        "| backend | L | wall s (median) | CPU s (median) | repeats |",
        "|---|---|---|---|---|",
        *rows, "",
        f"Speed-up of `chunked` over `reference` at L = {result['length']}: "
        f"{result['ratio_wall']:.1f}x wall clock, {result['ratio_cpu']:.1f}x CPU time.",
    ]
    if "legacy_reference" in result:
        lines.append(f"Over the legacy loop: {result['ratio_legacy_wall']:.0f}x wall clock.")
    lines += ["", "`chunked` keeps its work buffers bounded (superblocks of about 2^21 elements), so "
              "its time grows linearly with L; `reference` materialises (b, d, L, n) tensors and "
              "runs one autograd step per position.", ""]
    replace_section(path, SECTION, "\n".join(lines))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--length", type=int, default=4096)
    ap.add_argument("--repeats", type=int, default=7, help="chunked repeats")
    ap.add_argument("--reference-repeats", type=int, default=3)
    ap.add_argument("--long", default="16384,65536", help="lengths timed for chunked alone")
    ap.add_argument("--long-repeats", type=int, default=3)
    ap.add_argument("--legacy", action="store_true", help="also time the O(L^2)-backward loop")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    result = {"bench": "selective_scan_cpu", "length": args.length,
              "machine": {**machine_info(), "threads": torch.get_num_threads()},
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "command": "OMP_NUM_THREADS=1 python bench/bench_scan.py" + (
                  " " + " ".join(sys.argv[1:]) if argv is None and sys.argv[1:] else "")}
    inp = inputs(args.length)
    with torch.no_grad():  # the two agree before we time them
        a = selective_scan_chunked(**inp, delta_softplus=True)
        b = selective_scan_reference(**inp, delta_softplus=True)
        result["max_rel_diff"] = float((a - b).abs().max() / b.abs().max())
    result["chunked"] = time_fwd_bwd(selective_scan_chunked, inp, args.repeats, warmup=1)
    result["reference"] = time_fwd_bwd(selective_scan_reference, inp, args.reference_repeats, warmup=0)
    result["ratio_wall"] = result["reference"]["wall_s"] / result["chunked"]["wall_s"]
    result["ratio_cpu"] = result["reference"]["cpu_s"] / result["chunked"]["cpu_s"]
    result["chunked_long"] = {}
    for L in [int(x) for x in args.long.split(",") if x]:
        result["chunked_long"][L] = time_fwd_bwd(selective_scan_chunked, inputs(L), args.long_repeats,
                                                 warmup=0)
    if args.legacy:
        result["legacy_reference"] = time_fwd_bwd(legacy_reference, inp, 1, warmup=0)
        result["ratio_legacy_wall"] = result["legacy_reference"]["wall_s"] / result["chunked"]["wall_s"]
    print(json.dumps(result))
    if not args.no_write:
        write_section(result, Path(args.out))


if __name__ == "__main__":
    main()
