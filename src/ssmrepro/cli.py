"""The ``ssmrepro`` command line. Snakemake rules call only these commands.

Each subcommand imports what it needs when it runs, so ``ssmrepro --help`` is instant. Errors the
user can fix (bad input, missing data or weights, a full disk or a forbidden folder) print one
line, ``ssmrepro: error: ...``, and exit 2.
"""

from __future__ import annotations

import argparse
import errno
import json
import sys
from pathlib import Path

from .errors import UserError

SCALES = ("smoke", "mini", "paper")
# OSErrors reported as one line (exit 2) rather than a traceback
USER_FIXABLE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EACCES, errno.EPERM, errno.EROFS,
                                 errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EEXIST})


def _print_json(obj) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


# --- env -----------------------------------------------------------------------------------
def cmd_env(args) -> int:
    from .envreport import env_report, format_env_report

    report = env_report()
    _print_json(report) if args.json else print(format_env_report(report))
    return 0


# --- list / info ---------------------------------------------------------------------------
def cmd_list(args) -> int:
    from .cards import all_cards

    cards = all_cards()
    if args.json:
        _print_json({n: {"family": c.family, "task": c.task, "description": c.description,
                         "serves": c.serves} for n, c in cards.items()})
        return 0
    width = max((len(n) for n in cards), default=4)
    for name, card in cards.items():
        rows = ", ".join(_serves_label(s) for s in card.serves) or "-"
        print(f"{name:<{width}}  {card.family:<9}  {card.task:<11}  {rows}")
    return 0


def _serves_label(s: dict) -> str:
    if "figure" in s:
        return f"{s['figure']}{'(' + s['panel'] + ')' if s.get('panel') else ''}"
    return f"{s['paper']} T{s['table']}({s['row']})"


def cmd_info(args) -> int:
    from .cards import load_card
    from .complexity import model_info

    card = load_card(args.card)
    info = model_info(card, scale=args.scale, size=tuple(args.size), memory=not args.no_memory)
    if args.json:
        _print_json(info)
    else:
        for key, value in info.items():
            print(f"{key:>22}: {value}")
    return 0


# --- train / evaluate / metrics / erf ------------------------------------------------------
def cmd_train(args) -> int:
    from .train_cli import train_from_cli

    return train_from_cli(args)


def cmd_evaluate(args) -> int:
    from .evaluate import evaluate_run

    paths = evaluate_run(Path(args.run_dir), conditions=args.condition, out=args.out,
                         self_ensemble=args.self_ensemble, data_root=args.data_root,
                         limit=args.limit)
    for p in paths:
        print(p)
    return 0


def cmd_metrics(args) -> int:
    from .metrics import metrics_for_dirs

    out = metrics_for_dirs(args.pred, args.gt, mask_dir=args.mask, protocol_ids=args.protocol)
    _print_json(out) if args.json else [print(f"{k}: {v}") for k, v in out.items()]
    return 0


def cmd_erf(args) -> int:
    from .erf import erf_cli

    return erf_cli(args)


def cmd_report(args) -> int:
    from .paths import project_root
    from .report import render

    root = project_root()
    out = render(root / "workflow" / "tables", Path(args.results), Path(args.out), scale=args.scale)
    print(out)
    return 0


def cmd_collect(args) -> int:
    from .paths import project_root
    from .workflow import collect_table

    print(collect_table(project_root(), args.table, args.scale, args.seed or [0], Path(args.out)))
    return 0


def cmd_dvc_yaml(args) -> int:
    from .paths import project_root
    from .workflow import write_dvc_yaml

    print(write_dvc_yaml(project_root()))
    return 0


def cmd_plan(args) -> int:
    from .plan import plan

    result = plan(scale=args.scale, seeds=args.seeds, step_seconds=args.step_seconds)
    _print_json(result) if args.json else print(result["text"])
    return 0


def cmd_import_weights(args) -> int:
    from .convert import import_weights

    out = import_weights(Path(args.path), card=args.card, out=Path(args.out), scale=args.scale)
    print(out)
    return 0


def cmd_export_weights(args) -> int:
    from .convert import export_weights

    print(export_weights(Path(args.src), card=args.card, out=Path(args.out), scale=args.scale))
    return 0


