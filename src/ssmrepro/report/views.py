"""View models: what each page shows, built from table definitions and result files only."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from ..tables import Column, Job, Row, Table, parse_number, printed_decimals
from . import commands
from .audit import cell_anchor
from .claims import ClaimResult, evaluate_claim
from .collect import Measure, ResultStore, SeedResult, cell_status, measure, value_of

DEFAULT_DECIMALS = {"psnr": 2, "ssim": 4, "l1": 4, "fid": 4, "lpips": 4, "params": 1, "flops": 1,
                    "runtime": 1}
STATUS_TEXT = {"not run": "not run", "out of memory": "out of memory", "failed": "failed",
               "not measured": "not measured", "protocol mismatch": "protocol mismatch",
               "published only": "published only"}


def fmt(x: float | None, d: int) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.{d}f}"


@dataclass
class CellView:
    table: str
    row: str
    condition: str
    column: str
    anchor: str
    prov: str
    paper: str | None
    status: str  # ok | not run | out of memory | failed | not measured | protocol mismatch | published only
    mean: float | None = None
    std: float | None = None
    n: int = 0
    seeds: list = field(default_factory=list)
    values: list = field(default_factory=list)
    protocol: str | None = None
    decimals: int = 4
    text: str = ""
    diff: float | None = None
    diff_text: str = ""
    diff_class: str = ""
    problems: list = field(default_factory=list)
    note: str = ""  # e.g. "as in the paper" for a matching out-of-memory
    line: str = "reproduced"  # or "authors": the authors' released weights scored here
    command: str = ""  # authors line, not run: the command that scores them

    def as_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class ProvEntry:
    anchor: str
    row: Row
    condition: str
    condition_label: str
    job: Job | None
    seeds: list[SeedResult]
    values: list[dict]  # per seed: {column label: "value (protocol)"}
    commands: dict[str, str]
    expected_files: list[str]
    status: str
    authors: dict | None = None  # the authors' weights line of this row: card, file, url, results, command


AUTHORS_KIND = "authors' weights"


class TableView:
    """Cells, provenance and claims of one table at one scale."""

    def __init__(self, table: Table, store: ResultStore, scale: str, scales: dict, seeds_hint: list[int],
                 released: dict[str, dict] | None = None):
        """``released``: row id -> the authors' released weights serving the row (``card``,
        ``file``, ``url``, ``path``); such rows, and rows with results of released weights, get an
        "authors' weights" line."""
        self.table = table
        self.released = released or {}
        self.authors_cells: dict[tuple[str, str, str], CellView] = {}
        self.authors_rows: list[str] = []
        self.scale = scale
        self.scales = scales
        self.store = store
        self.seed0 = seeds_hint[0] if seeds_hint else 0
        self.cells: dict[tuple[str, str, str], CellView] = {}
        self.measures: dict[tuple[str, str, str], Measure] = {}
        self.seed_results: dict[tuple[str, str], list[SeedResult]] = {}
        self.prov: dict[tuple[str, str], ProvEntry] = {}
        self.command = commands.table_command(table, scale)
        for row in table.rows:
            for cond in table.conditions:
                self._build(row, cond)
        self.claims: list[ClaimResult] = [
            evaluate_claim(table, c, self.measure, self.statuses) for c in table.claims]

    # -- lookups used by the claims
    def measure(self, row: str, cond: str, col: str) -> Measure | None:
        return self.measures.get((row, cond, col))

    def statuses(self, row: str, cond: str) -> list[str]:
        return [r.status for r in self.seed_results.get((row, cond), [])]

    def decimals(self, row: Row, cond: str, col: Column) -> int:
        d = printed_decimals(row.published_value(cond, col.id))
        if d is not None:
            return max(d, 1) if col.kind != "metric" else d
        for r in self.table.rows:  # same column elsewhere in the table
            for c in self.table.conditions:
                d = printed_decimals(r.published_value(c, col.id))
                if d is not None:
                    return max(d, 1) if col.kind != "metric" else d
        return DEFAULT_DECIMALS.get(col.metric or col.kind, 4)

    def _fill(self, cv: CellView, results: list[SeedResult], col: Column, paper: str | None) -> Measure:
        """Status, mean ± std, n and the difference to the paper of one cell from its results."""
        m = measure(results, col)
        cv.status = cell_status(results, m)
        cv.problems = m.problems
        if m.n:
            cv.mean, cv.std, cv.n = m.mean, m.std, m.n
            cv.seeds, cv.values = m.seeds, m.values
            if not col.is_metric and m.mean:  # small smoke-scale costs: keep 3 significant digits
                cv.decimals = max(cv.decimals, min(4, 2 - math.floor(math.log10(abs(m.mean)))))
            d = cv.decimals
            cv.text = fmt(m.mean, d) + (f" ± {fmt(m.std, d)}" if m.std is not None else "")
            p = parse_number(paper)
            if p is not None:
                cv.diff = m.mean - p
                cv.diff_text = f"{cv.diff:+.{d}f}"
                if col.better and round(cv.diff, d) != 0:
                    good = (cv.diff > 0) == (col.better == "higher")
                    cv.diff_class = "better" if good else "worse"
        if m.problems and m.n:
            cv.note = f"{len(m.problems)} seed(s) without a number"
        if cv.status == "out of memory" and paper and paper.lower() == "out of memory":
            cv.note = "as in the paper"
        return m

    @staticmethod
    def _values(results: list[SeedResult], columns) -> list[dict]:
        per = []
        for r in results:
            vals = {}
            for col in columns:
                if r.ok:
                    v, proto, problem = value_of(r, col)
                    vals[col.id] = (f"{v:.6g}" if v is not None else problem or "–",
                                    proto or (col.protocol or col.kind))
                else:
                    vals[col.id] = (r.status, col.protocol or col.kind)
            per.append(vals)
        return per

    def _build(self, row: Row, cond: str) -> None:
        t = self.table
        anchor = f"prov-{row.id}-{cond}"
        job = t.job(row, cond, self.scale, self.scales)
        results = self.store.seeds(job) if job else []
        self.seed_results[(row.id, cond)] = results
        for col in t.columns:
            paper = row.published_value(cond, col.id)
            cv = CellView(t.id, row.id, cond, col.id, cell_anchor(row.id, cond, col.id), anchor, paper,
                          status="published only" if job is None else "not run",
                          decimals=self.decimals(row, cond, col),
                          protocol=col.protocol if col.is_metric else col.kind)
            if job is not None:
                self.measures[(row.id, cond, col.id)] = self._fill(cv, results, col, paper)
            if cv.status != "ok":
                cv.text = STATUS_TEXT.get(cv.status, cv.status)
            self.cells[(row.id, cond, col.id)] = cv
        # provenance entry of the (row, condition)
        per_seed = self._values(results, t.columns)
        cmds = {}
        files = []
        status = "published only"
        if job is not None:
            cmds["table"] = self.command
            cmds["result"] = commands.result_command(job, self.scale, self.seed0)
            cmds["evaluate"] = commands.evaluate_command(job, self.scale, self.seed0)
            files = [job.result_path(self.scale, self.seed0).as_posix()]
            sts = {self.cells[(row.id, cond, c.id)].status for c in t.columns}
            status = "ok" if sts == {"ok"} else ("ok (partly)" if "ok" in sts else sorted(sts)[0])
        self.prov[(row.id, cond)] = ProvEntry(anchor, row, cond, t.condition_label(cond), job, results,
                                              per_seed, cmds, files, status,
                                              authors=self._build_authors(row, cond, job, anchor))

    def _build_authors(self, row: Row, cond: str, job: Job | None, anchor: str) -> dict | None:
        """The "authors' weights" line of a row: the released weights scored with the row's card."""
        rel = self.released.get(row.id)
        found = self.store.authors(job) if job is not None else []
        if job is None or not (rel or found):
            return None
        if rel and any(_weights_card(r) == rel["card"] for r in found):
            found = [r for r in found if _weights_card(r) == rel["card"]]
        results = found[:1]  # one file of weights: no mean over different checkpoints
        if row.id not in self.authors_rows:
            self.authors_rows.append(row.id)
        weights_card = (rel or {}).get("card") or (_weights_card(results[0]) if results else None)
        cmd = commands.authors_command(job, self.scale, weights_card) if weights_card else ""
        t = self.table
        for col in t.columns:
            paper = row.published_value(cond, col.id)
            cv = CellView(t.id, row.id, cond, col.id, cell_anchor(row.id, cond, col.id) + "-authors", anchor,
                          paper, status="not run", decimals=self.decimals(row, cond, col),
                          protocol=col.protocol if col.is_metric else col.kind, line="authors", command=cmd)
            self._fill(cv, results, col, paper)
            if cv.status != "ok":
                cv.text = STATUS_TEXT.get(cv.status, cv.status)
            self.authors_cells[(row.id, cond, col.id)] = cv
        sts = {self.authors_cells[(row.id, cond, c.id)].status for c in t.columns}
        return {"card": weights_card, "file": (rel or {}).get("file"), "url": (rel or {}).get("url"),
                "path": (rel or {}).get("path"), "command": cmd, "results": results,
                "values": self._values(results, t.columns),
                "expected_file": commands.authors_result_path(job, self.scale),
                "status": "ok" if sts == {"ok"} else ("ok (partly)" if "ok" in sts else sorted(sts)[0])}

    # -- summaries
    def counts(self) -> dict:
        runnable = [c for c in self.cells.values() if c.status != "published only"]
        return {"cells": len(self.cells), "runnable": len(runnable),
                "ok": sum(c.status == "ok" for c in runnable),
                "not_run": sum(c.status == "not run" for c in runnable),
                "failed": sum(c.status in ("failed", "out of memory", "protocol mismatch")
                              for c in runnable),
                "not_measured": sum(c.status == "not measured" for c in runnable),
                "claims": len(self.claims),
                "claims_reproduced": sum(c.verdict == "reproduced" for c in self.claims),
                "claims_not_reproduced": sum(c.verdict == "not reproduced" for c in self.claims),
                "claims_paper_unsupported": sum(not c.paper_supported for c in self.claims),
                "authors_cells": len(self.authors_cells),
                "authors_ok": sum(c.status == "ok" for c in self.authors_cells.values())}

    def as_dict(self) -> dict:
        return {"table": self.table.id, "scale": self.scale, "command": self.command,
                "counts": self.counts(),
                "cells": [c.as_dict() for c in self.cells.values()],
                "authors_cells": [c.as_dict() for c in self.authors_cells.values()],
                "claims": [c.as_dict() for c in self.claims],
                "provenance": [{"row": p.row.id, "condition": p.condition, "status": p.status,
                                "commands": p.commands, "seeds": [s.provenance() for s in p.seeds],
                                "authors": None if p.authors is None else {
                                    **{k: v for k, v in p.authors.items() if k not in ("results", "values")},
                                    "results": [r.provenance() for r in p.authors["results"]]}}
                               for p in self.prov.values()]}

    # -- the grid both HTML and LaTeX draw
    def grid(self) -> dict:
        return transposed_grid(self) if self.table.layout == "transposed" else row_grid(self)


