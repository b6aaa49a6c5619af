"""The experiment matrix the Snakemake workflow expands: which runs, result files and figures a
table (or everything) needs at a scale. Rules stay free of logic; this module holds it.

Paths (docs/architecture.md):
    runs/<scale>/<data_dir>/<card>/seed<S>/final.pt            one training run
    results/<scale>/<data_dir>/<card>/seed<S>/<stem>.json      one result (stem = condition[+options])
    results/<scale>/erf/<card>.npy                             one receptive-field map
    results/<scale>/tables/<table>.json                        a table's results, collected
``data_dir`` is the dataset used at that scale, with ``-<resolution>`` appended for rows trained at a
resolution other than their table's (SEM-Net Table 3's 64x64 rows).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from .tables import load_figures, load_scales, load_tables

_DATA_DIR = re.compile(r"^(?P<dataset>[a-z0-9_]+?)(?:-(?P<res>\d+))?$")


def parse_data_dir(data_dir: str) -> tuple[str, int | None]:
    """``embedded_inpainting-64`` -> (``embedded_inpainting``, 64)."""
    m = _DATA_DIR.match(data_dir)
    if not m:
        raise ValueError(f"not a dataset folder name: {data_dir!r}")
    return m["dataset"], int(m["res"]) if m["res"] else None


def parse_result_stem(stem: str) -> tuple[str, dict]:
    """``gopro+self_ensemble`` -> (``gopro``, {"self_ensemble": True})."""
    condition, *opts = stem.split("+")
    options: dict = {}
    for opt in opts:
        key, _, value = opt.partition("=")
        options[key] = True if not _ else value
    return condition, options


@dataclass
class Matrix:
    root: Path
    scale: str
    seeds: list[int]
    only: list[str] | None = None  # table ids to keep (default: all)
    tables: list = field(init=False)
    figures: list = field(init=False)

    def __post_init__(self):
        tdir = self.root / "workflow" / "tables"
        self.scales = load_scales(tdir)
        self.tables = [t for t in load_tables(tdir) if not self.only or t.id in self.only]
        self.figures = load_figures(tdir)

    # --- tables ---------------------------------------------------------------------------
    def table(self, table_id: str):
        for t in self.tables:
            if t.id == table_id:
                return t
        raise KeyError(f"unknown table {table_id!r}; known: {', '.join(t.id for t in self.tables)}")

    def table_results(self, table_id: str) -> list[str]:
        t = self.table(table_id)
        return sorted({str(job.result_path(self.scale, s)) for job in t.jobs(self.scale, self.scales)
                       for s in self.seeds})

    def all_results(self) -> list[str]:
        return sorted({r for t in self.tables for r in self.table_results(t.id)})

    def table_summaries(self) -> list[str]:
        return [f"results/{self.scale}/tables/{t.id}.json" for t in self.tables]

    def runs(self) -> list[str]:
        out = set()
        for t in self.tables:
            for job in t.jobs(self.scale, self.scales):
                for s in self.seeds:
                    out.add(str(job.run_dir(self.scale, s) / "final.pt"))
        return sorted(out)

    def datasets(self) -> list[str]:
        out = set()
        for t in self.tables:
            for job in t.jobs(self.scale, self.scales):
                out.add(job.dataset)
        for f in self.figures:
            if f.reproduce and f.dataset and f.kind in ("erf", "activation"):
                out.add(self.figure_dataset(f))
        return sorted(out)

    # --- figures --------------------------------------------------------------------------
    def figure_dataset(self, figure) -> str:
        from .tables import dataset_for_scale

        return dataset_for_scale(figure.dataset, self.scale, self.scales)

    def erf_figures(self) -> list:
        return [f for f in self.figures if f.reproduce and f.kind in ("erf", "activation")]

    def erf_outputs(self) -> list[str]:
        cards = {c for f in self.erf_figures() for c in f.cards()}
        return sorted(f"results/{self.scale}/erf/{c}.npy" for c in cards)

    def erf_run(self, card: str) -> str:
        """The training run whose weights an ERF map uses: the card on its figure's dataset, seed 0."""
        for f in self.erf_figures():
            if card in f.cards():
                return f"runs/{self.scale}/{self.figure_dataset(f)}/{card}/seed{self.seeds[0]}"
        raise KeyError(f"card {card!r} is in no receptive-field figure")


