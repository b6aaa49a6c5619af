"""Training: recipes, losses, the loop, atomic checkpoints, resume, signals, DDP.

Public entry points::

    from ssmrepro.train import train, resolve_recipe, load_checkpoint
    result = train(card, model_builder, dataset, run_dir, scale="smoke", seed=0)

See :mod:`ssmrepro.train.loop` for the run folder, exit codes and signal semantics and
:mod:`ssmrepro.train.recipes` for the recipe table. Names are imported lazily, so that
``python -m ssmrepro.train.loop`` does not import the loop twice.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "checkpoint": ["CheckpointError", "CheckpointWriteError", "CorruptCheckpoint", "UnsafeCheckpoint",
                   "load_checkpoint", "load_model_weights", "save_checkpoint"],
    "loop": ["EXIT_FAILED", "EXIT_OK", "EXIT_PREEMPTED", "NonFiniteLoss", "RunConfigMismatch",
             "TrainResult", "exit_code", "train"],
    "recipes": ["SCALES", "RecipeError", "build_run_config", "config_hash", "recipe_names",
                "resolve_recipe"],
}
_WHERE = {name: mod for mod, names in _EXPORTS.items() for name in names}
__all__ = sorted(_WHERE)


def __getattr__(name: str):
    if name in _WHERE:
        return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
