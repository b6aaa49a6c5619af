"""Table and figure definitions: ``workflow/tables/<paper>_t<N>.yaml`` and ``figures.yaml``.

A table file says what a supplement table claims (Contract 5 in docs/architecture.md): its rows
(the card each trains, evaluation options, the published values *as printed*, as strings), its
columns (metric name + protocol id, or a non-metric field such as FLOPs), its test conditions and
the claims it supports. It is the single source for the workflow (which jobs exist: ``Table.jobs``)
and for the report (what to print beside what).

Format (short; the JSON schema ``TABLE_SCHEMA`` below is the authority)::

    paper: semnet                 # semnet | evssm
    table: 2
    title: Ablation studies of each component trained on CelebA-HQ
    source: SEM-Net supplement, Table 2
    dataset: celeba_hq            # Contract 2 name
    resolution: 256               # train/test size where it matters (rows may override)
    conditions: ["0.01-20", "20-40", "40-60"]      # mask bins, or the test-set name
    condition_labels: {"0.01-20": "0.01%-20%"}     # as printed (optional)
    row_header: Net               # printed head of the label column
    components: [MB, {id: FN, label: "FN [11]"}]   # check-mark columns, as printed (optional)
    columns:
      - {id: psnr, label: "PSNR ↑", metric: psnr, protocol: "psnr[rgb,uint8]"}
      - {id: flops, label: "FLOPs (G)", kind: flops}      # non-metric: params | flops | runtime
    rows:
      - id: a
        label: "(a)"
        card: semnet-half-base    # null: a published-only baseline
        components: [MB, FN]      # the check marks of this row
        options: {self_ensemble: true}   # evaluation options (optional)
        resolution: 64            # per-row override (optional)
        published:                # condition -> column -> string exactly as printed
          "0.01-20": {psnr: "33.5812"}
          "20-40": "Out of memory"        # one printed value spanning the condition's columns
    claims:
      - id: sefn_beats_fn
        text: SEFN (c) beats FN (b) on every metric at every mask ratio
        kind: beats               # beats | order | ratio | equal | status
        winner: c
        losers: [b]
        metrics: [psnr, ssim]     # column ids ("metric:" for one); default: every metric column
        conditions: ["40-60"]     # default: every condition

A table with a single condition may give ``published`` flat (column -> string).

Paths of runs and results: ``runs/<scale>/<dataset_dir>/<card>/seed<S>/`` and
``results/<scale>/<dataset_dir>/<card>/seed<S>/<result_stem>.json`` where ``dataset_dir`` is the
dataset name, suffixed ``-<resolution>`` when a row overrides the table's resolution (Table 3's
64x64 rows: ``celeba_hq-64``), and ``result_stem`` is the condition, suffixed ``+<option>`` for each
non-default evaluation option (``gopro+self_ensemble``). At a scale other than ``full`` datasets
(and test-set conditions) may be replaced by the embedded ones, as ``workflow/tables/scales.yaml``
says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml

PAPERS = ("semnet", "evssm")
COLUMN_KINDS = ("metric", "params", "flops", "runtime")
CLAIM_KINDS = ("beats", "order", "ratio", "equal", "status")
#: evaluation options a result may carry, with the value meant when a row does not set it
OPTION_DEFAULTS: dict[str, Any] = {"self_ensemble": False}
#: result-file fields that hold the non-metric columns (first present wins)
FIELDS: dict[str, tuple[str, ...]] = {
    "params": ("params_m", "params"),
    "flops": ("macs_g", "flops_g"),
    "runtime": ("runtime_ms_per_image",),
}
_TABLE_FILE = re.compile(r"^(semnet|evssm)_t(\d+)\.ya?ml$")
#: libyaml's parser when PyYAML was built with it: the same documents as ``yaml.safe_load`` (same
#: Python constructor and resolver), about ten times faster to parse (the DAG build reads every file)
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class TableError(ValueError):
    """A table or figure file that does not follow the format; the message is one line."""


# --------------------------------------------------------------------------------------------
# JSON schema (structure); cross-references are checked after it in ``_check_references``
_STR = {"type": "string", "minLength": 1}
_STRS = {"type": "array", "items": _STR}
_ID = {"type": "string", "pattern": r"^[A-Za-z0-9_.\-]+$"}
_PUBLISHED_GROUP = {
    "oneOf": [
        _STR,  # one printed value spanning the group ("Out of memory")
        {"type": "object", "additionalProperties": {"type": "string"}},
    ]
}
_CLAIM = {
    "type": "object",
    "required": ["id", "text", "kind"],
    "additionalProperties": False,
    "properties": {
        "id": _ID,
        "text": _STR,
        "kind": {"enum": list(CLAIM_KINDS)},
        "winner": _ID,
        "losers": {"type": "array", "items": _ID, "minItems": 1},
        "rows": {"type": "array", "items": _ID, "minItems": 2},
        "row": _ID,
        "numerator": _ID,
        "denominator": _ID,
        "metric": _ID,
        "metrics": {"type": "array", "items": _ID, "minItems": 1},
        "condition": _STR,
        "conditions": {"type": "array", "items": _STR, "minItems": 1},
        "by": {"type": "string", "pattern": r"^[0-9.]+$"},
        "expected": {"type": ["number", "string"]},
        "rel_tolerance": {"type": "number", "minimum": 0},
        "abs_tolerance": {"type": "number", "minimum": 0},
        "source": _STR,
    },
    "allOf": [
        {"if": {"properties": {"kind": {"const": "beats"}}},
         "then": {"required": ["winner", "losers"]}},
        {"if": {"properties": {"kind": {"const": "order"}}}, "then": {"required": ["rows"]}},
        {"if": {"properties": {"kind": {"const": "equal"}}}, "then": {"required": ["rows"]}},
        {"if": {"properties": {"kind": {"const": "ratio"}}},
         "then": {"required": ["numerator", "denominator", "expected"]}},
        {"if": {"properties": {"kind": {"const": "status"}}},
         "then": {"required": ["row", "expected"]}},
    ],
}
TABLE_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["paper", "table", "title", "source", "dataset", "conditions", "columns", "rows"],
    "additionalProperties": False,
    "properties": {
        "paper": {"enum": list(PAPERS)},
        "table": {"type": "integer", "minimum": 1},
        "title": _STR,
        "caption": _STR,
        "source": _STR,
        "dataset": _ID,
        "resolution": {"type": "integer", "minimum": 1},
        "setting": _STR,
        "notes": _STRS,
        "conditions": {"type": "array", "items": _STR, "minItems": 1, "uniqueItems": True},
        "condition_labels": {"type": "object", "additionalProperties": _STR},
        "row_header": _STR,
        "group_header": _STR,
        "layout": {"enum": ["rows", "transposed"]},
        "components": {
            "type": "array",
            "items": {"oneOf": [_ID, {
                "type": "object", "required": ["id"], "additionalProperties": False,
                "properties": {"id": _ID, "label": _STR}}]},
        },
        "columns": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "label"],
                "additionalProperties": False,
                "properties": {
                    "id": _ID,
                    "label": _STR,
                    "kind": {"enum": list(COLUMN_KINDS)},
                    "metric": _ID,
                    "protocol": _STR,
                    "better": {"enum": ["higher", "lower"]},
                    "unit": {"type": "string"},
                    "note": _STR,
                },
                "if": {"properties": {"kind": {"enum": ["params", "flops", "runtime"]}},
                       "required": ["kind"]},
                "then": {},
                "else": {"required": ["metric", "protocol"]},
            },
        },
        "rows": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["id", "label", "card", "published"],
                "additionalProperties": False,
                "properties": {
                    "id": _ID,
                    "label": _STR,
                    "group": _STR,
                    "card": {"oneOf": [_ID, {"type": "null"}]},
                    "components": {"type": "array", "items": _ID},
                    "options": {"type": "object",
                                "additionalProperties": {"type": ["boolean", "string", "integer"]}},
                    "resolution": {"type": "integer", "minimum": 1},
                    "dataset": _ID,
                    "note": _STR,
                    "published": {"type": "object", "additionalProperties": _PUBLISHED_GROUP},
                },
            },
        },
        "claims": {"type": "array", "items": _CLAIM},
    },
}

FIGURE_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["figures"],
    "additionalProperties": False,
    "properties": {"figures": {"type": "array", "items": {
        "type": "object",
        "required": ["id", "paper", "figure", "kind", "title", "source", "panels"],
        "additionalProperties": False,
        "properties": {
            "id": _ID,
            "paper": {"enum": list(PAPERS)},
            "figure": {"type": "integer", "minimum": 1},
            "kind": {"enum": ["erf", "activation", "qualitative"]},
            "title": _STR,
            "source": _STR,
            "dataset": _ID,
            "reproduce": {"type": "boolean"},
            "notes": _STRS,
            "panels": {"type": "array", "items": {
                "type": "object", "required": ["label"], "additionalProperties": False,
                "properties": {"label": _STR, "card": {"oneOf": [_ID, {"type": "null"}]},
                               "note": _STR}}},
            "claims": {"type": "array", "items": {
                "type": "object", "required": ["id", "text", "kind"], "additionalProperties": False,
                "properties": {"id": _ID, "text": _STR,
                               "kind": {"enum": ["erf_larger", "erf_similar"]},
                               "winner": _ID, "losers": {"type": "array", "items": _ID},
                               "rows": {"type": "array", "items": _ID},
                               "threshold": {"type": "number"},
                               "rel_tolerance": {"type": "number"}}}},
        },
    }}},
}

SCALES_SCHEMA: dict = {
    "type": "object",
    "additionalProperties": {
        "type": "object",
        "additionalProperties": False,
        "properties": {"datasets": {"type": "object", "additionalProperties": _ID},
                       "comparable": {"type": "boolean"},
                       "description": _STR},
    },
}


# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Column:
    id: str
    label: str
    kind: str = "metric"  # metric | params | flops | runtime
    metric: str | None = None
    protocol: str | None = None
    better: str | None = None  # higher | lower | None
    unit: str = ""
    note: str | None = None

    @property
    def is_metric(self) -> bool:
        return self.kind == "metric"

    @property
    def measure(self) -> str:
        """What the cell measures, across tables: the protocol id, or the non-metric kind."""
        return self.protocol if self.is_metric else self.kind

    @property
    def fields(self) -> tuple[str, ...]:
        return FIELDS.get(self.kind, ())


_DEFAULT_BETTER = {"psnr": "higher", "ssim": "higher", "l1": "lower", "fid": "lower",
                   "lpips": "lower", "params": "lower", "flops": "lower", "runtime": "lower"}


@dataclass(frozen=True)
class Row:
    id: str
    label: str
    card: str | None
    published: dict[str, dict[str, str]]  # condition -> column -> printed string
    spans: dict[str, str] = field(default_factory=dict)  # condition -> printed string over the group
    components: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)
    resolution: int | None = None  # per-row override
    dataset: str | None = None  # per-row override
    group: str | None = None
    note: str | None = None

    def published_value(self, condition: str, column: str) -> str | None:
        """The string printed in the paper for this cell (a span counts for each column)."""
        if condition in self.spans:
            return self.spans[condition]
        return self.published.get(condition, {}).get(column)

    def option_items(self) -> tuple[tuple[str, Any], ...]:
        return tuple(sorted(self.options.items()))


@dataclass(frozen=True)
class Claim:
    id: str
    text: str
    kind: str
    metrics: tuple[str, ...]
    conditions: tuple[str, ...]
    winner: str | None = None
    losers: tuple[str, ...] = ()
    rows: tuple[str, ...] = ()  # order / equal
    row: str | None = None  # status
    numerator: str | None = None
    denominator: str | None = None
    expected: Any = None
    by: str | None = None
    rel_tolerance: float | None = None
    abs_tolerance: float | None = None
    source: str | None = None

    def row_ids(self) -> tuple[str, ...]:
        ids = [self.winner, *self.losers, *self.rows, self.row, self.numerator, self.denominator]
        return tuple(dict.fromkeys(i for i in ids if i))


@dataclass(frozen=True)
class Job:
    """One evaluation a table needs: iterates as (card, dataset, resolution, condition, options)."""

    card: str
    dataset: str
    resolution: int | None
    condition: str
    options: tuple[tuple[str, Any], ...] = ()
    dataset_dir: str = ""  # the folder name under runs/<scale>/ and results/<scale>/

    def __iter__(self) -> Iterator:
        return iter((self.card, self.dataset, self.resolution, self.condition, dict(self.options)))

    @property
    def result_stem(self) -> str:
        return result_stem(self.condition, dict(self.options))

    def run_dir(self, scale: str, seed: int, root: str | Path = "runs") -> Path:
        return Path(root) / scale / self.dataset_dir / self.card / f"seed{seed}"

    def result_path(self, scale: str, seed: int, root: str | Path = "results") -> Path:
        return Path(root) / scale / self.dataset_dir / self.card / f"seed{seed}" / f"{self.result_stem}.json"


def result_stem(condition: str, options: dict[str, Any]) -> str:
    """File stem of a result: the condition, plus ``+name`` / ``+name=value`` per non-default option."""
    parts = [condition]
    for key, value in sorted(options.items()):
        if OPTION_DEFAULTS.get(key, None) == value:
            continue
        parts.append(key if value is True else f"{key}={value}")
    return "+".join(parts)


def options_match(wanted: dict[str, Any], got: dict[str, Any] | None) -> bool:
    """Whether a result's options are those a row asks for (unset known options take defaults)."""
    got = got if isinstance(got, dict) else {}
    for key in set(wanted) | set(OPTION_DEFAULTS):
        if wanted.get(key, OPTION_DEFAULTS.get(key)) != got.get(key, OPTION_DEFAULTS.get(key)):
            return False
    return True