def _weights_card(r: SeedResult) -> str | None:
    run = r.data.get("run") if isinstance(r.data.get("run"), dict) else {}
    return run.get("card") if isinstance(run.get("card"), str) else None


def _hcell(text, colspan=1, rowspan=1, cls=""):
    return {"type": "head", "text": text, "colspan": colspan, "rowspan": rowspan, "cls": cls}


def row_grid(v: TableView) -> dict:
    t = v.table
    multi = len(t.conditions) > 1
    nrow = 2 if multi or t.components else 1
    head1, head2 = [], []
    has_group = any(r.group for r in t.rows)
    if has_group:
        head1.append(_hcell(t.group_header or "", rowspan=nrow))
    head1.append(_hcell(t.row_header, rowspan=nrow))
    head1.append(_hcell("", rowspan=nrow, cls="kind"))
    if t.components:
        head1.append(_hcell("Components", colspan=len(t.components), cls="comp"))
        head2 += [_hcell(label, cls="comp") for _, label in t.components]
    if multi:
        for cond in t.conditions:
            head1.append(_hcell(t.condition_label(cond), colspan=len(t.columns), cls="cond"))
            head2 += [_hcell(c.label, cls="metric") for c in t.columns]
    else:
        target = head1 if nrow == 1 else head1
        for c in t.columns:
            target.append(_hcell(c.label, rowspan=nrow, cls="metric"))
    header = [head1] + ([head2] if nrow == 2 and head2 else [])
    body = []
    groups_seen = set()
    nlines = {r.id: 3 if r.id in v.authors_rows else 2 for r in t.rows}
    for row in t.rows:
        paper_line, repro_line = [], []
        if has_group:
            if row.group not in groups_seen:
                groups_seen.add(row.group)
                k = sum(nlines[r.id] for r in t.rows if r.group == row.group)
                paper_line.append({"type": "group", "text": row.group or "", "rowspan": k})
        paper_line.append({"type": "label", "row": row, "rowspan": nlines[row.id]})
        paper_line.append({"type": "kind", "text": "paper"})
        repro_line.append({"type": "kind", "text": "reproduced" if row.card else ""})
        for cid, _ in t.components:
            paper_line.append({"type": "check", "on": cid in row.components, "rowspan": nlines[row.id]})
        for cond in t.conditions:
            if cond in row.spans:
                paper_line.append({"type": "paper", "cell": v.cells[(row.id, cond, t.columns[0].id)],
                                   "colspan": len(t.columns), "text": row.spans[cond]})
            else:
                for c in t.columns:
                    cell = v.cells[(row.id, cond, c.id)]
                    paper_line.append({"type": "paper", "cell": cell, "colspan": 1, "text": cell.paper})
            for c in t.columns:
                repro_line.append({"type": "repro", "cell": v.cells[(row.id, cond, c.id)]})
        body.append({"cls": "paper-line", "cells": paper_line})
        body.append({"cls": "repro-line" + (" before-authors" if nlines[row.id] == 3 else ""),
                     "cells": repro_line})
        if nlines[row.id] == 3:
            body.append({"cls": "authors-line", "cells": [{"type": "kind", "text": AUTHORS_KIND}] + [
                _authors_cell(v, row.id, cond, c.id) for cond in t.conditions for c in t.columns]})
    return {"header": header, "body": body}


