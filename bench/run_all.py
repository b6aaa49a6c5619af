"""Run every benchmark and write BENCHMARKS.md.

    python bench/run_all.py            # full (about an hour on 2 shared cores)
    python bench/run_all.py --quick    # fewer repeats and smaller sizes (about 15 minutes)
    python bench/run_all.py --only scan,dag --out /tmp/B.md
    python bench/run_all.py --only metrics --merge bench/results/run_all.json   # redo one, keep the others

Each benchmark script runs in its own process with ``OMP_NUM_THREADS=1`` (the scan is also run
with 2 threads, the one measurement about threads) and writes its own section of the output file,
leaving the others as they are. This script then writes the "Summary" section at the top: the
machine (CPU model, cores, the 1-minute load average before and after each script: the machine is
shared, and timings move with the other work on it), the versions, the headline figures with the
exact command of each, and GPU status. Every comparison is a ratio of two figures measured side by
side in the same run (the scripts interleave or pair them); absolute times are medians over
repeats. ``bench/bench_gpu.py`` refuses without CUDA (exit status 3); its section then says so.

Also the shared helpers of the scripts in bench/ (``machine``, ``load_avg``, ``replace_section``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

from ssmrepro.provenance import cpu_model

REPO = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
SUMMARY = "## Summary"
GPU_SECTION = "## GPU"
NO_CUDA_EXIT = 3  # bench_gpu.py's exit status when there is no CUDA device
RECORD = BENCH / "results" / "run_all.json"  # the last full or merged run behind BENCHMARKS.md


# --- helpers shared by the bench scripts -------------------------------------------------------
def load_avg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def _version(dist: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:
        return None


def machine() -> dict:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    out = {"cpu": cpu_model(), "cores": cores, "python": platform.python_version(),
           "load_avg_1min": load_avg()}
    for dist in ("torch", "numpy", "scikit-image", "snakemake", "PyYAML", "jsonschema", "fvcore",
                 "mamba-ssm"):
        out[dist.lower()] = _version(dist)
    try:
        import yaml

        out["libyaml"] = bool(getattr(yaml, "__with_libyaml__", False))
    except ImportError:
        pass
    return out


def replace_section(path: Path, heading: str, body: str, top: bool = False) -> None:
    """Replace the section starting at ``heading`` (up to the next ``## ``) with ``body``; add it
    at the end (or right after the title with ``top``) when absent. Other sections are kept."""
    path = Path(path)
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    body = body.rstrip("\n") + "\n"
    pattern = re.compile(r"^" + re.escape(heading) + r"\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        text = pattern.sub(lambda _: body + "\n", text, count=1)
    elif top:
        m = re.search(r"^## ", text, re.M)
        text = (text[:m.start()] + body + "\n" + text[m.start():]) if m else text.rstrip("\n") + "\n\n" + body
    else:
        text = text.rstrip("\n") + "\n\n" + body
    path.write_text(text.rstrip("\n") + "\n")


def last_json(stdout: str) -> dict | None:
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


# --- the runs --------------------------------------------------------------------------------
def plan_steps(quick: bool, out: Path) -> list[dict]:
    default = out.resolve() == (REPO / "BENCHMARKS.md").resolve()
    q = quick

    def to(flag="--out"):  # the scripts write BENCHMARKS.md by default: keep their commands short
        return [] if default else [flag, str(out)]

    steps = [
        {"name": "scan", "threads": 1,
         "args": ["bench/bench_scan.py", *(["--repeats", "3", "--reference-repeats", "1", "--long",
                                              "16384", "--long-repeats", "1"] if q else ["--legacy"]),
                  *to()]},
        {"name": "scan_2_threads", "threads": 2,
         "args": ["bench/bench_scan.py", "--threads", "2", "--long", "",
                  *(["--repeats", "3", "--reference-repeats", "1"] if q else []), "--no-write"]},
        {"name": "models", "threads": 1,
         "args": ["bench/bench_models.py", *(["--quick"] if q else []), *to()]},
        {"name": "dag", "threads": 1,
         "args": ["bench/bench_dag.py", *(["--repeats", "1", "--no-plan"] if q else []), *to()]},
        {"name": "metrics", "threads": 1,
         "args": ["bench/bench_metrics.py", *(["--n", "100"] if q else []), *to()]},
        {"name": "data", "threads": 1,
         "args": ["bench/bench_data.py", *(["--masks", "200"] if q else []), *to("--benchmarks")]},
        {"name": "smoke", "threads": None,
         "args": ["bench/bench_smoke.py", *to()]},
        {"name": "gpu", "threads": None,
         "args": ["bench/bench_gpu.py", *(["--quick"] if q else []), *to()]},
    ]
    return steps


def command_text(step: dict, out: Path) -> str:
    args = [a if a else '""' for a in step["args"]]
    env = f"OMP_NUM_THREADS={step['threads']} " if step["threads"] else ""
    return env + "python " + " ".join(args)


def run_step(step: dict, out: Path) -> dict:
    env = dict(os.environ)
    if step["threads"]:
        env["OMP_NUM_THREADS"] = str(step["threads"])
    rec = {"name": step["name"], "command": command_text(step, out), "load_before": load_avg(),
           "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    t = time.perf_counter()
    p = subprocess.run([sys.executable, *step["args"]], cwd=REPO, env=env, capture_output=True,
                       text=True)
    rec.update(wall_s=round(time.perf_counter() - t, 1), load_after=load_avg(), rc=p.returncode,
               result=last_json(p.stdout))
    if p.returncode not in (0, NO_CUDA_EXIT if step["name"] == "gpu" else 0):
        rec["error"] = (p.stderr or p.stdout).strip().splitlines()[-5:]
    if step["name"] == "gpu" and p.returncode == NO_CUDA_EXIT:
        rec["refused"] = (p.stderr or p.stdout).strip().splitlines()[-1]
    print(f"[run_all] {step['name']}: rc {p.returncode}, {rec['wall_s']} s, load "
          f"{rec['load_before']} -> {rec['load_after']}", file=sys.stderr, flush=True)
    return rec


# --- the summary -----------------------------------------------------------------------------
def _f(x, nd=2):
    return "n/a" if x is None else f"{x:.{nd}f}"


def headline_rows(recs: dict) -> list[str]:
    rows = []

    def cmd(name):
        return f"`{recs[name]['command']}`" if name in recs else ""

    s = (recs.get("scan") or {}).get("result")
    if s:
        rows.append(f"| selective scan fwd+bwd, L={s['length']}, d=192, n=16, 1 thread: `chunked` over "
                    f"`reference` | {s['ratio_wall']:.1f}x wall, {s['ratio_cpu']:.1f}x CPU "
                    f"(chunked {s['chunked']['wall_s'] * 1e3:.0f} ms, reference "
                    f"{s['reference']['wall_s'] * 1e3:.0f} ms) | >= 10x | {cmd('scan')} |")
    s2 = (recs.get("scan_2_threads") or {}).get("result")
    if s2:
        more = ""
        same_run = not (recs["scan"].get("merged") or recs["scan_2_threads"].get("merged")) if s else False
        if s and same_run:  # a ratio across two runs would compare different loads
            more = (f"; 2 threads over 1 thread (wall): `chunked` "
                    f"{s['chunked']['wall_s'] / s2['chunked']['wall_s']:.2f}x, `reference` "
                    f"{s['reference']['wall_s'] / s2['reference']['wall_s']:.2f}x")
        rows.append(f"| same, 2 threads | {s2['ratio_wall']:.1f}x wall, {s2['ratio_cpu']:.1f}x CPU "
                    f"(chunked {s2['chunked']['wall_s'] * 1e3:.0f} ms, reference "
                    f"{s2['reference']['wall_s'] * 1e3:.0f} ms){more} | >= 10x | {cmd('scan_2_threads')} |")
    m = (recs.get("models") or {}).get("result")
    if m:
        for card, r in m["models"].items():
            ch = r["backends"].get("chunked", {})
            ref = r["backends"].get("reference", {})
            txt = (f"{_f(ch.get('wall_s'), 1)} s wall, {_f(ch.get('cpu_s'), 1)} s CPU, peak "
                   f"+{_f(ch.get('peak_mib'), 0)} MiB"
                   if ch.get("wall_s") else ch.get("status", "n/a"))
            if ref.get("cpu_s") and ch.get("cpu_s"):
                txt += f"; `reference` scan {ref['cpu_s'] / ch['cpu_s']:.1f}x the CPU time"
            elif ref.get("status"):
                txt += f"; `reference`: {ref['status']}"
            rows.append(f"| {card} forward, paper scale, {r['input']}, CPU 1 thread (`chunked` scan) "
                        f"| {txt} | | {cmd('models')} |")
    d = (recs.get("dag") or {}).get("result")
    if d:
        for dr in d["dry_runs"]:
            rows.append(f"| `{dr['command']}` | DAG build {dr['dag_build_s']} s; whole command "
                        f"{dr['wall_s']} s (of which `import snakemake.cli` {dr['import_s']} s) | "
                        f"{'<= 5 s (paper)' if 'paper' in dr['command'] else ''} | {cmd('dag')} |")
        h = d.get("harness_parse") or {}
        if h.get("libyaml"):
            rows.append(f"| harness YAML parsing (tables + cards), libyaml over pure-Python PyYAML | "
                        f"{h['ratio']}x ({h['pure_python_s']} s -> {h['libyaml_s']} s) | | {cmd('dag')} |")
        p = d.get("plan")
        if p:
            rows.append(f"| `{p['command']}` | "
                        f"{str(p['wall_s']) + ' s' if p['status'] == 'ok' else p['status']} | | {cmd('dag')} |")
    mt = (recs.get("metrics") or {}).get("result")
    if mt:
        rows.append(f"| SEM-Net metrics (PSNR, SSIM, L1), `evaluate_pairs` over a plain loop | "
                    f"{_metrics_text(mt)} | | {cmd('metrics')} |")
    da = (recs.get("data") or {}).get("result")
    if da:
        mk = da.get("masks", {})
        rows.append(f"| free-form masks 256x256 per CPU second | {mk.get('free_form_per_cpu_s')} | "
                    f">= 1000 | {cmd('data')} |")
    sm = (recs.get("smoke") or {}).get("result")
    if sm:
        rows.append(f"| smoke `reproduce_all` from a fresh clone, `snakemake --cores {sm['cores']}` | "
                    f"{sm['wall_s'] / 60:.1f} min wall ({sm['jobs']} jobs), {sm['cpu_s']:.0f} s CPU | "
                    f"<= 15 min | {cmd('smoke')} |")
    g = recs.get("gpu")
    if g:
        if g.get("refused"):
            rows.append(f"| GPU benchmarks | not run: {g['refused']} | | {cmd('gpu')} |")
        elif g.get("result"):
            rows.append(f"| GPU benchmarks | see \"GPU\" ({g['result'].get('device', '?')}) | | {cmd('gpu')} |")
    return rows


def targets(recs: dict) -> list[str]:
    """One line per target of the issue, met or not."""
    out = []

    def res(name):
        return (recs.get(name) or {}).get("result") or {}

    s, s2 = res("scan"), res("scan_2_threads")
    if s:
        out.append(f"- scan `chunked` >= 10x `reference` (fwd+bwd, L = {s['length']}): "
                   f"{'met' if s['ratio_wall'] >= 10 else 'NOT met'} at 1 thread ({s['ratio_wall']:.1f}x)"
                   + (f"; {'met' if s2['ratio_wall'] >= 10 else 'not met'} at 2 threads "
                      f"({s2['ratio_wall']:.1f}x)" if s2 else ""))
    d = res("dag")
    for dr in d.get("dry_runs", []):
        if "scale=paper" in dr["command"]:
            out.append(f"- paper-scale dry run, DAG build <= 5 s: {'met' if dr['dag_build_s'] <= 5 else 'NOT met'} "
                       f"({dr['dag_build_s']} s; the whole command {dr['wall_s']} s)")
    sm = res("smoke")
    if sm:
        out.append(f"- smoke `reproduce_all` <= 15 min: {'met' if sm['wall_s'] <= 900 else 'NOT met'} "
                   f"({sm['wall_s'] / 60:.1f} min)")
    mk = res("data").get("masks", {})
    if mk:
        out.append(f"- free-form masks >= 1000 per CPU second: "
                   f"{'met' if mk.get('free_form_per_cpu_s', 0) >= 1000 else 'NOT met'} ({mk.get('free_form_per_cpu_s')})")
    return ["Targets:", "", *out, ""] if out else []


def _metrics_text(mt: dict) -> str:
    ours = mt.get("ours", {})
    parts = [f"{w} process(es): {r['speedup_vs_plain']:.2f}x the plain scikit-image loop "
             f"({r['ms_per_pair']:.1f} vs {mt['plain_ms_per_pair']:.1f} ms / pair)" for w, r in ours.items()]
    return f"{mt['n_pairs']} pairs; " + "; ".join(parts)


def write_summary(out: Path, recs: dict, mach: dict, quick: bool, started: str,
                  merged_from: str | None = None) -> None:
    versions = ", ".join(f"{k} {mach[k]}" for k in ("torch", "numpy", "scikit-image", "snakemake",
                                                   "pyyaml", "jsonschema", "fvcore", "mamba-ssm")
                         if mach.get(k))
    lines = [SUMMARY, "",
             f"Written by `python bench/run_all.py{' --quick' if quick else ''}` (every script below, "
             "one after another; each also rewrote its own section further down).", "",
             f"- machine: {mach['cpu']}, {mach['cores']} cores visible, shared with other work "
             "(the 1-minute load average is recorded around every script); no GPU "
             f"(`torch.cuda.is_available()` is {_cuda_available()})",
             f"- Python {mach['python']}; {versions}; PyYAML with libyaml: {mach.get('libyaml')}",
             f"- started {started}; {'quick run (fewer repeats, smaller sizes)' if quick else 'full run'}"
             + (f"; rows marked (merged) are from the run started {merged_from} (`--merge`)"
                if merged_from else ""),
             "", "| figure | value | target | command |", "|---|---|---|---|",
             *headline_rows(recs), "", *targets(recs),
             "| script | started | exit | wall s | load before | load after |",
             "|---|---|---|---|---|---|"]
    for r in recs.values():
        lines.append(f"| `{r['command']}` | {r.get('date') or ''}{' (merged)' if r.get('merged') else ''} | "
                     f"{r['rc']} | {r['wall_s']} | {r['load_before']} | {r['load_after']} |")
    errors = [r for r in recs.values() if r.get("error")]
    for r in errors:
        lines.append("")
        lines.append(f"`{r['name']}` failed: " + " / ".join(r["error"]))
    replace_section(out, SUMMARY, "\n".join(lines) + "\n", top=True)


def _cuda_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


def ensure_gpu_section(out: Path, rec: dict | None) -> None:
    """Without CUDA, keep a GPU section written on a GPU machine; else say that none was run."""
    text = out.read_text() if out.exists() else ""
    if not rec or not rec.get("refused") or GPU_SECTION + "\n" in text:
        return
    body = [GPU_SECTION, "",
            "Not measured: this machine has no CUDA device (`python bench/bench_gpu.py` answered "
            f"\"{rec['refused']}\"). No GPU figure in this file comes from a measurement.",
            "On a machine with one (and mamba-ssm for the `cuda` scan backend) run "
            "`python bench/bench_gpu.py`: it writes this section (the GPU named, every figure with "
            "its command) and `bench/step_times.json` for `ssmrepro plan --step-seconds`.",
            "Paper figures it checks: EVSSM 1280x720 inference 89 ms; Table 11 kernel sizes 3/5/7/9: "
            "83/85/89/97 ms; Table 12 self-ensemble about 4x."]
    replace_section(out, GPU_SECTION, "\n".join(body) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer repeats, smaller sizes")
    ap.add_argument("--only", default="", help="comma-separated step names (scan, scan_2_threads, "
                                                 "models, dag, metrics, data, smoke, gpu)")
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    ap.add_argument("--merge", metavar="JSON", help="the JSON line an earlier run_all printed: its "
                    "records of the steps not run now go into the summary, marked (merged)")
    args = ap.parse_args(argv)
    out = Path(args.out).resolve()
    started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    mach = machine()
    steps = plan_steps(args.quick, out)
    if args.only:
        keep = set(args.only.split(","))
        unknown = keep - {s["name"] for s in steps}
        if unknown:
            ap.error(f"unknown step(s) {', '.join(sorted(unknown))}")
        steps = [s for s in steps if s["name"] in keep]
    recs = {}
    earlier = last_json(Path(args.merge).read_text())["steps"] if args.merge else {}
    ran = {s["name"] for s in steps}
    for step in plan_steps(args.quick, out):
        if step["name"] in ran:
            recs[step["name"]] = run_step(step, out)
        elif step["name"] in earlier:
            recs[step["name"]] = {**earlier[step["name"]], "merged": True}
    merged_from = (last_json(Path(args.merge).read_text()) or {}).get("started", "?") if args.merge else None
    ensure_gpu_section(out, recs.get("gpu"))
    write_summary(out, recs, mach, args.quick, started, merged_from)
    line = json.dumps({"bench": "run_all", "started": started, "machine": mach, "steps": recs})
    print(line)
    if out == (REPO / "BENCHMARKS.md").resolve():  # for a later `--merge bench/results/run_all.json`
        RECORD.parent.mkdir(exist_ok=True)
        tmp = RECORD.with_suffix(".tmp")
        tmp.write_text(line + "\n")
        tmp.replace(RECORD)
    failed = [r["name"] for r in recs.values() if r.get("error")]
    if failed:
        print(f"[run_all] failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