def cmd_evaluate_weights(args) -> int:
    from .evaluate import evaluate_weights

    paths = evaluate_weights(args.card, weights=args.weights, data=args.data,
                             conditions=args.condition, out=args.out,
                             self_ensemble=args.self_ensemble, data_root=args.data_root,
                             limit=args.limit, scale=args.scale, model_scale=args.model_scale,
                             resolution=args.resolution)
    for p in paths:
        print(p)
    return 0


# --- fetch / build-embedded (ssmrepro.data.cli registers them; errors go through main) --------
def cmd_fetch(args) -> int:
    from .data.fetch import fetch

    r = fetch(args.name, root=args.root, from_path=args.from_path, url=args.url,
              dvc=not args.no_dvc, keep_archives=args.keep_archive)
    print(json.dumps({"dataset": r.name, "path": str(r.path), "data_version": r.version,
                      "counts": r.counts, "dvc_file": str(r.dvc_file) if r.dvc_file else None}))
    return 0


def cmd_build_embedded(args) -> int:
    from .data.embedded import EMBEDDED, build_embedded

    for n in EMBEDDED if args.name == "all" else (args.name,):
        r = build_embedded(n, root=args.root, size=args.size, count=args.count,
                           test_count=args.test_count, seed=args.seed,
                           masks_per_bin=args.masks_per_bin, dvc=args.dvc)
        print(json.dumps({"dataset": r.name, "path": str(r.path), "data_version": r.version,
                          "counts": r.counts}))
    return 0