@dataclass(frozen=True)
class Table:
    paper: str
    table: int
    title: str
    source: str
    dataset: str
    conditions: tuple[str, ...]
    columns: tuple[Column, ...]
    rows: tuple[Row, ...]
    claims: tuple[Claim, ...] = ()
    resolution: int | None = None
    caption: str | None = None
    setting: str | None = None
    notes: tuple[str, ...] = ()
    condition_labels: dict[str, str] = field(default_factory=dict)
    row_header: str = "Method"
    group_header: str | None = None
    layout: str = "rows"
    components: tuple[tuple[str, str], ...] = ()  # (id, printed label)
    path: str | None = None

    @property
    def id(self) -> str:
        return f"{self.paper}_t{self.table}"

    @property
    def rule(self) -> str:
        """The Snakemake target that produces every result of this table."""
        return f"reproduce_{self.id}"

    @property
    def task(self) -> str:
        return "inpainting" if self.paper == "semnet" else "deblurring"

    def row(self, row_id: str) -> Row:
        for r in self.rows:
            if r.id == row_id:
                return r
        raise KeyError(f"{self.id}: no row {row_id!r}; rows: {', '.join(r.id for r in self.rows)}")

    def column(self, column_id: str) -> Column:
        for c in self.columns:
            if c.id == column_id:
                return c
        raise KeyError(f"{self.id}: no column {column_id!r}")

    def condition_label(self, condition: str) -> str:
        return self.condition_labels.get(condition, condition)

    def row_dataset(self, row: Row) -> str:
        return row.dataset or self.dataset

    def row_resolution(self, row: Row) -> int | None:
        return row.resolution if row.resolution is not None else self.resolution

    def dataset_dir(self, row: Row, scale: str | None = None, scales: dict | None = None) -> str:
        name = dataset_for_scale(self.row_dataset(row), scale, scales)
        if row.resolution is not None and row.resolution != self.resolution:
            name = f"{name}-{row.resolution}"
        return name

    def condition_at(self, row: Row, condition: str, scale: str | None = None,
                     scales: dict | None = None) -> str:
        """The condition as results name it at a scale (test-set names follow their dataset)."""
        if condition == self.row_dataset(row) or condition in _KNOWN_TEST_SETS:
            return dataset_for_scale(condition, scale, scales)
        return condition

    def job(self, row: Row, condition: str, scale: str | None = None,
            scales: dict | None = None) -> Job | None:
        if row.card is None:
            return None
        return Job(card=row.card, dataset=dataset_for_scale(self.row_dataset(row), scale, scales),
                   resolution=self.row_resolution(row),
                   condition=self.condition_at(row, condition, scale, scales),
                   options=row.option_items(),
                   dataset_dir=self.dataset_dir(row, scale, scales))

    def jobs(self, scale: str | None = None, scales: dict | None = None) -> list[Job]:
        """Every (card, dataset, resolution, condition, options) this table needs, without repeats.

        With ``scale`` (and the mapping of ``load_scales``), datasets are those used at that scale.
        """
        out: dict[Job, None] = {}
        for row in self.rows:
            for condition in self.conditions:
                job = self.job(row, condition, scale, scales)
                if job is not None:
                    out.setdefault(job)
        return list(out)

    def cards(self) -> list[str]:
        return sorted({r.card for r in self.rows if r.card})


