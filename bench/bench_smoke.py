"""Benchmark of the main job: the smoke ``reproduce_all`` from a fresh clone, as a newcomer runs it.

    python bench/bench_smoke.py [--cores 2] [--keep DIR] [--no-write]

A fresh clone of this working tree (tracked and untracked-but-not-ignored files, committed in a new
repository: ``tests/test_workflow.py``'s ``fresh_clone``, as the integration tests make one) runs ``snakemake --cores N reproduce_all`` with
this checkout's virtual environment: the embedded datasets are built, every run trained at smoke
scale, every result evaluated, the receptive-field maps drawn and ``reports/`` rendered. Measured:

* the wall time of the whole command (target: 15 minutes or less on this kind of machine);
* the CPU time of all its processes (``RUSAGE_CHILDREN``), and the 1-minute load average before
  and after (the machine may be shared: the wall time moves with the other work on it);
* per rule, the number of jobs and the sum and maximum of their wall times, read off Snakemake's
  log (each job's start and "Finished jobid" time stamps, one-second resolution).

Prints one JSON line and writes the section "## Smoke pipeline" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO / "tests"))
from run_all import load_avg, machine, replace_section  # noqa: E402
from test_workflow import fresh_clone  # noqa: E402  (the clone the integration tests make)

SECTION = "## Smoke pipeline"
TARGET_S = 15 * 60

_STAMP = re.compile(r"^\[(\w{3} \w{3} +\d+ \d\d:\d\d:\d\d \d{4})\]$")
_RULE = re.compile(r"^(?:local)?rule (\w+):$")
_JOBID = re.compile(r"^\s+jobid: (\d+)$")
_DONE = re.compile(r"^Finished jobid: (\d+) \(Rule: (\w+)\)")


def job_times(log: str) -> dict[str, dict]:
    """Per rule: jobs, total and longest wall seconds, from Snakemake's time-stamped log."""
    stamp = None
    started: dict[str, tuple[str, datetime.datetime]] = {}
    pending_rule = None
    per_rule: dict[str, list[float]] = {}
    for line in log.splitlines():
        m = _STAMP.match(line.strip())
        if m:
            stamp = datetime.datetime.strptime(m.group(1), "%a %b %d %H:%M:%S %Y")
            continue
        m = _RULE.match(line.strip())
        if m:
            pending_rule = m.group(1)
            continue
        m = _JOBID.match(line)
        if m and pending_rule and stamp:
            started[m.group(1)] = (pending_rule, stamp)
            pending_rule = None
            continue
        m = _DONE.match(line.strip())
        if m and stamp and m.group(1) in started:
            rule, t0 = started.pop(m.group(1))
            per_rule.setdefault(rule, []).append((stamp - t0).total_seconds())
    return {r: {"jobs": len(v), "sum_s": round(sum(v), 1), "max_s": round(max(v), 1)}
            for r, v in sorted(per_rule.items(), key=lambda kv: -sum(kv[1]))}


def write_section(result: dict, path: Path) -> None:
    m = result["machine"]
    met = "met" if result["wall_s"] <= TARGET_S else "NOT met"
    rows = [f"| `{rule}` | {r['jobs']} | {r['sum_s']:.0f} | {r['max_s']:.0f} |"
            for rule, r in result["rules"].items()]
    lines = [
        SECTION, "",
        "The README's main job from a fresh clone: `snakemake --cores "
        f"{result['cores']} reproduce_all` (smoke scale, embedded datasets, every table and figure).",
        "",
        f"- command: `{result['command']}`",
        f"- machine: {m['cpu']}, {m['cores']} cores visible; 1-minute load average "
        f"{result['load_before']} before, {result['load_after']} after (the machine may be shared)",
        f"- date: {result['date']}; snakemake exit status {result['rc']}",
        "",
        f"Wall time: **{result['wall_s'] / 60:.1f} min** ({result['wall_s']:.0f} s; target <= "
        f"{TARGET_S // 60} min: {met}). CPU time of all processes: {result['cpu_s']:.0f} s "
        f"({result['cpu_s'] / result['wall_s']:.2f} cores busy on average). Jobs: {result['jobs']}.",
        "",
        "Per rule, from Snakemake's log (start and finish time stamps, 1 s resolution; jobs "
        "overlap, so the sums exceed the wall time):",
        "",
        "| rule | jobs | sum of job wall s | longest job s |",
        "|---|---|---|---|",
        *rows, "",
    ]
    replace_section(path, SECTION, "\n".join(lines))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cores", type=int, default=2)
    ap.add_argument("--keep", help="make the clone here and keep it (default: a temporary folder)")
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)

    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="ssmrepro-smoke-"))
    if work.exists() and any(work.iterdir()):
        ap.error(f"--keep {work}: not empty")
    work.mkdir(parents=True, exist_ok=True)
    clone = fresh_clone(work)  # work/clone
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.pop("SSMREPRO_ROOT", None)
    cmd = ["snakemake", "--cores", str(args.cores), "reproduce_all"]
    result = {"bench": "smoke_reproduce_all", "cores": args.cores, "machine": machine(),
              "command": "python bench/bench_smoke.py" + (f" --cores {args.cores}" if args.cores != 2 else ""),
              "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "load_before": load_avg()}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    with open(work / "snakemake.log", "w") as log:
        p = subprocess.run(cmd, cwd=clone, env=env, stdout=log, stderr=subprocess.STDOUT)
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    result["cpu_s"] = round((after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), 1)
    result["load_after"] = load_avg()
    result["rc"] = p.returncode
    text = (work / "snakemake.log").read_text()
    result["rules"] = job_times(text)
    result["jobs"] = sum(r["jobs"] for r in result["rules"].values())
    print(json.dumps(result))
    if p.returncode != 0:
        print(f"bench_smoke: snakemake failed (exit {p.returncode}); log: {work / 'snakemake.log'}",
              file=sys.stderr)
        return 1
    if not args.no_write:
        write_section(result, Path(args.out))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
