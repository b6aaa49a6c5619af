"""Datasets: recipes, ``ssmrepro fetch``, the embedded sets, masks, degradations, loaders.

Importing this package registers one `DatasetHandle` per recipe in ``datasets/`` in
``ssmrepro.registry.DATASETS`` (``DATASETS.get("gopro")`` -> handle; ``handle()`` -> its recipe).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..registry import DATASETS
from .manifest import DatasetMissing, data_version
from .recipes import Recipe, RecipeError, list_recipes, load_recipe

KNOWN = (
    "celeba_hq",
    "places2",
    "gopro",
    "hide",
    "realblur_j",
    "realblur_r",
    "dpdd",
    "nvidia_masks",
    "embedded_inpainting",
    "embedded_deblur",
    "embedded_defocus",
)


@dataclass(frozen=True)
class DatasetHandle:
    """Registry entry: the recipe (loaded on demand) and the operations on the dataset."""

    name: str

    def __call__(self) -> Recipe:
        return load_recipe(self.name)

    @property
    def recipe(self) -> Recipe:
        return load_recipe(self.name)

    @property
    def task(self) -> str:
        return self.recipe.task

    @property
    def kind(self) -> str:
        return self.recipe.kind

    def path(self, root="data") -> Path:
        return Path(root) / self.name

    def exists(self, root="data") -> bool:
        return (Path(root) / self.name / "manifest.json").exists()

    def version(self, root="data") -> str:
        return data_version(self.name, root)

    def fetch(self, root="data", from_path=None, **kwargs):
        from .fetch import fetch

        return fetch(self.name, root=root, from_path=from_path, **kwargs)

    def build(self, root="data", **kwargs):
        from .embedded import build_embedded

        return build_embedded(self.name, root=root, **kwargs)

    def train(self, patch: int, root="data", seed: int = 0, **kwargs):
        from .loaders import train_dataset

        return train_dataset(self.name, None, patch, root=root, seed=seed, **kwargs)

    def test(self, condition: str, root="data", **kwargs):
        from .loaders import test_dataset

        return test_dataset(self.name, condition, root=root, **kwargs)


def _register() -> None:
    names = set(KNOWN)
    try:
        names |= set(list_recipes())
    except OSError:
        pass
    for n in sorted(names):
        if n not in DATASETS:
            DATASETS.register(n)(DatasetHandle(n))


_register()

__all__ = [
    "DATASETS",
    "DatasetHandle",
    "DatasetMissing",
    "Recipe",
    "RecipeError",
    "data_version",
    "list_recipes",
    "load_recipe",
]