_KNOWN_TEST_SETS = {"gopro", "hide", "realblur_j", "realblur_r", "dpdd"}


@dataclass(frozen=True)
class Panel:
    label: str
    card: str | None = None
    note: str | None = None


@dataclass(frozen=True)
class Figure:
    id: str
    paper: str
    figure: int
    kind: str  # erf | activation | qualitative
    title: str
    source: str
    panels: tuple[Panel, ...]
    dataset: str | None = None
    reproduce: bool = True
    notes: tuple[str, ...] = ()
    claims: tuple[dict, ...] = ()

    def cards(self) -> list[str]:
        return sorted({p.card for p in self.panels if p.card}) if self.reproduce else []


# --------------------------------------------------------------------------------------------
def _fail(path: str | Path, key: str, message: str) -> TableError:
    return TableError(f"{path}: {key or '<top>'}: {message}")


def _key(parts: Iterable) -> str:
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out


def _validate_schema(data: Any, schema: dict, path: str | Path) -> None:
    import jsonschema

    validator = jsonschema.Draft202012Validator(schema)
    errors = list(validator.iter_errors(data))
    if not errors:
        return
    err = jsonschema.exceptions.best_match(errors)
    # descend into oneOf/anyOf context to name the deepest key
    while err.context:
        err = jsonschema.exceptions.best_match(err.context)
    message = err.message.replace("\n", " ")
    if len(message) > 200:
        message = message[:197] + "..."
    raise _fail(path, _key(err.absolute_path), message)