def _authors_cell(v: "TableView", row: str, cond: str, col: str) -> dict:
    cell = v.authors_cells.get((row, cond, col))
    return {"type": "authors", "cell": cell} if cell else {"type": "authors-none"}


def transposed_grid(v: TableView) -> dict:
    t = v.table
    header = [[_hcell(t.row_header, colspan=2)] + [{"type": "label-head", "row": r} for r in t.rows]]
    body = []
    authors = bool(v.authors_rows)
    for cond in t.conditions:
        for c in t.columns:
            label = c.label if len(t.conditions) == 1 else f"{c.label} ({t.condition_label(cond)})"
            paper_line = [{"type": "metric-label", "text": label, "rowspan": 3 if authors else 2},
                          {"type": "kind", "text": "paper"}]
            repro_line = [{"type": "kind", "text": "reproduced"}]
            for row in t.rows:
                cell = v.cells[(row.id, cond, c.id)]
                paper_line.append({"type": "paper", "cell": cell, "colspan": 1,
                                   "text": row.spans.get(cond, cell.paper)})
                repro_line.append({"type": "repro", "cell": cell})
            body.append({"cls": "paper-line", "cells": paper_line})
            body.append({"cls": "repro-line" + (" before-authors" if authors else ""), "cells": repro_line})
            if authors:
                body.append({"cls": "authors-line", "cells": [{"type": "kind", "text": AUTHORS_KIND}] + [
                    _authors_cell(v, row.id, cond, c.id) for row in t.rows]})
    return {"header": header, "body": body}
