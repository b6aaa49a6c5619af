"""The authors' released weights: which cards stand for them, where the files go on this machine,
and the one-line error when one is missing.

A card with a ``checkpoint`` mapping (``models/authors-*.yaml``) is a released checkpoint: its
switches are those of the trained card it stands beside (``checkpoint.card``, e.g. ``evssm``),
its ``serves`` lists the table rows whose printed numbers the file should reproduce, and
``checkpoint`` says where the authors publish it (``url``, ``source``), the file name, its
sha256 (``null`` when nobody could hash it from here) and its container format.

Files live at ``$SSMREPRO_WEIGHTS/<card>/<file>`` (default ``<project>/weights/<card>/<file>``;
``*.pth`` is git-ignored). Nothing is downloaded: the authors publish on Google Drive folders,
which a script cannot list or fetch reliably, so a missing file is an error that names the file,
the URL and the folder to put it in.

Results of released weights: ``results/<scale>/<dataset dir>/<trained card>/authors/<stem>.json``
(beside our seeds' ``seed<S>/`` folders, so the report finds them by the table row's card).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from .data.manifest import sha256_file
from .errors import UserError

WEIGHTS_ENV = "SSMREPRO_WEIGHTS"
AUTHORS_DIR = "authors"  # results/<scale>/<dataset dir>/<card>/authors/


class MissingReleasedWeights(UserError):
    """The authors' file is not on this machine; the message says where to get it and put it."""


class WeightsMismatch(UserError):
    """A file that is not the released one (sha256 differs from the card's)."""


@dataclass(frozen=True)
class Released:
    card: str  # the card of the released file (its configuration)
    for_card: str  # the trained card it stands beside: same switches, same table rows
    url: str
    file: str
    sha256: str | None
    format: str
    source: str | None = None
    trained_on: str | None = None
    evaluates: tuple[str, ...] = ()
    serves: tuple[dict, ...] = field(default_factory=tuple)
    note: str | None = None

    def default_path(self, root: Path | None = None) -> Path:
        return weights_dir(root) / self.card / self.file


def weights_dir(root: Path | None = None) -> Path:
    env = os.environ.get(WEIGHTS_ENV)
    if env:
        return Path(env)
    from .paths import project_root

    return (root or project_root()) / "weights"


def released(card) -> Released | None:
    """The released checkpoint a card describes (``None`` for a card without ``checkpoint``)."""
    ck = card.checkpoint
    if not ck:
        return None
    return Released(card=card.name, for_card=ck.get("card", card.name), url=ck["url"], file=ck["file"],
                    sha256=ck.get("sha256"), format=ck["format"], source=ck.get("source"),
                    trained_on=ck.get("trained_on"), evaluates=tuple(ck.get("evaluates", ())),
                    serves=tuple(card.serves), note=ck.get("note"))


def released_cards(root: Path | None = None) -> dict[str, Released]:
    from .cards import all_cards

    out = {}
    for name, card in all_cards(root).items():
        r = released(card)
        if r is not None:
            out[name] = r
    return out


def row_index(root: Path | None = None) -> dict[tuple[str, int, str], Released]:
    """(paper, table, row id) -> the released checkpoint that serves the row."""
    out: dict[tuple[str, int, str], Released] = {}
    for r in released_cards(root).values():
        for s in r.serves:
            if "table" in s and "row" in s:
                out[(s["paper"], int(s["table"]), str(s["row"]))] = r
    return out


def require_file(rel: Released, path: str | Path | None = None, root: Path | None = None) -> Path:
    """The weights file to use: ``path`` if given, else the default place; one line if missing."""
    target = Path(path) if path else rel.default_path(root)
    if target.is_file():
        return target
    if path:
        raise MissingReleasedWeights(
            f"{target}: no such file (the authors' {rel.file} for card {rel.card}; get it from "
            f"{rel.url})")
    raise MissingReleasedWeights(
        f"{target}: the authors' {rel.file} is not on this machine; download it from {rel.url} "
        f"and put it at {target} (or pass --weights FILE; folder: ${WEIGHTS_ENV} or "
        f"<project>/weights)")


def check_sha256(rel: Released | None, path: Path) -> str:
    """The file's sha256; an error if the card states another one."""
    digest = sha256_file(path)
    if rel is not None and rel.sha256 and digest != rel.sha256.lower():
        raise WeightsMismatch(f"{path}: sha256 {digest[:16]}... is not that of the released "
                              f"{rel.file} ({rel.sha256[:16]}...); another file, or a damaged download")
    return digest


def result_path(scale: str, data_dir: str, card: str, stem: str, root: str | Path = "results") -> Path:
    """Where the result of released weights for ``card`` (the trained card) goes."""
    return Path(root) / scale / data_dir / card / AUTHORS_DIR / f"{stem}.json"