def _read_yaml(path: Path) -> Any:
    try:
        return yaml.load(path.read_text(), Loader=YAML_LOADER)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark else "yaml"
        raise _fail(path, where, f"not valid YAML ({getattr(e, 'problem', e)})") from None
    except OSError as e:
        raise TableError(f"{path}: cannot read ({e.strerror})") from None


def load_table(path: str | Path) -> Table:
    """Load and check one table file; a bad file raises ``TableError`` naming the file and key."""
    path = Path(path)
    data = _read_yaml(path)
    _validate_schema(data, TABLE_SCHEMA, path)
    return _build_table(data, path)


def _build_table(data: dict, path: Path) -> Table:
    m = _TABLE_FILE.match(path.name)
    expected = f"{data['paper']}_t{data['table']}"
    if m is None or path.stem != expected:
        raise _fail(path, "table", f"file must be named {expected}.yaml (paper and table say so)")
    conditions = tuple(data["conditions"])
    components = tuple((c, c) if isinstance(c, str) else (c["id"], c.get("label", c["id"]))
                       for c in data.get("components", []))
    component_ids = {c[0] for c in components}

    columns = []
    for i, c in enumerate(data["columns"]):
        kind = c.get("kind", "metric")
        name = c.get("metric") or kind
        columns.append(Column(id=c["id"], label=c["label"], kind=kind, metric=c.get("metric"),
                              protocol=c.get("protocol"),
                              better=c.get("better", _DEFAULT_BETTER.get(name)),
                              unit=c.get("unit", ""), note=c.get("note")))
    _unique(path, "columns", [c.id for c in columns])
    column_ids = {c.id for c in columns}

    rows = []
    for i, r in enumerate(data["rows"]):
        where = f"rows[{i}]"
        published = r["published"]
        if len(conditions) == 1 and published and set(published) <= column_ids:
            published = {conditions[0]: published}  # flat form for a single condition
        table_pub: dict[str, dict[str, str]] = {}
        spans: dict[str, str] = {}
        for cond, group in published.items():
            if cond not in conditions:
                raise _fail(path, f"{where}.published.{cond}",
                            f"unknown condition; conditions: {', '.join(conditions)}")
            if isinstance(group, str):
                spans[cond] = group
                continue
            for col in group:
                if col not in column_ids:
                    raise _fail(path, f"{where}.published.{cond}.{col}",
                                f"unknown column; columns: {', '.join(sorted(column_ids))}")
            table_pub[cond] = dict(group)
        for comp in r.get("components", []):
            if comp not in component_ids:
                raise _fail(path, f"{where}.components",
                            f"unknown component {comp!r}; components: {', '.join(sorted(component_ids)) or '(none)'}")
        rows.append(Row(id=r["id"], label=r["label"], card=r["card"], published=table_pub,
                        spans=spans, components=tuple(r.get("components", [])),
                        options=dict(r.get("options", {})), resolution=r.get("resolution"),
                        dataset=r.get("dataset"), group=r.get("group"), note=r.get("note")))
    _unique(path, "rows", [r.id for r in rows])
    row_ids = {r.id for r in rows}

    claims = []
    metric_cols = tuple(c.id for c in columns if c.is_metric)
    for i, c in enumerate(data.get("claims", [])):
        where = f"claims[{i}]"
        metrics = tuple(c["metrics"]) if "metrics" in c else ((c["metric"],) if "metric" in c else metric_cols)
        conds = tuple(c["conditions"]) if "conditions" in c else ((c["condition"],) if "condition" in c else conditions)
        for col in metrics:
            if col not in column_ids:
                raise _fail(path, f"{where}.metrics", f"unknown column {col!r}")
        for cond in conds:
            if cond not in conditions:
                raise _fail(path, f"{where}.conditions", f"unknown condition {cond!r}")
        claim = Claim(id=c["id"], text=c["text"], kind=c["kind"], metrics=metrics, conditions=conds,
                      winner=c.get("winner"), losers=tuple(c.get("losers", ())),
                      rows=tuple(c.get("rows", ())), row=c.get("row"),
                      numerator=c.get("numerator"), denominator=c.get("denominator"),
                      expected=c.get("expected"), by=c.get("by"),
                      rel_tolerance=c.get("rel_tolerance"), abs_tolerance=c.get("abs_tolerance"),
                      source=c.get("source"))
        for rid in claim.row_ids():
            if rid not in row_ids:
                raise _fail(path, f"{where}", f"unknown row {rid!r}; rows: {', '.join(r.id for r in rows)}")
        if claim.kind in ("ratio",) and len(metrics) != 1:
            raise _fail(path, f"{where}.metric", "a ratio claim names exactly one column")
        claims.append(claim)
    _unique(path, "claims", [c.id for c in claims])

    labels = data.get("condition_labels", {})
    for cond in labels:
        if cond not in conditions:
            raise _fail(path, f"condition_labels.{cond}", "unknown condition")
    return Table(paper=data["paper"], table=data["table"], title=data["title"], source=data["source"],
                 dataset=data["dataset"], conditions=conditions, columns=tuple(columns),
                 rows=tuple(rows), claims=tuple(claims), resolution=data.get("resolution"),
                 caption=data.get("caption"), setting=data.get("setting"),
                 notes=tuple(data.get("notes", [])), condition_labels=dict(labels),
                 row_header=data.get("row_header", "Method"), group_header=data.get("group_header"),
                 layout=data.get("layout", "rows"), components=components, path=str(path))


