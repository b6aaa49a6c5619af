"""The report: ``reports/`` rendered from table definitions and result files only (Contract 4).

``render(tables_dir, results_dir, out_dir, scale)`` writes
- ``index.html``: every table and figure, how much of it is reproduced, the claims' verdicts;
- ``<paper>_t<N>.html``: the table, each cell the paper value, the reproduced mean ± std over seeds
  with n and the difference; each number links to its provenance (card, config hash, data version,
  commit, protocol id, hardware); gaps say "not run" with the exact commands; claims with a Welch
  t-test across seeds; plots (metric vs mask ratio, training curves when logs are present);
- ``<figure id>.html``: receptive fields from ``results/<scale>/erf/<card>.npy``, activation maps,
  qualitative grids from ``results/<scale>/qualitative/<figure id>/``;
- ``audit.html`` and ``audit.json``: the paper's printed numbers checked against each other;
- ``latex/<paper>_t<N>.tex``: one booktabs table per supplement table (a compilable document);
- ``data/<paper>_t<N>.json``: the cells, claims and provenance behind each page.

Rows served by the authors' released weights (cards ``models/authors-*.yaml``, whose ``serves``
name the rows) get a third line, "authors' weights": the result of ``ssmrepro evaluate-weights``
under ``results/<scale>/<dataset dir>/<card>/authors/``, or "not run" with its command. That list
of rows is the only thing read from the cards (none readable: no such line, except for rows that
have such results).

Run as ``python -m ssmrepro.report --scale smoke`` (see ``__main__``).
"""

from __future__ import annotations

import json
import shutil
from datetime import datetime, timezone
from pathlib import Path

from ..tables import (Figure, dataset_for_scale, load_figures, load_scales, load_tables, mask_bin,
                      parse_number)
from . import commands, plots
from .audit import audit as audit_tables
from .collect import ResultStore
from .latex import table_tex
from .views import TableView

__all__ = ["render", "scale_info", "TableView", "audit_tables", "released_rows"]

_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".webp", ".gif")


def scale_info(scale: str, scales: dict) -> dict:
    entry = scales.get(scale) or {}
    comparable = entry.get("comparable", scale == "paper")
    text = entry.get("description") or (
        "The paper's setting." if comparable else "Not the paper's setting: numbers are not comparable to the paper.")
    if not comparable and "not comparable" not in text:
        text += " Numbers are not comparable to the paper."
    return {"name": scale, "comparable": comparable, "text": text}


