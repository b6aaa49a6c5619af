"""Dataset recipes: `datasets/<name>.yaml`, loaded and validated.

A recipe says where a dataset comes from (URLs, archive names, checksums, licence, manual steps),
what it looks like once extracted (layout, file counts per split) and how its splits are read
(`splits`). `load_recipe(name)` validates every key and fails with one line naming the file and
the key (``datasets/gopro.yaml: archives[0].sha256: expected 64 hex digits or null, got 'abc'``).

Split specifications (paths relative to ``data/<name>/``; a pattern may use ``*`` (one path
component), ``**`` (any depth) and named fields ``{id}`` (one component) or ``{id:**}`` (any
depth); the named fields of a file form its item name):

- inpainting images: ``{images: "data256x256/{id}.jpg", select: [names] | null,
  exclude_split: other_split | null}``
- paired deblurring data, matched on their common named fields:
  ``{input: "GOPRO_Large/test/{seq}/blur/{frame}.png", target: "GOPRO_Large/test/{seq}/sharp/{frame}.png"}``;
  with ``pair_by: sorted`` the i-th input (sorted) goes with the i-th target (DPDD names differ).
- paired data read from a list file (a pattern matching exactly one file; its paths are relative
  to the list's folder): ``{list: "**/RealBlur_J_test_list.txt", columns: [target, input]}``
- masks binned by hole ratio: ``{masks: "mask/testing_mask_dataset/{id}.png", hole: nonzero}``
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TASKS = ("inpainting", "deblurring", "masks")
KINDS = ("external", "embedded")
ARCHIVE_FORMATS = ("auto", "zip", "tar")


class RecipeError(ValueError):
    """A recipe file that is missing or does not validate (one line, names the file and key)."""


def recipes_dir() -> Path:
    """Where recipes live: $SSMREPRO_DATASETS_DIR, else the repository's `datasets/` folder
    (found from this file for an editable install, else from the working directory)."""
    env = os.environ.get("SSMREPRO_DATASETS_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:
        cand = parent / "datasets"
        if cand.is_dir() and (parent / "pyproject.toml").exists():
            return cand
    return Path.cwd() / "datasets"


def list_recipes(directory: str | os.PathLike | None = None) -> list[str]:
    d = Path(directory) if directory is not None else recipes_dir()
    return sorted(p.stem for p in d.glob("*.yaml"))


@dataclass(frozen=True)
class Archive:
    file: str
    url: str | None
    sha256: str | None
    md5: str | None
    size: int | None
    manual: bool
    checksum_note: str | None
    format: str  # zip | tar


@dataclass(frozen=True)
class Recipe:
    name: str
    title: str
    task: str
    kind: str
    homepage: str | None
    licence: str
    terms: str
    citation: str | None
    archives: tuple[Archive, ...]
    manual_download: str | None
    extract_include: tuple[str, ...]
    layout: str
    splits: dict[str, dict[str, Any]]
    counts: dict[str, int | None]
    notes: str | None
    builder: dict[str, Any] | None
    raw: dict[str, Any] = field(repr=False, compare=False)
    path: Path | None = field(default=None, compare=False)
    text_sha256: str = field(default="", compare=False)

    @property
    def needs_manual_download(self) -> bool:
        return any(a.manual or not a.url for a in self.archives)

    def command(self) -> str:
        """The command that makes this dataset appear under data/<name>/."""
        if self.kind == "embedded":
            return f"ssmrepro build-embedded {self.name}"
        if self.needs_manual_download:
            return f"ssmrepro fetch {self.name} --from PATH"
        return f"ssmrepro fetch {self.name}"


# ------------------------------------------------------------------------------------------------
# validation helpers


class _V:
    def __init__(self, where: str):
        self.where = where

    def fail(self, key: str, msg: str):
        raise RecipeError(f"{self.where}: {key}: {msg}")

    def get(self, d: dict, key: str, prefix: str = "", *, required=True, types=None, default=None):
        full = f"{prefix}{key}"
        if key not in d:
            if required:
                self.fail(full, "missing required key")
            return default
        val = d[key]
        if types is not None and not isinstance(val, types):
            names = "/".join(
                "null" if t is type(None) else t.__name__ for t in (types if isinstance(types, tuple) else (types,))
            )
            self.fail(full, f"expected {names}, got {type(val).__name__} {val!r}"[:300])
        return val


_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEX32 = re.compile(r"^[0-9a-f]{32}$")
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")

_TOP_KEYS = {
    "name", "title", "task", "kind", "homepage", "paper", "licence", "terms", "citation",
    "archives", "manual_download", "extract", "layout", "splits", "counts", "notes", "builder",
    "sources", "used_by", "split_source", "files",
}
_ARCHIVE_KEYS = {"file", "url", "sha256", "md5", "size", "manual", "checksum_note", "format", "note"}
_SPLIT_KEYS = {
    "images": {"images", "select", "exclude_split", "note"},
    "pairs": {"input", "target", "pair_by", "note"},
    "list": {"list", "columns", "note"},
    "masks": {"masks", "hole", "note"},
}


def _split_kind(spec: dict) -> str | None:
    if "images" in spec:
        return "images"
    if "list" in spec:
        return "list"
    if "input" in spec or "target" in spec:
        return "pairs"
    if "masks" in spec:
        return "masks"
    return None


def validate_recipe(data: Any, where: str, expected_name: str | None = None) -> Recipe:
    v = _V(where)
    if not isinstance(data, dict):
        raise RecipeError(f"{where}: the file must hold a mapping, got {type(data).__name__}")
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        v.fail(unknown[0], f"unknown key (known: {', '.join(sorted(_TOP_KEYS))})")
    name = v.get(data, "name", types=str)
    if not _NAME.match(name):
        v.fail("name", f"expected a lower-case identifier, got {name!r}")
    if expected_name is not None and name != expected_name:
        v.fail("name", f"must equal the file stem {expected_name!r}, got {name!r}")
    title = v.get(data, "title", types=str)
    task = v.get(data, "task", types=str)
    if task not in TASKS:
        v.fail("task", f"expected one of {', '.join(TASKS)}, got {task!r}")
    kind = v.get(data, "kind", types=str)
    if kind not in KINDS:
        v.fail("kind", f"expected one of {', '.join(KINDS)}, got {kind!r}")
    homepage = v.get(data, "homepage", types=(str, type(None)), required=kind == "external")
    licence = v.get(data, "licence", types=str)
    terms = v.get(data, "terms", types=str)
    citation = v.get(data, "citation", types=(str, type(None)), required=False)
    notes = v.get(data, "notes", types=(str, type(None)), required=False)
    layout = v.get(data, "layout", types=str)

    archives: list[Archive] = []
    manual_download = v.get(data, "manual_download", types=(str, type(None)), required=False)
    extract_include: tuple[str, ...] = ()
    builder = None
    if kind == "external":
        raw_archives = v.get(data, "archives", types=list)
        if not raw_archives:
            v.fail("archives", "an external dataset needs at least one archive")
        seen = set()
        for i, a in enumerate(raw_archives):
            pre = f"archives[{i}]."
            if not isinstance(a, dict):
                v.fail(f"archives[{i}]", f"expected a mapping, got {type(a).__name__}")
            unknown = sorted(set(a) - _ARCHIVE_KEYS)
            if unknown:
                v.fail(pre + unknown[0], f"unknown key (known: {', '.join(sorted(_ARCHIVE_KEYS))})")
            file = v.get(a, "file", pre, types=str)
            if "/" in file or file in ("", ".", ".."):
                v.fail(pre + "file", f"expected a plain file name, got {file!r}")
            if file in seen:
                v.fail(pre + "file", f"archive {file!r} is listed twice")
            seen.add(file)
            url = v.get(a, "url", pre, types=(str, type(None)))
            if url is not None and not re.match(r"^(https?|file)://", url):
                v.fail(pre + "url", f"expected an http(s):// or file:// URL or null, got {url!r}")
            sha = v.get(a, "sha256", pre, types=(str, type(None)))
            if sha is not None and not _HEX64.match(sha):
                v.fail(pre + "sha256", f"expected 64 lower-case hex digits or null, got {sha!r}")
            md5 = v.get(a, "md5", pre, types=(str, type(None)), required=False)
            if md5 is not None and not _HEX32.match(md5):
                v.fail(pre + "md5", f"expected 32 lower-case hex digits or null, got {md5!r}")
            size = v.get(a, "size", pre, types=(int, type(None)), required=False)
            manual = v.get(a, "manual", pre, types=bool, required=False, default=False)
            note = v.get(a, "checksum_note", pre, types=(str, type(None)), required=False)
            if sha is None and md5 is None and not note:
                v.fail(pre + "checksum_note", "required when no checksum is given (say why)")
            fmt = v.get(a, "format", pre, types=str, required=False, default="auto")
            if fmt not in ARCHIVE_FORMATS:
                v.fail(pre + "format", f"expected one of {', '.join(ARCHIVE_FORMATS)}, got {fmt!r}")
            if fmt == "auto":
                low = file.lower()
                if low.endswith(".zip"):
                    fmt = "zip"
                elif re.search(r"\.(tar|tar\.gz|tgz|tar\.bz2|tbz2|tar\.xz|txz)$", low):
                    fmt = "tar"
                else:
                    v.fail(pre + "format", f"cannot tell the archive format of {file!r}; set format")
            archives.append(Archive(file, url, sha, md5, size, manual, note, fmt))
        if any(a.manual or not a.url for a in archives) and not manual_download:
            v.fail("manual_download", "required when an archive has no URL or needs a login/form")
        ex = v.get(data, "extract", types=(dict, type(None)), required=False) or {}
        unknown = sorted(set(ex) - {"include"})
        if unknown:
            v.fail("extract." + unknown[0], "unknown key (known: include)")
        inc = v.get(ex, "include", "extract.", types=(list, type(None)), required=False) or []
        for i, g in enumerate(inc):
            if not isinstance(g, str) or not g:
                v.fail(f"extract.include[{i}]", f"expected a non-empty glob string, got {g!r}")
        extract_include = tuple(inc)
    else:
        if data.get("archives"):
            v.fail("archives", "an embedded dataset is built, not downloaded: no archives")
        builder = v.get(data, "builder", types=dict)
        fn = v.get(builder, "function", "builder.", types=str)
        if not fn:
            v.fail("builder.function", "must name the builder")
        v.get(builder, "defaults", "builder.", types=dict)

    splits_raw = v.get(data, "splits", types=dict)
    if not splits_raw:
        v.fail("splits", "at least one split is needed")
    splits: dict[str, dict[str, Any]] = {}
    for sname, spec in splits_raw.items():
        pre = f"splits.{sname}"
        if not isinstance(sname, str) or not _NAME.match(sname.replace("-", "_").replace(".", "_")):
            v.fail(pre, "split names are identifiers")
        if not isinstance(spec, dict):
            v.fail(pre, f"expected a mapping, got {type(spec).__name__}")
        k = _split_kind(spec)
        if k is None:
            v.fail(pre, "expected one of the keys images / input+target / list / masks")
        unknown = sorted(set(spec) - _SPLIT_KEYS[k])
        if unknown:
            v.fail(f"{pre}.{unknown[0]}", f"unknown key for a {k} split (known: {', '.join(sorted(_SPLIT_KEYS[k]))})")
        if k == "images":
            if task != "inpainting":
                v.fail(pre + ".images", f"an images split belongs to an inpainting dataset, not {task}")
            v.get(spec, "images", pre + ".", types=str)
            sel = v.get(spec, "select", pre + ".", types=(list, type(None)), required=False)
            if sel is not None and not all(isinstance(s, str) for s in sel):
                v.fail(pre + ".select", "expected a list of item names (strings)")
            if sel is not None and len(set(sel)) != len(sel):
                v.fail(pre + ".select", "names are listed twice")
            ex = v.get(spec, "exclude_split", pre + ".", types=(str, type(None)), required=False)
            if ex is not None and ex not in splits_raw:
                v.fail(pre + ".exclude_split", f"no split named {ex!r}")
        elif k == "pairs":
            if task != "deblurring":
                v.fail(pre, f"a paired split belongs to a deblurring dataset, not {task}")
            v.get(spec, "input", pre + ".", types=str)
            v.get(spec, "target", pre + ".", types=str)
            pb = v.get(spec, "pair_by", pre + ".", types=str, required=False, default="fields")
            if pb not in ("fields", "sorted"):
                v.fail(pre + ".pair_by", f"expected fields or sorted, got {pb!r}")
        elif k == "list":
            if task != "deblurring":
                v.fail(pre, f"a list split belongs to a deblurring dataset, not {task}")
            v.get(spec, "list", pre + ".", types=str)
            cols = v.get(spec, "columns", pre + ".", types=list)
            if sorted(cols) != ["input", "target"]:
                v.fail(pre + ".columns", f"expected [input, target] in some order, got {cols!r}")
        elif k == "masks":
            if task != "masks":
                v.fail(pre, f"a masks split belongs to a masks dataset, not {task}")
            v.get(spec, "masks", pre + ".", types=str)
            hole = v.get(spec, "hole", pre + ".", types=str, required=False, default="nonzero")
            if hole not in ("nonzero", "zero"):
                v.fail(pre + ".hole", f"expected nonzero or zero, got {hole!r}")
        splits[sname] = dict(spec)

    counts_raw = v.get(data, "counts", types=dict)
    counts: dict[str, int | None] = {}
    for cname, cval in counts_raw.items():
        if cname not in splits and cname not in ("files",):
            v.fail(f"counts.{cname}", f"no split named {cname!r} (splits: {', '.join(splits)})")
        if cval is not None and (not isinstance(cval, int) or isinstance(cval, bool) or cval < 0):
            v.fail(f"counts.{cname}", f"expected a non-negative integer or null, got {cval!r}")
        counts[cname] = cval
    for sname in splits:
        if sname not in counts:
            v.fail(f"counts.{sname}", "missing (give the expected number of items, or null)")

    return Recipe(
        name=name,
        title=title,
        task=task,
        kind=kind,
        homepage=homepage,
        licence=licence,
        terms=terms,
        citation=citation,
        archives=tuple(archives),
        manual_download=manual_download,
        extract_include=extract_include,
        layout=layout,
        splits=splits,
        counts=counts,
        notes=notes,
        builder=builder,
        raw=data,
    )


def load_recipe(name: str | os.PathLike, directory: str | os.PathLike | None = None) -> Recipe:
    """Load and validate ``datasets/<name>.yaml`` (or a path to a YAML file)."""
    import hashlib

    p = Path(name)
    if p.suffix in (".yaml", ".yml") and (p.exists() or p.parent != Path(".")):
        path = p
        expected = p.stem
    else:
        d = Path(directory) if directory is not None else recipes_dir()
        path = d / f"{name}.yaml"
        expected = str(name)
        if not path.exists():
            known = ", ".join(list_recipes(d)) or "(none)"
            raise RecipeError(f"no dataset recipe {str(name)!r} in {d}; known: {known}")
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RecipeError(f"{path}: cannot read recipe ({exc.strerror or exc})") from None
    try:
        data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        msg = " ".join(str(exc).split())
        raise RecipeError(f"{path}: not valid YAML ({msg})") from None
    rec = validate_recipe(data, str(path), expected_name=expected)
    object.__setattr__(rec, "path", path)
    object.__setattr__(rec, "text_sha256", hashlib.sha256(text.encode()).hexdigest())
    return rec