def _unique(path: Path, key: str, ids: list[str]) -> None:
    seen = set()
    for i, x in enumerate(ids):
        if x in seen:
            raise _fail(path, f"{key}[{i}].id", f"duplicate id {x!r}")
        seen.add(x)


def table_files(root: str | Path) -> list[Path]:
    root = Path(root)
    files = [p for p in root.iterdir() if _TABLE_FILE.match(p.name)]
    order = {p: i for i, p in enumerate(PAPERS)}
    return sorted(files, key=lambda p: (order[_TABLE_FILE.match(p.name).group(1)],
                                        int(_TABLE_FILE.match(p.name).group(2))))


def load_tables(root: str | Path = "workflow/tables") -> list[Table]:
    """Every ``<paper>_t<N>.yaml`` under ``root``, ordered by paper then table number."""
    root = Path(root)
    if not root.is_dir():
        raise TableError(f"{root}: not a directory of table definitions")
    return [load_table(p) for p in table_files(root)]


def load_figures(root: str | Path = "workflow/tables") -> list[Figure]:
    """``figures.yaml`` under ``root`` (an empty list when the file is absent)."""
    path = Path(root) / "figures.yaml"
    if not path.exists():
        return []
    data = _read_yaml(path)
    _validate_schema(data, FIGURE_SCHEMA, path)
    figures = []
    for i, f in enumerate(data["figures"]):
        panels = tuple(Panel(label=p["label"], card=p.get("card"), note=p.get("note"))
                       for p in f["panels"])
        cards = {p.card for p in panels if p.card}
        for j, c in enumerate(f.get("claims", [])):
            for rid in [c.get("winner"), *c.get("losers", []), *c.get("rows", [])]:
                if rid and rid not in cards:
                    raise _fail(path, f"figures[{i}].claims[{j}]", f"card {rid!r} is in no panel")
        figures.append(Figure(id=f["id"], paper=f["paper"], figure=f["figure"], kind=f["kind"],
                              title=f["title"], source=f["source"], panels=panels,
                              dataset=f.get("dataset"), reproduce=f.get("reproduce", True),
                              notes=tuple(f.get("notes", [])), claims=tuple(f.get("claims", []))))
    _unique(path, "figures", [f.id for f in figures])
    return figures


