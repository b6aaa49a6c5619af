"""Paper audit: the published numbers checked against each other (no results needed).

Checks, each a list of findings with the cells involved:
- ``consistency``: one card under one setting (dataset, resolution, condition, evaluation options,
  protocol) printed in several tables must carry one value; disagreements are contradictions.
- ``claims``: each claim of a table definition checked on the printed numbers (ties count as not
  supported), and margins stated in the text ("by 0.24 dB") against the printed difference.
- ``psnr_ssim``: PSNR and SSIM move together. Within a table, a pair of rows whose PSNR differs by
  >= 0.5 dB while SSIM moves less than a quarter of what the paper's other comparisons on the same
  test set predict (median dSSIM/dPSNR over within-table pairs) is implausible.
- ``mask_ratio``: a row whose metric *improves* as the mask ratio grows.
- ``component_effects``: adding (or swapping) one component changes a metric with opposite signs in
  different contexts, beyond the printed precision: an effect the component alone cannot explain.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from itertools import combinations

from ..tables import Table, mask_bin, parse_number, printed_decimals
from .claims import evaluate_claim

SEVERITIES = ("contradiction", "implausible", "unsupported claim", "note", "consistent")


def _cell(table: Table, row_id: str, cond: str, col: str) -> dict:
    row = table.row(row_id)
    return {"table": table.id, "table_number": table.table, "paper": table.paper,
            "row": row_id, "row_label": row.label, "card": row.card, "condition": cond,
            "condition_label": table.condition_label(cond), "column": col,
            "column_label": table.column(col).label, "value": row.published_value(cond, col),
            "href": f"{table.id}.html#{cell_anchor(row_id, cond, col)}"}


def cell_anchor(row_id: str, cond: str, col: str) -> str:
    return f"cell-{row_id}-{cond}-{col}"


def _setting_key(table: Table, row, cond: str) -> tuple:
    return (row.card, table.paper, table.row_dataset(row), table.row_resolution(row), cond,
            row.option_items())


def check_consistency(tables: list[Table]) -> list[dict]:
    groups: dict[tuple, list[tuple[Table, str, str, str]]] = defaultdict(list)
    for t in tables:
        for row in t.rows:
            if not row.card:
                continue
            for cond in t.conditions:
                for col in t.columns:
                    if row.published_value(cond, col.id) is None:
                        continue
                    key = (*_setting_key(t, row, cond), col.measure)
                    groups[key].append((t, row.id, cond, col.id))
    findings = []
    for key, cells in groups.items():
        tables_in = {c[0].id for c in cells}
        if len(cells) < 2 or len(tables_in) < 2:
            continue
        values = {c[0].row(c[1]).published_value(c[2], c[3]) for c in cells}
        card, paper, dataset, res, cond, opts, measure = key
        where = f"{card} on {dataset}" + (f" at {res}x{res}" if res else "") + f", {cond}" + \
            (", " + ", ".join(f"{k}={v}" for k, v in opts) if opts else "")
        listed = [_cell(*c) for c in cells]
        if len(values) > 1:
            msg = " vs ".join(f"{c['value']} ({_name(c)})" for c in listed)
            findings.append({"check": "consistency", "severity": "contradiction",
                             "title": f"{measure}: {where}: one model, {len(values)} printed values",
                             "message": f"The same card and setting is printed with different values: {msg}.",
                             "cells": listed})
        else:
            findings.append({"check": "consistency", "severity": "consistent",
                             "title": f"{measure}: {where}: {len(tables_in)} tables agree",
                             "message": f"{values.pop()} in " + ", ".join(_name(c) for c in listed),
                             "cells": listed})
    return findings


def _name(c: dict) -> str:
    return f"{c['paper']} T{c['table_number']} {c['row_label']}"


def check_claims(tables: list[Table]) -> tuple[list[dict], list[dict]]:
    """(findings for claims the printed numbers do not support, a summary line per claim)."""
    findings, summary = [], []
    for t in tables:
        for claim in t.claims:
            res = evaluate_claim(t, claim)
            summary.append({"table": t.id, "claim": claim.id, "text": claim.text,
                            "paper": res.paper_verdict, "margin": res.margin_note})
            bad = [c for c in res.checks if c.paper_holds is False]
            if not bad and res.margin_ok is not False:
                continue
            cells = []
            for c in bad:
                for rid in (c.a, c.b):
                    if rid:
                        cell = _cell(t, rid, c.condition, c.column or t.columns[0].id)
                        cell["note"] = f"{c.a} vs {c.b}: {c.paper_a} vs {c.paper_b}" + \
                            (f" ({c.paper_note})" if c.paper_note else "")
                        cells.append(cell)
            parts = []
            if bad:
                parts.append(f"{len(bad)} of {len(res.checks)} printed comparisons do not support it: " +
                             "; ".join(f"{c.column} at {t.condition_label(c.condition)}: "
                                       f"{t.row(c.a).label} {c.paper_a} vs {t.row(c.b).label if c.b else ''} {c.paper_b or ''}"
                                       + (f" ({c.paper_note})" if c.paper_note else "") for c in bad))
            if res.margin_ok is False:
                parts.append(res.margin_note)
                for c in res.checks:
                    for rid in (c.a, c.b):
                        if rid:
                            cells.append(_cell(t, rid, c.condition, c.column))
            findings.append({"check": "claims", "severity": "unsupported claim",
                             "title": f"{t.id}: {claim.text}", "message": ". ".join(parts) + ".",
                             "cells": _dedupe(cells), "claim": claim.id, "table": t.id})
    return findings, summary


def _dedupe(cells: list[dict]) -> list[dict]:
    seen, out = set(), []
    for c in cells:
        k = (c["table"], c["row"], c["condition"], c["column"])
        if k not in seen:
            seen.add(k)
            out.append(c)
    return out


def _psnr_ssim_columns(t: Table) -> tuple[str, str] | None:
    p = next((c.id for c in t.columns if c.metric == "psnr"), None)
    s = next((c.id for c in t.columns if c.metric == "ssim"), None)
    return (p, s) if p and s else None


def check_psnr_ssim(tables: list[Table], min_dpsnr: float = 0.5, fraction: float = 0.25) -> list[dict]:
    # within-table pairs, pooled per (paper, dataset, condition, protocols) for the reference slope
    pairs_by_group: dict[tuple, list[tuple]] = defaultdict(list)
    for t in tables:
        cols = _psnr_ssim_columns(t)
        if not cols:
            continue
        pc, scol = cols
        protos = (t.column(pc).protocol, t.column(scol).protocol)
        for cond in t.conditions:
            pts = []
            for row in t.rows:
                p = parse_number(row.published_value(cond, pc))
                s = parse_number(row.published_value(cond, scol))
                if p is not None and s is not None:
                    pts.append((row, p, s))
            for (r1, p1, s1), (r2, p2, s2) in combinations(pts, 2):
                if r1.card and r1.card == r2.card and r1.options == r2.options:
                    continue
                group = (t.paper, t.dataset_dir(r1), cond, protos)
                pairs_by_group[group].append((t, cond, pc, scol, r1, p1, s1, r2, p2, s2))
    findings = []
    for group, pairs in pairs_by_group.items():
        slopes = [(s2 - s1) / (p2 - p1) for (_, _, _, _, _, p1, s1, _, p2, s2) in pairs if abs(p2 - p1) >= 0.1]
        if len(slopes) < 3:
            continue
        ref = statistics.median(slopes)
        if ref <= 0:
            continue
        flagged_by_table: dict[tuple, list] = defaultdict(list)
        for pr in pairs:
            t, cond, pc, scol, r1, p1, s1, r2, p2, s2 = pr
            dp, ds = p2 - p1, s2 - s1
            if abs(dp) < min_dpsnr:
                continue
            along = ds if dp > 0 else -ds  # SSIM change in PSNR's direction
            if along < fraction * ref * abs(dp):
                flagged_by_table[(t.id, cond)].append(pr)
        for (tid, cond), prs in flagged_by_table.items():
            t = prs[0][0]
            lines, cells = [], []
            for (_, _, pc, scol, r1, p1, s1, r2, p2, s2) in prs:
                lo, hi = ((r1, p1, s1), (r2, p2, s2)) if p1 < p2 else ((r2, p2, s2), (r1, p1, s1))
                dp, ds = hi[1] - lo[1], hi[2] - lo[2]
                dsd = max(printed_decimals(lo[0].published_value(cond, scol)) or 4, 4)
                lines.append(f"{lo[0].label} -> {hi[0].label}: PSNR {dp:+.2f} dB, SSIM {ds:+.{dsd}f} "
                             f"(expected about {ref * dp:+.{dsd}f})")
                for r in (r1, r2):
                    cells += [_cell(t, r.id, cond, pc), _cell(t, r.id, cond, scol)]
            paper, dataset, _, protos = group
            findings.append({
                "check": "psnr_ssim", "severity": "implausible",
                "title": f"{tid}: PSNR and SSIM disagree at {t.condition_label(cond)}",
                "message": (f"Across this paper's within-table comparisons on {dataset} ({t.condition_label(cond)}), "
                            f"SSIM moves {ref:.4f} per dB of PSNR (median of {len(slopes)} pairs). Here PSNR moves "
                            f">= {min_dpsnr} dB while SSIM moves less than {fraction:g} of that: " + "; ".join(lines) + "."),
                "cells": _dedupe(cells), "reference_slope": ref})
    return findings


def check_mask_ratio(tables: list[Table]) -> list[dict]:
    findings = []
    for t in tables:
        bins = [(mask_bin(c), c) for c in t.conditions]
        if len(bins) < 2 or any(b is None for b, _ in bins):
            continue
        conds = [c for _, c in sorted(bins)]
        for row in t.rows:
            for col in t.columns:
                if not col.better:
                    continue
                sign = 1 if col.better == "higher" else -1
                vals = [(c, row.published_value(c, col.id)) for c in conds]
                for (c1, v1), (c2, v2) in zip(vals, vals[1:]):
                    x1, x2 = parse_number(v1), parse_number(v2)
                    if x1 is None or x2 is None:
                        continue
                    if sign * (x2 - x1) > 0:  # better with more holes
                        findings.append({
                            "check": "mask_ratio", "severity": "implausible",
                            "title": f"{t.id} {row.label}{' (' + row.group + ')' if row.group else ''}: "
                                     f"{col.label} improves as the mask ratio grows",
                            "message": f"{col.label} is {v1} at {t.condition_label(c1)} but {v2} at "
                                       f"{t.condition_label(c2)}: larger holes should not score better.",
                            "cells": [_cell(t, row.id, c1, col.id), _cell(t, row.id, c2, col.id)]})
    return findings


def check_component_effects(tables: list[Table]) -> list[dict]:
    findings = []
    for t in tables:
        if not t.components:
            continue
        comps = {r.id: frozenset(r.components) for r in t.rows}
        effects: dict[str, list[tuple[str, str]]] = defaultdict(list)  # change -> [(without, with)]
        for r1, r2 in combinations(t.rows, 2):
            a, b = comps[r1.id], comps[r2.id]
            added, removed = b - a, a - b
            if len(added) == 1 and not removed:
                effects[f"+{next(iter(added))}"].append((r1.id, r2.id))
            elif len(removed) == 1 and not added:
                effects[f"+{next(iter(removed))}"].append((r2.id, r1.id))
            elif len(added) == 1 and len(removed) == 1:
                x, y = next(iter(removed)), next(iter(added))
                if x < y:
                    effects[f"{x} -> {y}"].append((r1.id, r2.id))
                else:
                    effects[f"{y} -> {x}"].append((r2.id, r1.id))
        for change, pairs in effects.items():
            if len(pairs) < 2:
                continue
            for cond in t.conditions:
                for col in t.columns:
                    if not col.better:
                        continue
                    sign = 1 if col.better == "higher" else -1
                    eff = []
                    for lo, hi in pairs:
                        v_lo = t.row(lo).published_value(cond, col.id)
                        v_hi = t.row(hi).published_value(cond, col.id)
                        x_lo, x_hi = parse_number(v_lo), parse_number(v_hi)
                        if x_lo is None or x_hi is None:
                            continue
                        floor = 2 * 10.0 ** -max(printed_decimals(v_lo) or 0, printed_decimals(v_hi) or 0)
                        eff.append((lo, hi, sign * (x_hi - x_lo), floor, v_lo, v_hi))
                    helps = [e for e in eff if e[2] >= e[3] - 1e-12]
                    hurts = [e for e in eff if e[2] <= -e[3] + 1e-12]
                    if helps and hurts:
                        desc = "; ".join(
                            f"{t.row(lo).label} -> {t.row(hi).label}: {v_lo} -> {v_hi} ({'better' if d > 0 else 'worse'})"
                            for lo, hi, d, _, v_lo, v_hi in helps + hurts)
                        cells = []
                        for lo, hi, *_ in helps + hurts:
                            cells += [_cell(t, lo, cond, col.id), _cell(t, hi, cond, col.id)]
                        findings.append({
                            "check": "component_effects", "severity": "note",
                            "title": f"{t.id}: {change} helps {col.label} in one context and hurts it in another "
                                     f"({t.condition_label(cond)})",
                            "message": f"The change {change} moves {col.label} by more than the printed precision "
                                       f"in opposite directions: {desc}.",
                            "cells": _dedupe(cells)})
    return findings


def audit(tables: list[Table]) -> dict:
    """Every check over the printed numbers; a JSON-ready dict (``reports/audit.json``)."""
    consistency = check_consistency(tables)
    claim_findings, claim_summary = check_claims(tables)
    findings = ([f for f in consistency if f["severity"] != "consistent"] + claim_findings +
                check_psnr_ssim(tables) + check_mask_ratio(tables) + check_component_effects(tables))
    order = {s: i for i, s in enumerate(SEVERITIES)}
    findings.sort(key=lambda f: (order[f["severity"]], f["check"], f["title"]))
    counts = defaultdict(int)
    for f in findings:
        counts[f["severity"]] += 1
    return {"schema": "ssmrepro.audit/1",
            "tables": [t.id for t in tables],
            "counts": dict(counts),
            "findings": findings,
            "agreements": [f for f in consistency if f["severity"] == "consistent"],
            "claims": claim_summary}
