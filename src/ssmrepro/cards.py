"""Model cards: one YAML per distinct model configuration in ``models/`` (contract 1 in
docs/architecture.md). A card names a model family, its switches, per-scale overrides, the training
recipe and the table rows it serves. ``Card.build(scale)`` returns the model.
"""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from .paths import cards_dir, project_root
from .registry import MODELS, UnknownName
from .schema import validate

SCALES = ("smoke", "mini", "paper")
#: libyaml's parser when available: same documents as ``yaml.safe_load``, about ten times faster
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

FAMILY_MODULES = {
    "sem_net": "ssmrepro.nn.sem_net",
    "evssm": "ssmrepro.nn.evssm",
    "restormer": "ssmrepro.nn.restormer",
    "nafnet": "ssmrepro.nn.nafnet",
    "fftformer": "ssmrepro.nn.fftformer",
}


def builder(family: str):
    """The registered builder of a model family (importing its module on first use)."""
    import importlib

    if family not in MODELS and family in FAMILY_MODULES:
        importlib.import_module(FAMILY_MODULES[family])
    return MODELS.get(family)


@dataclass(frozen=True)
class Card:
    name: str
    family: str
    task: str
    description: str
    switches: dict
    scales: dict = field(default_factory=dict)
    input: dict = field(default_factory=dict)
    train: dict = field(default_factory=lambda: {"recipe": "deblur_l1_fft"})
    evaluate: dict = field(default_factory=dict)
    serves: list = field(default_factory=list)
    reading: str = ""
    checkpoint: dict | None = None
    path: Path | None = None

    def switches_at(self, scale: str = "paper") -> dict:
        if scale not in SCALES:
            raise ValueError(f"scale must be one of {', '.join(SCALES)}; got {scale!r}")
        out = copy.deepcopy(self.switches)
        out.update(copy.deepcopy(self.scales.get(scale, {})))
        return out

    def build(self, scale: str = "paper", **overrides):
        switches = {**self.switches_at(scale), **overrides}
        check_switches(self, switches)
        try:
            return builder(self.family)(**switches)
        except TypeError as exc:  # builders taking **switches pass them on to the model class
            bad = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
            if not bad:
                raise
            raise ValueError(f"{self.path or self.name}: unknown switch {bad.group(1)!r} for "
                             f"family {self.family!r}") from None


def check_switches(card: Card, switches: dict) -> None:
    """A switch the family's builder does not take is named with the card file, not a TypeError."""
    import inspect

    params = inspect.signature(builder(card.family)).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(switches) - set(params))
    if unknown:
        known = ", ".join(sorted(k for k in params if not k.startswith("_")))
        raise ValueError(f"{card.path or card.name}: unknown switch {unknown[0]!r} for family "
                         f"{card.family!r}; known: {known}")


def _from_yaml(path: Path) -> Card:
    try:
        data = yaml.load(path.read_text(), Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        raise ValueError(f"{path}: not valid YAML: {exc}".splitlines()[0]) from None
    validate(data, "card", where=str(path))
    if data["name"] != path.stem:
        raise ValueError(f"{path}: card name {data['name']!r} must equal the file name {path.stem!r}")
    return Card(path=path, **data)


@lru_cache(maxsize=8)
def _load_all(folder: str) -> dict[str, Card]:
    return {p.stem: _from_yaml(p) for p in sorted(Path(folder).glob("*.yaml"))}


def all_cards(root: Path | None = None) -> dict[str, Card]:
    return dict(_load_all(str(cards_dir(root or project_root()))))


def load_card(name: str, root: Path | None = None) -> Card:
    cards = all_cards(root)
    if name not in cards:
        known = ", ".join(sorted(cards)) or "(none)"
        raise UnknownName(f"unknown card {name!r}; known: {known}")
    return cards[name]
