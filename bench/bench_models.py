"""Benchmark of whole-model forward passes on the CPU: SEM-Net and EVSSM at paper scale.

    OMP_NUM_THREADS=1 python bench/bench_models.py [--quick] [--backends chunked,skip,reference]

Cards ``semnet`` (inpainting: masked image + mask, 1x4x256x256 in all) and ``evssm``
(deblurring: 1x3x256x256), both at the ``paper`` scale, inputs from
``ssmrepro.complexity.example_inputs``; eval mode, ``torch.no_grad()``, float32, one thread.

Per scan backend (``ssmrepro.ssm.scan_backend``):

* ``chunked``: what the CPU runs (``auto`` resolves to it without CUDA);
* ``skip``: the scan replaced by zeros of the right shape, i.e. everything but the scan; the
  difference to ``chunked`` is the scan's share of the forward;
* ``reference``: the plain loop; slow (minutes per forward), so it is timed once without warm-up
  (``--reference-repeats``), under ``--reference-timeout`` (default 1800 s), and is off in
  ``--quick``.

Time: each backend in a fresh process, one warm-up forward, then the median of ``--repeats``
forwards (wall clock and process CPU time). Peak memory: ``ssmrepro.complexity.
peak_forward_memory`` (ru_maxrss after one forward minus the resident size before it, in a fresh
process) for ``chunked`` (the default backend), and the same child with the scan backend set for
the others. Prints one JSON line and writes the section "## Models (CPU)" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_all import load_avg, machine, replace_section  # noqa: E402

SECTION = "## Models (CPU)"
CARDS = ("semnet", "evssm")
SCALE = "paper"


def _child_time(card_name: str, backend: str, size: int, repeats: int, warmup: int, threads: int) -> dict:
    import torch

    from ssmrepro.cards import load_card
    from ssmrepro.complexity import count_parameters, example_inputs
    from ssmrepro.ssm.scan import scan_backend

    torch.set_num_threads(threads)
    card = load_card(card_name)
    model = card.build(SCALE).eval()
    inputs = example_inputs(card.task, (size, size))
    walls, cpus = [], []
    with torch.no_grad(), scan_backend(backend):
        for i in range(warmup + repeats):
            w, c = time.perf_counter(), time.process_time()
            out = model(*inputs)
            w, c = time.perf_counter() - w, time.process_time() - c
            if i >= warmup:
                walls.append(w)
                cpus.append(c)
    return {"wall_s": round(statistics.median(walls), 3), "cpu_s": round(statistics.median(cpus), 3),
            "all_wall_s": [round(x, 2) for x in walls], "repeats": repeats, "warmup": warmup,
            "params": count_parameters(model), "output": list(out.shape),
            "input": "x".join(str(s) for s in (1, sum(t.shape[1] for t in inputs), size, size))}


def _peak_child(card_name, scale, size, root, queue, backend):
    """``complexity._peak_memory_child`` with a scan backend set (the same measurement)."""
    from ssmrepro.complexity import _peak_memory_child
    from ssmrepro.ssm.scan import scan_backend

    with scan_backend(backend):
        _peak_memory_child(card_name, scale, size, root, queue)


def peak_memory(card_name: str, backend: str, size: int) -> int:
    from ssmrepro.cards import load_card
    from ssmrepro.complexity import peak_forward_memory

    card = load_card(card_name)
    if backend == "chunked":  # what auto means on the CPU: the library function itself
        return peak_forward_memory(card, SCALE, (size, size))
    import multiprocessing as mp

    from ssmrepro.paths import project_root

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_child, args=(card.name, SCALE, (size, size), str(project_root()),
                                                 queue, backend))
    proc.start()
    proc.join()
    if proc.exitcode != 0:
        raise RuntimeError(f"peak memory of {card_name} with {backend} failed (exit {proc.exitcode})")
    return int(queue.get())


def time_backend(card: str, backend: str, args, timeout: float) -> dict:
    ref = backend == "reference"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", card, backend, "--size",
           str(args.size), "--repeats", str(args.reference_repeats if ref else args.repeats),
           "--warmup", str(0 if ref else args.warmup), "--threads", str(args.threads)]
    load = load_avg()
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"status": f"not finished in {timeout:.0f} s", "load_avg_1min": load}
    if p.returncode != 0:
        return {"status": f"failed (exit {p.returncode}): " + (p.stderr.strip().splitlines() or ["?"])[-1],
                "load_avg_1min": load}
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["load_avg_1min"] = load
    return r


def write_section(r: dict, path: Path) -> None:
    m = r["machine"]
    lines = [SECTION, "",
             "Forward pass, eval mode, `torch.no_grad()`, float32, batch 1, paper-scale cards, inputs "
             "from `ssmrepro.complexity.example_inputs`; one thread. Time: a fresh process per backend, "
             f"{r['warmup']} warm-up forward(s), then the median of {r['repeats']} (`reference`: "
             "one run, no warm-up; see runs). Peak memory: "
             "`ssmrepro.complexity.peak_forward_memory` (ru_maxrss after one forward minus the resident "
             "size before it, fresh process; for `skip`/`reference` the same child with that scan "
             "backend set). `skip` replaces the scan by zeros: everything but the scan.", "",
             f"- command: `{r['command']}`",
             f"- machine: {m['cpu']}, {m['cores']} cores visible (shared), Python {m['python']}, torch "
             f"{m['torch']}; 1-minute load average {r['load_before']} before, {r['load_after']} after "
             "(per backend in the table)",
             f"- date: {r['date']}", "",
             "| card | input | params | scan backend | wall s (median) | CPU s (median) | runs | "
             "peak MiB | load |", "|---|---|---|---|---|---|---|---|---|"]
    for card, c in r["models"].items():
        for b, t in c["backends"].items():
            if "wall_s" in t:
                lines.append(f"| `{card}` | {c['input']} | {c['params'] / 1e6:.2f} M | `{b}` | "
                             f"{t['wall_s']:.2f} | {t['cpu_s']:.2f} | {t['all_wall_s']} | "
                             f"{t.get('peak_mib', 'n/a')} | {t['load_avg_1min']} |")
            else:
                lines.append(f"| `{card}` | {c['input']} | | `{b}` | {t['status']} | | | "
                             f"{t.get('peak_mib', 'n/a')} | {t['load_avg_1min']} |")
    lines.append("")
    for card, c in r["models"].items():
        b = c["backends"]
        parts = []
        if "cpu_s" in b.get("chunked", {}) and "cpu_s" in b.get("skip", {}):
            share = 1 - b["skip"]["cpu_s"] / b["chunked"]["cpu_s"]
            parts.append(f"the `chunked` scan is {share:.0%} of the forward's CPU time (chunked vs "
                         "skip, same run)")
        if "cpu_s" in b.get("chunked", {}) and "cpu_s" in b.get("reference", {}):
            parts.append(f"`reference` / `chunked` = {b['reference']['cpu_s'] / b['chunked']['cpu_s']:.1f}x "
                         f"CPU time ({b['reference']['wall_s'] / b['chunked']['wall_s']:.1f}x wall)")
        if parts:
            lines.append(f"- `{card}`: " + "; ".join(parts) + ".")
    lines.append("")
    replace_section(path, SECTION, "\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true",
                    help="1 timed run, no warm-up, backends chunked and skip")
    ap.add_argument("--cards", default=",".join(CARDS))
    ap.add_argument("--backends", default=None, help="default: chunked,skip,reference (quick: chunked,skip)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=None, help="default 3 (quick: 1)")
    ap.add_argument("--warmup", type=int, default=None, help="default 1 (quick: 0)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=1800, help="per backend (chunked, skip)")
    ap.add_argument("--reference-timeout", type=float, default=1800)
    ap.add_argument("--reference-repeats", type=int, default=1,
                    help="timed runs of the slow reference backend (no warm-up)")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--child", nargs=2, metavar=("CARD", "BACKEND"), help=argparse.SUPPRESS)
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    args.repeats = args.repeats if args.repeats is not None else (1 if args.quick else 3)
    args.warmup = args.warmup if args.warmup is not None else (0 if args.quick else 1)
    if args.child:
        print(json.dumps(_child_time(args.child[0], args.child[1], args.size, args.repeats,
                                     args.warmup, args.threads)))
        return 0
    backends = (args.backends or ("chunked,skip" if args.quick else "chunked,skip,reference")).split(",")
    cmd = "OMP_NUM_THREADS=1 python bench/bench_models.py" + (
        " " + " ".join(sys.argv[1:]) if argv is None and sys.argv[1:] else "")
    r = {"bench": "models_cpu", "command": cmd, "machine": machine(), "load_before": load_avg(),
         "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "repeats": args.repeats,
         "warmup": args.warmup, "size": args.size, "models": {}}
    for card in args.cards.split(","):
        c = {"backends": {}}
        for b in backends:
            t = time_backend(card, b, args, args.reference_timeout if b == "reference" else args.timeout)
            for k in ("params", "input", "output"):
                if k in t:
                    c[k] = t.pop(k)
            if not args.no_memory and "wall_s" in t:
                try:
                    t["peak_mib"] = round(peak_memory(card, b, args.size) / 2**20, 1)
                except RuntimeError as exc:
                    t["peak_mib"] = str(exc)
            c["backends"][b] = t
            print(f"[bench_models] {card} {b}: {t}", file=sys.stderr, flush=True)
        c.setdefault("input", "?")
        c.setdefault("params", 0)
        r["models"][card] = c
    r["load_after"] = load_avg()
    print(json.dumps(r))
    if not args.no_write:
        write_section(r, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
