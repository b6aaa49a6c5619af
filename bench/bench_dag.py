"""Benchmark of the harness itself: the Snakemake dry run (DAG build) and ``ssmrepro plan``.

    OMP_NUM_THREADS=1 python bench/bench_dag.py [--repeats 3] [--no-plan] [--no-write]

Measured, each as the median of ``--repeats`` runs (a fresh process each time):

* ``snakemake -n --cores 1 reproduce_all --config scale=<smoke|paper>``: wall time of the whole
  command, as a user types it;
* the same dry run split in two inside one process: importing ``snakemake.cli`` (which loads every
  installed executor plugin: the SLURM plugin runs ``scontrol show config`` at import to choose a
  default status command, up to its 10 s timeout when a ``slurm.conf`` names a controller that does
  not answer) and the rest (parsing the Snakefile, building the DAG, printing the dry run);
* ``scontrol show config`` alone (when ``scontrol`` is installed): the plugin's probe;
* the harness's own share of the Snakefile: building ``ssmrepro.workflow.Matrix`` and loading every
  card, in-process, with the libyaml parser the harness now uses and with PyYAML's pure-Python
  parser side by side (ratio; the loaded objects are checked to be equal);
* ``ssmrepro plan --scale paper`` (skipped with ``--no-plan``; it counts MACs of every card).

Prints one JSON line and writes the section "## Harness: DAG build and plan" of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_all import load_avg, machine, replace_section  # noqa: E402

SECTION = "## Harness: DAG build and plan"

# Runs snakemake's own entry point in this process, timing the import apart from the rest.
_SPLIT = r"""
import json, sys, time
t0 = time.perf_counter()
import snakemake.cli as cli
t1 = time.perf_counter()
code = 0
try:
    cli.main(sys.argv[1:])
except SystemExit as e:
    code = e.code or 0
t2 = time.perf_counter()
sys.stderr.write("\nSPLIT " + json.dumps({"import_s": t1 - t0, "dag_s": t2 - t1, "rc": code}) + "\n")
"""


def _env():
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def _wall(cmd: list[str], cwd: Path = REPO, timeout: float = 3600) -> tuple[float, subprocess.CompletedProcess]:
    t = time.perf_counter()
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=_env())
    return time.perf_counter() - t, p


def _median(xs):
    return round(statistics.median(xs), 3)


def dry_run(scale: str, repeats: int) -> dict:
    args = ["-n", "--cores", "1", "reproduce_all", "--config", f"scale={scale}"]
    snakemake = shutil.which("snakemake") or "snakemake"
    walls, imports, dags, loads = [], [], [], []
    jobs = None
    for _ in range(repeats):
        loads.append(load_avg())
        w, p = _wall([snakemake, *args])
        if p.returncode != 0:
            raise RuntimeError(f"snakemake {' '.join(args)} failed:\n{p.stderr[-2000:]}")
        walls.append(w)
        if jobs is None:
            jobs = _job_count(p.stdout + p.stderr)
        _, p = _wall([sys.executable, "-c", _SPLIT, *args])
        split = json.loads(p.stderr.rsplit("SPLIT ", 1)[1].splitlines()[0])
        if split["rc"] != 0:
            raise RuntimeError(f"snakemake (split) failed:\n{p.stderr[-2000:]}")
        imports.append(split["import_s"])
        dags.append(split["dag_s"])
    return {"command": f"snakemake {' '.join(args)}", "jobs": jobs, "wall_s": _median(walls),
            "import_s": _median(imports), "dag_build_s": _median(dags),
            "all_wall_s": [round(x, 2) for x in walls], "all_dag_build_s": [round(x, 3) for x in dags],
            "repeats": repeats, "load_avg_1min": loads}


def _job_count(text: str) -> int | None:
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[0] == "total" and parts[1].isdigit():
            return int(parts[1])
    return None


def slurm_probe(repeats: int) -> dict | None:
    if not shutil.which("scontrol"):
        return None
    walls, rcs = [], []
    for _ in range(repeats):
        try:
            w, p = _wall(["scontrol", "show", "config"], timeout=30)
            rcs.append(p.returncode)
        except subprocess.TimeoutExpired:
            w = 30.0
            rcs.append("timeout")
        walls.append(w)
    return {"command": "scontrol show config", "wall_s": _median(walls), "rc": rcs,
            "all_wall_s": [round(x, 2) for x in walls]}


def harness_parse(repeats: int) -> dict:
    """The Snakefile's own Python: Matrix (tables, figures, scales) + every card, libyaml vs pure."""
    import yaml

    from ssmrepro import cards, tables
    from ssmrepro.workflow import Matrix

    def once(loader):
        tables.YAML_LOADER, cards._YAML_LOADER = loader, loader
        cards._load_all.cache_clear()
        t = time.perf_counter()
        m = Matrix(REPO, "paper", [0])
        c = cards.all_cards(REPO)
        return time.perf_counter() - t, (repr(m.tables), repr(m.figures), m.all_results(), repr(c))

    fast, pure = getattr(yaml, "CSafeLoader", None), yaml.SafeLoader
    if fast is None:
        return {"libyaml": False}
    tf, tp = [], []
    once(fast)
    for _ in range(repeats):  # interleaved, so both see the same load
        t, a = once(fast)
        tf.append(t)
        t, b = once(pure)
        tp.append(t)
    once(fast)  # leave the module as the harness uses it
    return {"libyaml": True, "libyaml_s": _median(tf), "pure_python_s": _median(tp),
            "ratio": round(statistics.median(tp) / statistics.median(tf), 2), "same_objects": a == b,
            "repeats": repeats}