def is_embedded(dataset: str) -> bool:
    return dataset.startswith("embedded_")


def collect_table(root: Path, table_id: str, scale: str, seeds: list[int], out: Path) -> Path:
    """Gather a table's result files into one JSON (the DVC stage output of that table)."""
    import json

    from .atomic import write_json

    matrix = Matrix(root, scale, seeds)
    entries = []
    for path in matrix.table_results(table_id):
        p = root / path
        if not p.exists():
            raise FileNotFoundError(f"{table_id}: result {path} is missing; run "
                                    f"`snakemake {matrix.table(table_id).rule}`")
        entries.append({"path": path, "result": json.loads(p.read_text())})
    write_json(out, {"table": table_id, "scale": scale, "seeds": seeds, "results": entries})
    return out


# --- DVC ----------------------------------------------------------------------------------------
EMBEDDED = ("embedded_inpainting", "embedded_deblur", "embedded_defocus")


def card_families(root: Path, cards: list[str]) -> list[str]:
    from .cards import all_cards

    known = all_cards(root)
    return sorted({known[c].family for c in cards if c in known})


def dvc_stages(root: Path, params: dict) -> dict:
    """The content of dvc.yaml: one stage per embedded dataset, one per table (running its
    Snakemake target, depending on exactly its cards, table file, datasets and parameters), the
    figures and the report. Generated so that it never drifts from the tables; a test checks it."""
    scale = params["scale"]
    matrix = Matrix(root, scale, params["seeds"])
    common = ["src/ssmrepro", "Snakefile", "workflow/rules", "workflow/tables/scales.yaml",
              "workflow/config.yaml", "workflow/dvc.config.yaml"]
    base_params = ["scale", "seeds", "eval_limit"]
    stages: dict = {}
    for name in EMBEDDED:
        stages[f"data_{name}"] = {
            "cmd": f"ssmrepro build-embedded {name} --root {params.get('data_root', 'data')}",
            "deps": ["src/ssmrepro/data", f"datasets/{name}.yaml"],
            "outs": [f"{params.get('data_root', 'data')}/{name}"],
        }
    snake = "snakemake --cores all --configfile params.yaml workflow/dvc.config.yaml"
    for t in matrix.tables:
        cards = t.cards()
        datasets = sorted({j.dataset for j in t.jobs(scale, matrix.scales)})
        stages[t.id] = {
            "cmd": f"{snake} -- {t.rule}",
            "deps": common + [f"workflow/tables/{t.id}.yaml"] + [f"models/{c}.yaml" for c in cards]
            + [f"{params.get('data_root', 'data')}/{d}" for d in datasets],
            "params": base_params + [f"steps.{f}" for f in card_families(root, cards)],
            "outs": [f"results/{scale}/tables/{t.id}.json"],
        }
    fig_cards = sorted({c for f in matrix.erf_figures() for c in f.cards()})
    stages["figures"] = {
        "cmd": f"{snake} -- reproduce_figures",
        "deps": common + ["workflow/tables/figures.yaml"] + [f"models/{c}.yaml" for c in fig_cards],
        "params": base_params + [f"steps.{f}" for f in card_families(root, fig_cards)],
        "outs": [f"results/{scale}/erf"],
    }
    stages["report"] = {
        "cmd": f"ssmrepro report --scale {scale} --results results --out reports",
        "deps": ["src/ssmrepro/report", "workflow/tables", f"results/{scale}/erf"]
        + [f"results/{scale}/tables/{t.id}.json" for t in matrix.tables],
        "params": ["scale"],
        "outs": [{"reports/index.html": {"cache": False}}],
    }
    return {"stages": stages}


def write_dvc_yaml(root: Path) -> Path:
    from .atomic import write_text

    params = yaml_load(root / "params.yaml")
    header = ("# Generated by `ssmrepro dvc-yaml` from workflow/tables, models/ and params.yaml;\n"
              "# do not edit by hand (tests/test_workflow.py checks it is up to date).\n")
    import yaml

    write_text(root / "dvc.yaml", header + yaml.safe_dump(dvc_stages(root, params), sort_keys=False))
    return root / "dvc.yaml"


def yaml_load(path: Path):
    import yaml

    return yaml.safe_load(path.read_text())