def load_scales(root: str | Path = "workflow/tables") -> dict:
    """``scales.yaml``: per scale, which dataset stands in for which (empty when absent)."""
    path = Path(root) / "scales.yaml"
    if not path.exists():
        return {}
    data = _read_yaml(path) or {}
    _validate_schema(data, SCALES_SCHEMA, path)
    return data


def dataset_for_scale(dataset: str, scale: str | None, scales: dict | None) -> str:
    if not scale or not scales:
        return dataset
    return (scales.get(scale) or {}).get("datasets", {}).get(dataset, dataset)


def all_cards(tables: Iterable[Table], figures: Iterable[Figure] = ()) -> list[str]:
    """Every card the tables (and figures) name, sorted, without repeats; published-only rows skipped."""
    cards: set[str] = set()
    for t in tables:
        cards.update(t.cards())
    for f in figures:
        cards.update(f.cards())
    return sorted(cards)


def all_jobs(tables: Iterable[Table], scale: str | None = None, scales: dict | None = None) -> list[Job]:
    """The union of every table's jobs, without repeats (rows shared by tables run once)."""
    out: dict[Job, None] = {}
    for t in tables:
        for j in t.jobs(scale, scales):
            out.setdefault(j)
    return list(out)


def card_rows(tables: Iterable[Table]) -> dict[str, list[dict]]:
    """card -> the table rows it serves (``{paper, table, row}``), for the cards' ``serves`` lists."""
    out: dict[str, list[dict]] = {}
    for t in tables:
        for r in t.rows:
            if r.card:
                out.setdefault(r.card, []).append({"paper": t.paper, "table": t.table, "row": r.id})
    return out


# --------------------------------------------------------------------------------------------
_NUMBER = re.compile(r"^\s*(-?\d+(?:\.(\d+))?)\s*([MGK]?)\s*$")


def parse_number(printed: str | None) -> float | None:
    """The value of a printed cell (``"33.5812"``, ``"24M"`` -> 24.0); None for text (``"Out of memory"``)."""
    if printed is None:
        return None
    m = _NUMBER.match(printed)
    return float(m.group(1)) if m else None


def printed_decimals(printed: str | None) -> int | None:
    if printed is None:
        return None
    m = _NUMBER.match(printed)
    if not m:
        return None
    return len(m.group(2) or "")


def mask_bin(condition: str) -> tuple[float, float] | None:
    """``"20-40"`` -> (20.0, 40.0); None for a condition that is not a mask-ratio bin."""
    m = re.match(r"^(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)$", condition)
    return (float(m.group(1)), float(m.group(2))) if m else None
