"""LaTeX: one standalone, compilable ``.tex`` per table (booktabs), paper and reproduced lines."""

from __future__ import annotations

from .views import TableView

_TEX_SPECIAL = {"\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&",
                "%": r"\%", "#": r"\#", "_": r"\_", "^": r"\^{}", "~": r"\~{}"}
_TEX_UNICODE = {"×": r"$\times$", "✓": r"$\checkmark$", "↑": r"$\uparrow$", "↓": r"$\downarrow$",
                "±": r"$\pm$", "₁": r"$_1$", "–": "--", "—": "---", "−": "$-$", "’": "'", "“": "``",
                "”": "''", "…": r"\dots{}", "≥": r"$\geq$", "≤": r"$\leq$"}

STATUS_TEX = {"not run": "--", "out of memory": "OOM", "failed": "failed", "not measured": "n/m",
              "protocol mismatch": "proto?", "published only": ""}


def tex_escape(s: str | None) -> str:
    if s is None:
        return ""
    out = []
    for ch in s:
        if ch in _TEX_SPECIAL:
            out.append(_TEX_SPECIAL[ch])
        elif ch in _TEX_UNICODE:
            out.append(_TEX_UNICODE[ch])
        elif ord(ch) < 128:
            out.append(ch)
        else:
            out.append("?")
    return "".join(out)


def _repro(cell) -> str:
    if cell.status != "ok":
        return STATUS_TEX.get(cell.status, "failed")
    d = cell.decimals
    s = f"{cell.mean:.{d}f}"
    if cell.std is not None:
        s += rf"$\pm${cell.std:.{d}f}"
    return s


def _authors(view: TableView, row: str, cond: str, col: str) -> str:
    cell = view.authors_cells.get((row, cond, col))
    return "" if cell is None else _repro(cell)


def table_tex(view: TableView, scale_note: str) -> str:
    t = view.table
    lines: list[str] = []
    if t.layout == "transposed":
        ncols = 2 + len(t.rows)
        spec = "ll" + "c" * len(t.rows)
        lines.append(" & ".join([tex_escape(t.row_header), ""] + [tex_escape(r.label) for r in t.rows]) + r" \\")
        lines.append(r"\midrule")
        for cond in t.conditions:
            for c in t.columns:
                label = c.label if len(t.conditions) == 1 else f"{c.label} ({t.condition_label(cond)})"
                cells = [view.cells[(r.id, cond, c.id)] for r in t.rows]
                lines.append(" & ".join([tex_escape(label), "paper"] +
                                        [tex_escape(r.spans.get(cond, cell.paper)) for r, cell in zip(t.rows, cells)]) + r" \\")
                lines.append(" & ".join(["", "reproduced"] + [_repro(cell) for cell in cells]) + r" \\")
                if view.authors_rows:
                    lines.append(" & ".join(["", "authors' weights"] + [_authors(view, r.id, cond, c.id)
                                                                         for r in t.rows]) + r" \\")
                lines.append(r"\addlinespace")
        if lines[-1] == r"\addlinespace":
            lines.pop()
    else:
        has_group = any(r.group for r in t.rows)
        lead = (1 if has_group else 0) + 2 + len(t.components)
        ncols = lead + len(t.conditions) * len(t.columns)
        spec = ("l" if has_group else "") + "ll" + "c" * len(t.components) + "c" * (len(t.conditions) * len(t.columns))
        multi = len(t.conditions) > 1
        if multi or t.components:
            top = [""] * (lead - len(t.components))
            rules = []
            if t.components:
                top.append(rf"\multicolumn{{{len(t.components)}}}{{c}}{{Components}}")
                rules.append(rf"\cmidrule(lr){{{lead - len(t.components) + 1}-{lead}}}")
            if multi:
                for i, cond in enumerate(t.conditions):
                    top.append(rf"\multicolumn{{{len(t.columns)}}}{{c}}{{{tex_escape(t.condition_label(cond))}}}")
                    start = lead + i * len(t.columns) + 1
                    rules.append(rf"\cmidrule(lr){{{start}-{start + len(t.columns) - 1}}}")
            else:
                top += [""] * len(t.columns)
            lines.append(" & ".join(top) + r" \\")
            lines.append(" ".join(rules))
        second = ([tex_escape(t.group_header or "")] if has_group else []) + [tex_escape(t.row_header), ""]
        second += [tex_escape(label) for _, label in t.components]
        second += [tex_escape(c.label) for _ in t.conditions for c in t.columns]
        lines.append(" & ".join(second) + r" \\")
        lines.append(r"\midrule")
        seen_groups = set()
        for i, row in enumerate(t.rows):
            first = []
            if has_group:
                first.append(tex_escape(row.group) if row.group not in seen_groups else "")
                seen_groups.add(row.group)
            first += [tex_escape(row.label), "paper"]
            first += [r"$\checkmark$" if cid in row.components else "" for cid, _ in t.components]
            for cond in t.conditions:
                if cond in row.spans:
                    first.append(rf"\multicolumn{{{len(t.columns)}}}{{c}}{{{tex_escape(row.spans[cond])}}}")
                else:
                    first += [tex_escape(view.cells[(row.id, cond, c.id)].paper) for c in t.columns]
            lines.append(" & ".join(first) + r" \\")
            if row.card:
                second = [""] * (1 if has_group else 0) + ["", "reproduced"] + [""] * len(t.components)
                second += [_repro(view.cells[(row.id, cond, c.id)]) for cond in t.conditions for c in t.columns]
                lines.append(" & ".join(second) + r" \\")
            if row.id in view.authors_rows:
                third = [""] * (1 if has_group else 0) + ["", "authors' weights"] + [""] * len(t.components)
                third += [_authors(view, row.id, cond, c.id) for cond in t.conditions for c in t.columns]
                lines.append(" & ".join(third) + r" \\")
            if i + 1 < len(t.rows):
                lines.append(r"\addlinespace")
    wide = ncols > 9
    body = "\n".join(lines)
    tabular = f"\\begin{{tabular}}{{{spec}}}\n\\toprule\n{body}\n\\bottomrule\n\\end{{tabular}}"
    if wide:
        tabular = "\\resizebox{\\linewidth}{!}{%\n" + tabular + "}"
    caption = tex_escape(f"{t.source}: {t.title}. ")
    authors_note = (" Authors' weights: the authors' released checkpoint scored here."
                    if view.authors_rows else "")
    note = tex_escape(scale_note)
    return rf"""% {t.id}: generated by ssmrepro.report from {t.path or 'the table definition'} and result files.
\documentclass{{article}}
\usepackage[T1]{{fontenc}}
\usepackage[{'landscape,' if wide else ''}margin=1.5cm]{{geometry}}
\usepackage{{booktabs}}
\usepackage{{graphicx}}
\usepackage{{amssymb}}
\begin{{document}}
\begin{{table}}[ht]
\centering
\caption{{{caption}Paper: the published values as printed. Reproduced: mean$\pm$std over seeds.{authors_note} {note}
-- not run; OOM out of memory.}}
\label{{tab:{t.id}}}
{tabular}
\end{{table}}
\end{{document}}
"""
