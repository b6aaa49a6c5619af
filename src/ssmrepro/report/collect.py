"""Read result files (Contract 4) and aggregate them over seeds, per table cell.

Only ``results/<scale>/<dataset_dir>/<card>/seed<S>/*.json`` is read for our training, and
``results/<scale>/<dataset_dir>/<card>/authors/*.json`` for the authors' released weights scored
with the card's switches (``ssmrepro evaluate-weights``; the "authors' weights" line). A result is matched to a table
cell by its content (``condition`` and ``options``), not by its file name, so the file-name
convention (``ssmrepro.tables.result_stem``) is a default, not a dependency. A file that does not
parse is a failed seed with the reason, never a crash.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..tables import Column, Job, options_match, result_stem

RESULT_SCHEMA_ID = "ssmrepro.result/1"
AUTHORS_DIR = "authors"  # = ssmrepro.authors.AUTHORS_DIR (not imported: the report reads no cards here)


@dataclass
class SeedResult:
    seed: int | None
    path: str  # relative to the results folder
    status: str  # "ok", "out of memory", "failed: ..."
    data: dict = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def condition(self) -> str | None:
        return self.data.get("condition")

    def provenance(self) -> dict:
        d = self.data
        run, prov = _obj(d.get("run")), _obj(d.get("provenance"))
        env = prov.get("environment")
        return {
            "seed": self.seed,
            "status": self.status,
            "file": self.path,
            "card": run.get("card"),
            "config_hash": run.get("config_hash"),
            "run_dir": run.get("run_dir"),
            "checkpoint": run.get("checkpoint"),
            "data_version": d.get("data_version"),
            "commit": prov.get("commit"),
            "dirty": prov.get("dirty"),
            "hardware": prov.get("hardware") if isinstance(prov.get("hardware"), str) else None,
            "created": prov.get("created"),
            "n_images": d.get("n_images"),
            "options": _obj(d.get("options")),
            "runtime_size": d.get("runtime_size"),
            "environment": env if isinstance(env, (str, dict)) else None,
        }


@dataclass
class Measure:
    """One column of one cell, over the seeds that produced a number."""

    values: list[float] = field(default_factory=list)
    seeds: list[int | None] = field(default_factory=list)
    protocols: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # per-seed reasons a number is missing

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return sum(self.values) / self.n if self.values else None

    @property
    def std(self) -> float | None:
        if self.n < 2:
            return None
        m = self.mean
        return math.sqrt(sum((v - m) ** 2 for v in self.values) / (self.n - 1))


class ResultStore:
    """All result files of one scale, indexed by (dataset_dir, card)."""

    def __init__(self, results_dir: str | Path, scale: str):
        self.root = Path(results_dir)
        self.scale = scale
        self._cache: dict[tuple[str, str], list[SeedResult]] = {}
        self._authors_cache: dict[tuple[str, str, str], list[SeedResult]] = {}

    @property
    def scale_dir(self) -> Path:
        return self.root / self.scale

    def results_of(self, dataset_dir: str, card: str) -> list[SeedResult]:
        """Every result file of one card on one dataset folder (all seeds and conditions)."""
        return self._load_dir(dataset_dir, card)

    def _load_dir(self, dataset_dir: str, card: str) -> list[SeedResult]:
        key = (dataset_dir, card)
        if key in self._cache:
            return self._cache[key]
        out: list[SeedResult] = []
        base = self.scale_dir / dataset_dir / card
        if base.is_dir():
            for seed_dir in sorted(base.iterdir()):
                m = re.fullmatch(r"seed(\d+)", seed_dir.name)
                if not m or not seed_dir.is_dir():
                    continue
                for f in sorted(seed_dir.glob("*.json")):
                    out.append(_read_result(f, int(m.group(1)), self.root))
        self._cache[key] = out
        return out

    def seeds(self, job: Job) -> list[SeedResult]:
        """The results (one per seed) of one job: its condition and evaluation options."""
        found: dict[int | None, SeedResult] = {}
        for r in self._matching(self._load_dir(job.dataset_dir, job.card), job):
            prev = found.get(r.seed)
            if prev is None or (not prev.ok and r.ok):
                found[r.seed] = r
        return [found[k] for k in sorted(found, key=lambda s: -1 if s is None else s)]

    def authors(self, job: Job) -> list[SeedResult]:
        """The results of the authors' released weights for one job (``<card>/authors/*.json``):
        one per weights card (a readable ``ok`` result wins over a failed one)."""
        key = (job.dataset_dir, job.card, AUTHORS_DIR)
        if key not in self._authors_cache:
            folder = self.scale_dir / job.dataset_dir / job.card / AUTHORS_DIR
            self._authors_cache[key] = ([_read_result(f, None, self.root) for f in sorted(folder.glob("*.json"))]
                                        if folder.is_dir() else [])
        found: dict[str, SeedResult] = {}
        for r in self._matching(self._authors_cache[key], job):
            who = str(_obj(r.data.get("run")).get("card") or "")
            prev = found.get(who)
            if prev is None or (not prev.ok and r.ok):
                found[who] = r
        return [found[k] for k in sorted(found)]

    @staticmethod
    def _matching(results: list[SeedResult], job: Job) -> list[SeedResult]:
        stem, opts, out = job.result_stem, dict(job.options), []
        for r in results:
            if r.data:
                if r.condition != job.condition or not options_match(opts, r.data.get("options")):
                    continue
            elif Path(r.path).stem != stem:  # unreadable file: fall back on its name
                continue
            out.append(r)
        return out

    def seed_numbers(self) -> list[int]:
        """Every seed that appears anywhere under this scale (for the commands shown beside gaps)."""
        seeds = set()
        if self.scale_dir.is_dir():
            for p in self.scale_dir.glob("*/*/seed*"):
                m = re.fullmatch(r"seed(\d+)", p.name)
                if m:
                    seeds.add(int(m.group(1)))
        return sorted(seeds)


def _read_result(path: Path, seed: int | None, root: Path) -> SeedResult:
    rel = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        return SeedResult(seed, rel, f"failed: unreadable result file ({type(e).__name__})")
    if not isinstance(data, dict):
        return SeedResult(seed, rel, "failed: result file is not a JSON object")
    status = str(data.get("status", "failed: no status in result file")).strip() or "failed: empty status"
    status = status.splitlines()[0]
    schema = data.get("schema")
    if schema is not None and schema != RESULT_SCHEMA_ID and status == "ok":
        status = f"failed: unknown result schema {schema!r}"
    run_seed = _obj(data.get("run")).get("seed")
    return SeedResult(run_seed if isinstance(run_seed, int) else seed, rel, status, data)


def _obj(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _number(x: Any) -> float | None:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    return float(x) if math.isfinite(float(x)) else None


def value_of(result: SeedResult, column: Column) -> tuple[float | None, str | None, str | None]:
    """(value, protocol, problem) of one column in one result."""
    d = result.data
    if column.is_metric:
        metrics = d.get("metrics") or {}
        if not isinstance(metrics, dict):
            return None, None, "metrics is not an object"
        other = None
        for name, entry in metrics.items():
            if not isinstance(entry, dict):
                continue
            if entry.get("protocol") == column.protocol:
                v = _number(entry.get("value"))
                if v is not None:
                    return v, column.protocol, None
                why = entry.get("status")
                why = str(why).splitlines()[0][:200] if why else "value is not a number"
                return None, column.protocol, why
            if name == column.metric:
                other = entry.get("protocol")
        if other is not None:
            return None, other, f"protocol mismatch: result has {other}, table wants {column.protocol}"
        return None, None, f"{column.protocol} not measured"
    for key in column.fields:
        if key in d:
            v = _number(d[key])
            if v is None:
                continue
            if key == "params" and v > 1e4:  # a parameter count, shown in millions
                v = v / 1e6
            return v, key, None
    return None, None, f"{'/'.join(column.fields)} not recorded"


def measure(results: list[SeedResult], column: Column) -> Measure:
    m = Measure()
    for r in results:
        who = f"seed {r.seed}" if r.seed is not None else str(_obj(r.data.get("run")).get("card") or r.path)
        if not r.ok:
            m.problems.append(f"{who}: {r.status}")
            continue
        v, proto, problem = value_of(r, column)
        if v is None:
            m.problems.append(f"{who}: {problem}")
            continue
        m.values.append(v)
        m.seeds.append(r.seed)
        m.protocols.append(proto or "")
    return m


def cell_status(results: list[SeedResult], m: Measure) -> str:
    """What a cell says when it has no number: ``not run``, ``out of memory``, ``failed``, ..."""
    if m.n:
        return "ok"
    if not results:
        return "not run"
    statuses = {r.status for r in results}
    if statuses == {"out of memory"}:
        return "out of memory"
    if all(s.startswith("failed") for s in statuses):
        return "failed"
    if "ok" in statuses:
        if any("protocol mismatch" in p for p in m.problems):
            return "protocol mismatch"
        return "not measured"
    if "out of memory" in statuses:
        return "out of memory"
    return "failed"


def stem_for(job: Job) -> str:
    return result_stem(job.condition, dict(job.options))