def _env():
    import jinja2

    env = jinja2.Environment(
        loader=jinja2.PackageLoader("ssmrepro.report", "templates"),
        autoescape=jinja2.select_autoescape(["html"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["pct"] = lambda x: "–" if x is None else f"{100 * x:.1f}%"
    env.filters["p"] = lambda p: "–" if p is None else (f"{p:.3g}" if p >= 1e-3 else "<0.001")
    env.filters["g4"] = lambda x: "–" if x is None else f"{x:.4g}"
    return env


def released_rows(tables) -> dict[str, dict[str, dict]]:
    """table id -> row id -> the authors' released weights that serve the row (from the cards'
    ``checkpoint`` and ``serves``; only where the weights stand for the row's own card)."""
    try:
        from ..authors import row_index

        index = row_index()
    except Exception:  # noqa: BLE001 - no cards here: the report still renders, without the line
        return {}
    out: dict[str, dict[str, dict]] = {}
    for t in tables:
        for r in t.rows:
            rel = index.get((t.paper, t.table, r.id))
            if rel is not None and r.card and rel.for_card == r.card:
                out.setdefault(t.id, {})[r.id] = {"card": rel.card, "file": rel.file, "url": rel.url,
                                                  "path": f"weights/{rel.card}/{rel.file}"}
    return out


def render(tables_dir: str | Path, results_dir: str | Path, out_dir: str | Path, scale: str,
           *, runs_dir: str | Path | None = None, plots_enabled: bool = True,
           released: dict[str, dict[str, dict]] | None = None) -> Path:
    """Render the whole report for one scale; returns the path of ``index.html``.

    Reads the table definitions under ``tables_dir`` and the result files under
    ``results_dir/<scale>/``. ``runs_dir`` (optional) is where training logs (``log.jsonl``) are
    looked for besides the result folders, for the training curves. ``released``: table id ->
    row id -> released weights (default: from the cards, see :func:`released_rows`).
    """
    tables_dir, results_dir, out_dir = Path(tables_dir), Path(results_dir), Path(out_dir)
    tables = load_tables(tables_dir)
    figures = load_figures(tables_dir)
    scales = load_scales(tables_dir)
    info = scale_info(scale, scales)
    store = ResultStore(results_dir, scale)
    seeds_hint = store.seed_numbers()
    out_dir.mkdir(parents=True, exist_ok=True)
    for sub in ("latex", "data", "plots", "assets"):
        (out_dir / sub).mkdir(exist_ok=True)
    env = _env()
    now = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    common = {"scale": info, "generated": now, "results_dir": str(results_dir), "tables": tables,
              "figures": figures}

    released = released_rows(tables) if released is None else released
    views = [TableView(t, store, scale, scales, seeds_hint, released.get(t.id)) for t in tables]
    audit = audit_tables(tables)
    flagged = _flagged_cells(audit)

    for view in views:
        t = view.table
        plot_files = _table_plots(view, out_dir, results_dir, runs_dir, scale, scales) if plots_enabled else {}
        page = env.get_template("table.html").render(
            **common, view=view, t=t, grid=view.grid(), counts=view.counts(), plots=plot_files,
            flagged=flagged.get(t.id, {}), title=f"{t.source}: {t.title}",
            audit_findings=[f for f in audit["findings"] if any(c["table"] == t.id for c in f["cells"])])
        (out_dir / f"{t.id}.html").write_text(page)
        (out_dir / "data" / f"{t.id}.json").write_text(json.dumps(view.as_dict(), indent=1, default=str))
        (out_dir / "latex" / f"{t.id}.tex").write_text(
            table_tex(view, f"Scale: {scale}." + ("" if info["comparable"] else " Not comparable to the paper.")))

    figure_views = [_figure_view(f, store, out_dir, scale, scales, plots_enabled) for f in figures]
    for fv in figure_views:
        page = env.get_template("figure.html").render(**common, fv=fv, f=fv["figure"],
                                                      title=f"{fv['figure'].source}: {fv['figure'].title}")
        (out_dir / f"{fv['figure'].id}.html").write_text(page)

    (out_dir / "audit.json").write_text(json.dumps(audit, indent=1, default=str))
    (out_dir / "audit.html").write_text(env.get_template("audit.html").render(
        **common, audit=audit, agreements=_group_agreements(audit["agreements"]),
        title="Paper audit: the published numbers checked against each other"))

    index = out_dir / "index.html"
    index.write_text(env.get_template("index.html").render(
        **common, views=views, figure_views=figure_views, audit=audit, title="ssmrepro report"))
    return index


def _flagged_cells(audit: dict) -> dict[str, dict[str, list[str]]]:
    """table -> cell anchor -> titles of the audit findings that list the cell."""
    out: dict[str, dict[str, list[str]]] = {}
    for f in audit["findings"]:
        for c in f["cells"]:
            anchor = c["href"].split("#", 1)[1]
            out.setdefault(c["table"], {}).setdefault(anchor, []).append(f"{f['severity']}: {f['title']}")
    return out


def _group_agreements(agreements: list[dict]) -> list[dict]:
    groups: dict[tuple, dict] = {}
    for a in agreements:
        key = (a["cells"][0]["card"], tuple(sorted({f"{c['paper']} T{c['table_number']} {c['row_label']}"
                                                     for c in a["cells"]})))
        g = groups.setdefault(key, {"card": key[0], "rows": list(key[1]), "n": 0, "cells": []})
        g["n"] += 1
        g["cells"].append(a["cells"][0])
    return list(groups.values())


def _table_plots(view: TableView, out_dir: Path, results_dir: Path, runs_dir, scale: str, scales: dict) -> dict:
    t = view.table
    files = {}
    bins = [(mask_bin(c), c) for c in t.conditions]
    if len(bins) > 1 and all(b for b, _ in bins):
        conds = [c for _, c in sorted(bins)]
        series = []
        for row in t.rows:
            s = {"label": row.label + (f" ({row.group})" if row.group else ""), "paper": {}, "mean": {}, "std": {}}
            for col in t.columns:
                s["paper"][col.id] = [parse_number(row.published_value(c, col.id)) for c in conds]
                cells = [view.cells[(row.id, c, col.id)] for c in conds]
                s["mean"][col.id] = [c.mean for c in cells]
                s["std"][col.id] = [c.std for c in cells]
            series.append(s)
        p = plots.mask_ratio_plot(f"{t.paper} T{t.table}", conds, [t.condition_label(c) for c in conds],
                                  [(c.id, c.label) for c in t.columns if c.is_metric], series,
                                  out_dir / "plots" / f"{t.id}_mask_ratio.png")
        if p:
            files["mask_ratio"] = f"plots/{p.name}"
    # training curves: log.jsonl beside the results, in the run folder a result names
    # (``run.run_dir``), or under ``runs_dir`` when given
    logs = {}
    for row in t.rows:
        job = t.job(row, t.conditions[0], scale, scales)
        if job is None:
            continue
        candidates = []
        for base in [Path(results_dir)] + ([Path(runs_dir)] if runs_dir else []):
            d = base / scale / job.dataset_dir / job.card
            if d.is_dir():
                candidates += [(log.parent.name, log) for log in sorted(d.glob("seed*/log.jsonl"))]
        for r in view.seed_results.get((row.id, t.conditions[0]), []):
            run_dir = (r.data.get("run") or {}).get("run_dir") if isinstance(r.data.get("run"), dict) else None
            if isinstance(run_dir, str):
                for cand in (Path(run_dir), Path(results_dir).parent / run_dir):
                    if (cand / "log.jsonl").is_file():
                        candidates.append((f"seed{r.seed}", cand / "log.jsonl"))
                        break
        for seed_name, log in candidates:
            label = f"{job.card} {seed_name}"
            if label not in logs:
                recs = plots.read_log(log)
                if recs:
                    logs[label] = recs
    if logs:
        p = plots.curves_plot(f"{t.paper} T{t.table}: training curves", logs, out_dir / "plots" / f"{t.id}_curves.png")
        if p:
            files["curves"] = f"plots/{p.name}"
    return files


def _figure_view(f: Figure, store: ResultStore, out_dir: Path, scale: str, scales: dict,
                 plots_enabled: bool) -> dict:
    dataset = dataset_for_scale(f.dataset, scale, scales) if f.dataset else None
    panels: list[dict] = []
    fv = {"figure": f, "panels": panels, "image": None, "claims": [], "images": [], "activation": [],
          "command": commands.figures_command(scale), "ran": 0, "total": 0}
    base = store.scale_dir
    if f.kind == "erf":
        arrays = []
        for p in f.panels:
            entry = _panel(p)
            if p.card:
                fv["total"] += 1
                path = base / "erf" / f"{p.card}.npy"
                entry["file"] = f"results/{scale}/erf/{p.card}.npy"
                entry["command"] = commands.target_command(entry["file"], scale)
                entry["alt_command"] = commands.erf_command(p.card, dataset or "gopro", scale)
                if path.exists():
                    arr, problem = plots.load_map(path)
                    if arr is None:
                        entry["status"] = f"failed: {problem}"
                    else:
                        entry["status"] = "ok"
                        entry["ratios"] = plots.erf_area_ratios(arr)
                        arrays.append((p.label, arr))
                        fv["ran"] += 1
                else:
                    entry["status"] = "not run"
            panels.append(entry)
        if arrays and plots_enabled:
            img = plots.erf_plot(f"{f.source} (reproduced, scale {scale})", arrays, out_dir / "plots" / f"{f.id}.png")
            fv["image"] = f"plots/{img.name}" if img else None
        ratios = {e["panel"].card: e["ratios"] for e in panels if e["panel"].card and e["ratios"]}
        fv["claims"] = [_erf_claim(c, ratios) for c in f.claims]
    elif f.kind == "activation":
        for p in f.panels:
            entry = _panel(p)
            if p.card:
                fv["total"] += 1
                # `ssmrepro erf` writes one map per block beside the ERF: erf/<card>.act.<block>.npy;
                # a stacked (k, H, W) array at activation/<card>.npy is read too.
                files = sorted((base / "erf").glob(f"{p.card}.act.*.npy")) if (base / "erf").is_dir() else []
                stacked = base / "activation" / f"{p.card}.npy"
                entry["file"] = f"results/{scale}/erf/{p.card}.act.<block>.npy"
                entry["command"] = commands.target_command(f"results/{scale}/erf/{p.card}.npy", scale)
                entry["alt_command"] = commands.erf_command(p.card, dataset or "gopro", scale)
                maps, names, problems = [], [], []
                for path in files + ([stacked] if stacked.exists() else []):
                    arr, problem = plots.load_map(path)
                    if arr is None:
                        problems.append(problem)
                        continue
                    for i, m in enumerate(arr if arr.ndim == 3 else arr[None]):
                        maps.append(m)
                        names.append(path.name[len(p.card) + 5:-4] if ".act." in path.name else f"map {i + 1}")
                if maps:
                    entry["status"] = "ok"
                    fv["ran"] += 1
                    fv["activation"] = names
                    if plots_enabled:
                        img = plots.activation_plot(f"{f.source}: {p.card} (scale {scale})", maps, names,
                                                    out_dir / "plots" / f"{f.id}_{p.card}.png")
                        fv["image"] = f"plots/{img.name}" if img else None
                else:
                    entry["status"] = f"failed: {'; '.join(problems)}" if problems else "not run"
            panels.append(entry)
    else:  # qualitative: images under results/<scale>/qualitative/<figure>/, else the evaluation samples
        for p in f.panels:
            panels.append(_panel(p))
        if f.reproduce:
            fv["total"] = 1
            src = base / "qualitative" / f.id
            dst = out_dir / "assets" / f.id
            if src.is_dir():
                for img in sorted(src.iterdir()):
                    if img.suffix.lower() in _IMAGE_EXT and img.is_file():
                        dst.mkdir(parents=True, exist_ok=True)
                        shutil.copy2(img, dst / img.name)
                        fv["images"].append({"src": f"assets/{f.id}/{img.name}", "name": img.stem})
            for entry in panels:
                p = entry["panel"]
                if not p.card or not dataset:
                    continue
                found = _samples(store, dataset, p.card, store.root)
                entry["status"] = "ok" if found else "not run"
                condition = _default_condition(f, dataset)
                entry["command"] = commands.target_command(
                    f"results/{scale}/{dataset}/{p.card}/seed0/{condition}.json", scale)
                for cond, path in found[:4]:
                    name = f"{p.card}_{cond}_{path.name}"
                    dst.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, dst / name)
                    fv["images"].append({"src": f"assets/{f.id}/{name}", "name": f"{p.label}: {path.stem} ({cond})"})
            fv["ran"] = 1 if fv["images"] else 0
    return fv


def _panel(p) -> dict:
    return {"panel": p, "status": "published only" if not p.card else "", "ratios": None, "file": None,
            "command": None, "alt_command": None}


def _default_condition(f: Figure, dataset: str) -> str:
    return "40-60" if f.paper == "semnet" and f.dataset in ("celeba_hq", "places2") else dataset


def _samples(store: ResultStore, dataset_dir: str, card: str, results_root: Path) -> list[tuple[str, Path]]:
    """Sample images a card's evaluation saved (``samples`` in its result files), with their GT."""
    out = []
    for r in store.results_of(dataset_dir, card):
        if not r.ok or not isinstance(r.data.get("samples"), list):
            continue
        for s in r.data["samples"]:
            if not isinstance(s, str):
                continue
            for cand in (Path(s), results_root.parent / s):
                if cand.is_file() and cand.suffix.lower() in _IMAGE_EXT:
                    out.append((r.condition or "", cand))
                    gt = cand.with_name(cand.name.replace("_pred", "_gt"))
                    if gt != cand and gt.is_file():
                        out.append((r.condition or "", gt))
                    break
    return out


def _erf_claim(c: dict, ratios: dict) -> dict:
    t = f"{c.get('threshold', 0.2):g}"
    out = {"id": c["id"], "text": c["text"], "threshold": t, "verdict": "not run", "detail": ""}
    if c["kind"] == "erf_larger":
        needed = [c["winner"], *c.get("losers", [])]
        if not all(k in ratios for k in needed):
            missing = [k for k in needed if k not in ratios]
            out["detail"] = "missing: " + ", ".join(missing)
            return out
        w = ratios[c["winner"]][t]
        worse = [k for k in c["losers"] if ratios[k][t] >= w]
        out["verdict"] = "reproduced" if not worse else "not reproduced"
        out["detail"] = f"area ratio at t={t}: " + ", ".join(f"{k} {ratios[k][t]:.3f}" for k in needed)
    else:
        rows = c.get("rows", [])
        if not all(k in ratios for k in rows):
            out["detail"] = "missing: " + ", ".join(k for k in rows if k not in ratios)
            return out
        vals = [ratios[k][t] for k in rows]
        tol = c.get("rel_tolerance", 0.1)
        ok = max(vals) - min(vals) <= tol * max(vals)
        out["verdict"] = "reproduced" if ok else "not reproduced"
        out["detail"] = f"area ratio at t={t}: " + ", ".join(f"{k} {v:.3f}" for k, v in zip(rows, vals))
    return out
