"""``ssmrepro train CARD --data DATASET --scale S --seed N --run-dir DIR``: wires a card, a dataset
and a recipe to :func:`ssmrepro.train.loop.train`. Exit codes: 0 finished, 75 preempted (saved;
rerun to resume), 1/2 errors (one line)."""

from __future__ import annotations

import sys
from pathlib import Path

import yaml


def split_dataset(spec: str) -> tuple[str, int | None]:
    """``celeba_hq@64`` -> (``celeba_hq``, 64): a dataset at a stated resolution."""
    name, _, res = spec.partition("@")
    return name, int(res) if res else None


def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        out[key] = yaml.safe_load(value)
    return out


def archive_run_dir(run_dir: Path) -> Path:
    """Move a run folder whose config no longer matches aside (nothing is deleted)."""
    old = (run_dir / "config_hash").read_text().strip() if (run_dir / "config_hash").exists() else "old"
    target = run_dir.with_name(f"{run_dir.name}.{old}")
    n = 1
    while target.exists():
        target = run_dir.with_name(f"{run_dir.name}.{old}.{n}")
        n += 1
    run_dir.rename(target)
    return target


def train_from_cli(args) -> int:
    from .cards import load_card
    from .data.loaders import train_dataset
    from .data.fetch import data_version
    from .train.loop import NonFiniteLoss, RunConfigMismatch, train
    from .train.recipes import RecipeError

    card = load_card(args.card)
    overrides = _parse_set(args.set)
    name = args.data
    if args.resolution:
        overrides.setdefault("patch", args.resolution)
        name = f"{args.data}@{args.resolution}"
    version = data_version(args.data, root=args.data_root)

    def dataset(patch, seed):
        return train_dataset(args.data, card.task, patch, root=args.data_root, seed=seed,
                             resolution=args.resolution)

    card_map = {k: v for k, v in card.__dict__.items() if k != "path"}

    def run():
        return train(card_map, lambda: card.build(args.scale), dataset, args.run_dir, args.scale,
                     args.seed, steps=args.steps, overrides=overrides, dataset_name=name,
                     data_version=version, amp=None if args.amp == "none" else args.amp,
                     deterministic=args.deterministic, progress=sys.stderr.isatty())

    try:
        try:
            result = run()
        except RunConfigMismatch:
            if args.on_config_change != "archive":
                raise
            moved = archive_run_dir(Path(args.run_dir))
            print(f"config changed: previous run kept in {moved}; starting afresh", file=sys.stderr)
            result = run()
    except RecipeError as exc:  # a bad option under the card's `train:` (or --set): name the card
        print(f"ssmrepro: error: {card.path}: train: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    except NonFiniteLoss as exc:
        print(f"ssmrepro: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 1
    except RunConfigMismatch as exc:
        print(f"ssmrepro: error: {str(exc).splitlines()[0]}", file=sys.stderr)
        return 2
    resumed = f" (resumed from step {result.resumed_from})" if result.resumed_from else ""
    print(f"{result.status}: step {result.step} of {result.iterations} in {args.run_dir}{resumed}")
    return result.exit_code