def plan_time(timeout: float) -> dict:
    cmd = ["ssmrepro", "plan", "--scale", "paper"]
    load = load_avg()
    try:
        w, p = _wall([shutil.which("ssmrepro") or "ssmrepro", *cmd[1:]], timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"command": " ".join(cmd), "status": f"timed out after {timeout:.0f} s",
                "load_avg_1min": load}
    status = "ok" if p.returncode == 0 else (
        f"killed by signal {-p.returncode}" if p.returncode < 0 else f"exit {p.returncode}")
    first = (p.stdout.splitlines() or [""])[0]
    return {"command": " ".join(cmd), "wall_s": round(w, 1), "status": status, "first_line": first,
            "load_avg_1min": load, "repeats": 1}


def write_section(r: dict, path: Path) -> None:
    m = r["machine"]
    lines = [SECTION, "",
             f"- command: `{r['command']}`",
             f"- machine: {m['cpu']}, {m['cores']} cores visible (shared), Python {m['python']}, "
             f"snakemake {m.get('snakemake', '?')}; 1-minute load average {r['load_before']} before, "
             f"{r['load_after']} after",
             f"- date: {r['date']}", "",
             "Dry runs (a fresh process each; median of "
             f"{r['dry_runs'][0]['repeats']}). *import* = `import snakemake.cli` (loads the executor "
             "plugins); *DAG build* = the rest of the same in-process run: parse the Snakefile "
             "(ssmrepro's tables and cards), build the DAG, print the dry run.", "",
             "| command | jobs | wall s (whole command) | import s | DAG build s | load (1 min) |",
             "|---|---|---|---|---|---|"]
    for d in r["dry_runs"]:
        lines.append(f"| `{d['command']}` | {d['jobs']} | {d['wall_s']} | {d['import_s']} | "
                     f"{d['dag_build_s']} | {', '.join(str(x) for x in d['load_avg_1min'])} |")
    lines.append("")
    probe = r.get("slurm_probe")
    if probe:
        lines.append(f"`{probe['command']}` alone (what the SLURM executor plugin runs when it is "
                     f"imported, with a 10 s timeout): median {probe['wall_s']} s "
                     f"(runs: {probe['all_wall_s']}, exit codes {probe['rc']}). Measured on this "
                     "machine: answered at once while a SLURM controller is up (the local one of "
                     "`scripts/slurm-local.sh`); about 9 s when `/etc/slurm/slurm.conf` names a "
                     "controller that is down; without a readable `slurm.conf` scontrol looks the "
                     "controller up in DNS (59 s here, cut to 10 s by the plugin's timeout); "
                     "instant where SLURM is not installed. That wait is inside *import*, before "
                     "the Snakefile is read: it is not the harness's, and nothing in the Snakefile "
                     "can avoid it.")
        lines.append("")
    h = r.get("harness_parse", {})
    if h.get("libyaml"):
        lines.append(f"Harness share of the DAG build (`Matrix(scale=paper)` + every card, "
                     f"in-process, median of {h['repeats']}, interleaved): libyaml parser "
                     f"{h['libyaml_s']} s, pure-Python PyYAML parser {h['pure_python_s']} s: "
                     f"{h['ratio']}x; the loaded tables, figures, results and cards are "
                     f"{'identical' if h['same_objects'] else 'DIFFERENT'}.")
        lines.append("")
    p = r.get("plan")
    if p:
        if p["status"] == "ok":
            lines.append(f"`{p['command']}`: {p['wall_s']} s wall, one run (load {p['load_avg_1min']} "
                         f"at the start); first line: {p['first_line']}")
        else:
            lines.append(f"`{p['command']}`: {p['status']} (load {p['load_avg_1min']} at the start).")
        lines.append("")
    target = r["dry_runs"][-1]
    lines.append(f"Target (issue \"Performance\"): the paper-scale dry run's DAG build in 5 s or less: "
                 f"DAG build {target['dag_build_s']} s, whole command {target['wall_s']} s.")
    replace_section(path, SECTION, "\n".join(lines) + "\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-plan", action="store_true", help="skip `ssmrepro plan --scale paper`")
    ap.add_argument("--plan-timeout", type=float, default=1800)
    ap.add_argument("--out", default=str(REPO / "BENCHMARKS.md"))
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args(argv)
    cmd = "OMP_NUM_THREADS=1 python bench/bench_dag.py" + (
        " " + " ".join(sys.argv[1:]) if argv is None and sys.argv[1:] else "")
    r = {"bench": "dag", "command": cmd, "machine": machine(), "load_before": load_avg(),
         "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    r["slurm_probe"] = slurm_probe(args.repeats)
    r["harness_parse"] = harness_parse(max(args.repeats, 3))
    r["dry_runs"] = [dry_run(s, args.repeats) for s in ("smoke", "paper")]
    if not args.no_plan:
        r["plan"] = plan_time(args.plan_timeout)
    r["load_after"] = load_avg()
    print(json.dumps(r))
    if not args.no_write:
        write_section(r, Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