# --- parser --------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ssmrepro", description=(
        "Reproduce SEM-Net and EVSSM: train, evaluate under named metric protocols, report."))
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("env", help="versions, scan backends, GPU, pretrained weight files")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_env)

    s = sub.add_parser("list", help="model cards and the table rows each serves")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_list)

    s = sub.add_parser("info", help="parameters, MACs, scan FLOPs, peak memory of a card")
    s.add_argument("card")
    s.add_argument("--size", nargs=2, type=int, default=[256, 256], metavar=("H", "W"))
    s.add_argument("--scale", choices=SCALES, default="paper")
    s.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_info)

    from .data.cli import register as register_data_commands

    register_data_commands(sub)
    # as every other command: a user error is one line ``ssmrepro: error: ...`` and exit 2
    sub.choices["fetch"].set_defaults(func=cmd_fetch)
    sub.choices["build-embedded"].set_defaults(func=cmd_build_embedded)

    s = sub.add_parser("train", help="train a card on a dataset; resumes from RUN_DIR by itself")
    s.add_argument("card")
    s.add_argument("--data", required=True, help="dataset name")
    s.add_argument("--scale", choices=SCALES, default="smoke")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--run-dir", required=True)
    s.add_argument("--data-root", default="data")
    s.add_argument("--steps", type=int, help="override the recipe's number of steps")
    s.add_argument("--resolution", type=int, help="train/test image size (Table 3's 64x64 rows)")
    s.add_argument("--amp", choices=["none", "bf16"], default="none")
    s.add_argument("--deterministic", action="store_true")
    s.add_argument("--on-config-change", choices=["refuse", "archive"], default="refuse",
                   help="RUN_DIR holds a run of another config: refuse (default), or move it "
                        "aside to RUN_DIR.<old hash> and start afresh (the workflow's choice)")
    s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a recipe field, e.g. --set adv_weight=0.01")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("evaluate", help="score a run; one result file per test condition")
    s.add_argument("run_dir")
    s.add_argument("--condition", action="append", help="mask bin or test set (default: all)")
    s.add_argument("--out", help="result file (one condition) or folder")
    s.add_argument("--self-ensemble", action="store_true")
    s.add_argument("--data-root", default="data")
    s.add_argument("--limit", type=int, help="score only the first N test images")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("metrics", help="score any predictions against ground truth")
    s.add_argument("--pred", required=True)
    s.add_argument("--gt", required=True)
    s.add_argument("--mask")
    s.add_argument("--protocol", action="append", required=True, help="protocol id (repeatable)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_metrics)

    s = sub.add_parser("erf", help="effective receptive fields and activation maps")
    s.add_argument("cards", nargs="+")
    s.add_argument("--checkpoint", action="append", default=[],
                   help="weights per card, in order (omit: the card's run at --scale/--seed)")
    s.add_argument("--scale", choices=SCALES, default="smoke")
    s.add_argument("--size", type=int, default=64)
    s.add_argument("--images", type=int, default=8)
    s.add_argument("--data", default=None)
    s.add_argument("--data-root", default="data")
    s.add_argument("--out", default="results")
    s.set_defaults(func=cmd_erf)

    s = sub.add_parser("report", help="render reports/ from table definitions and result files")
    s.add_argument("--results", default="results")
    s.add_argument("--out", default="reports")
    s.add_argument("--scale", choices=SCALES, default="smoke")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("collect", help="gather a table's result files into one JSON")
    s.add_argument("table", help="e.g. semnet_t2")
    s.add_argument("--scale", choices=SCALES, default="smoke")
    s.add_argument("--seed", type=int, action="append")
    s.add_argument("--out", required=True)
    s.set_defaults(func=cmd_collect)

    s = sub.add_parser("dvc-yaml", help="regenerate dvc.yaml from the tables, cards and params.yaml")
    s.set_defaults(func=cmd_dvc_yaml)

    s = sub.add_parser("plan", help="jobs and GPU-hours to reproduce everything")
    s.add_argument("--scale", choices=SCALES, default="paper")
    s.add_argument("--seeds", type=int, default=1)
    s.add_argument("--step-seconds", type=str, default=None,
                   help="JSON file of measured seconds per step per card (default: bench results)")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_plan)

    s = sub.add_parser("import-weights", help="convert an authors' checkpoint to a card's weights")
    s.add_argument("path")
    s.add_argument("--card", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--scale", choices=SCALES, default="paper",
                   help="the card's configuration the weights are for (default: paper)")
    s.set_defaults(func=cmd_import_weights)

    s = sub.add_parser("export-weights",
                       help="a run's or file's weights in the authors' layout (EVSSM params, SEM-Net generator)")
    s.add_argument("src", help="run folder, final.pt/last.pt, or a file import-weights wrote")
    s.add_argument("--card", required=True)
    s.add_argument("--out", required=True)
    s.add_argument("--scale", choices=SCALES, default="paper",
                   help="the card's configuration the weights are for (default: paper)")
    s.set_defaults(func=cmd_export_weights)

    s = sub.add_parser("evaluate-weights",
                       help="score a weights file (default: the card's released checkpoint) without training")
    s.add_argument("card", help="an authors-* card (released weights) or any card with --weights")
    s.add_argument("--weights", help="the file (default: weights/<card>/<file the card names>)")
    s.add_argument("--data", help="test dataset (default: the first the card's checkpoint lists)")
    s.add_argument("--resolution", type=int, help="test at this size (as `train --resolution`)")
    s.add_argument("--condition", action="append", help="mask bin or test set (default: all)")
    s.add_argument("--out", help="result file (one condition) or folder (default: "
                                 "results/<scale>/<data>/<trained card>/authors/<condition>.json)")
    s.add_argument("--scale", choices=SCALES, default="paper",
                   help="the results folder (report scale) the result belongs to (default: paper)")
    s.add_argument("--model-scale", choices=SCALES, default="paper",
                   help="the card's configuration the weights are for (default: paper, as released)")
    s.add_argument("--self-ensemble", action="store_true")
    s.add_argument("--data-root", default="data")
    s.add_argument("--limit", type=int, help="score only the first N test images")
    s.set_defaults(func=cmd_evaluate_weights)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except (UserError, KeyError, ValueError, OSError) as exc:
        # OSError: a full disk, a quota, a read-only or forbidden folder, a missing file; outputs
        # are written atomically (ssmrepro.atomic, checkpoints), so nothing was half-written
        if isinstance(exc, OSError) and not isinstance(exc, (UserError, FileNotFoundError)) \
                and exc.errno not in USER_FIXABLE_ERRNOS:
            raise
        print(f"ssmrepro: error: {_one_line(exc)}", file=sys.stderr)
        return 2


def _one_line(exc: BaseException) -> str:
    msg = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
    lines = str(msg).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


if __name__ == "__main__":
    sys.exit(main())
