"""Where things live: the project root (cards, dataset recipes, table definitions) and outputs."""

from __future__ import annotations

import os
from pathlib import Path


def project_root(start: str | Path | None = None) -> Path:
    """The ssmrepro project folder: ``$SSMREPRO_ROOT``, else the nearest parent of ``start``
    (default: the current directory) holding ``models/`` and ``workflow/``, else the source
    checkout this package was installed from."""
    env = os.environ.get("SSMREPRO_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "models").is_dir() and (folder / "workflow").is_dir():
            return folder
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "models").is_dir() and (checkout / "workflow").is_dir():
        return checkout
    raise FileNotFoundError(
        f"no ssmrepro project (a folder with models/ and workflow/) at or above {here}; "
        "run from the repository or set SSMREPRO_ROOT")


def cards_dir(root: Path | None = None) -> Path:
    return (root or project_root()) / "models"


def tables_dir(root: Path | None = None) -> Path:
    return (root or project_root()) / "workflow" / "tables"


def recipes_dir(root: Path | None = None) -> Path:
    return (root or project_root()) / "datasets"
