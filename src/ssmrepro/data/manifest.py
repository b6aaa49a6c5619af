"""Dataset manifests (``data/<name>/manifest.json``) and the data version.

A manifest lists every file of a dataset with its sha256 and size, the item lists of its splits
(resolved once from the recipe's split specifications), counts, and for mask sets the hole ratio
of every mask per bin. It is written canonically (sorted keys, no timestamps, no local paths), so
the same data always gives the same bytes; the **data version** is the first 16 hex digits of the
sha256 of those bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from pathlib import Path
from typing import Any, Iterable

from .recipes import Recipe

MANIFEST = "manifest.json"
SCHEMA = "ssmrepro.manifest/1"


class LayoutError(ValueError):
    """The extracted files do not match the recipe (missing pairs, wrong counts, ...)."""


class DatasetMissing(FileNotFoundError):
    """A dataset that is not on disk; the message names the command that makes it."""

    def __str__(self) -> str:
        return self.args[0]


# ------------------------------------------------------------------------------------------------
# hashing


def file_digest(path, algorithm: str = "sha256", chunk: int = 1 << 20) -> str:
    """Hex digest of a file, read in chunks (``hashlib.file_digest`` is Python 3.11+)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_file(path) -> str:
    return file_digest(path, "sha256")


def md5_file(path) -> str:
    return file_digest(path, "md5")


def canonical_json(obj: Any) -> bytes:
    return (json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=True) + "\n").encode()


# ------------------------------------------------------------------------------------------------
# patterns


def compile_pattern(pattern: str) -> tuple[re.Pattern, list[str]]:
    """``a/{seq}/blur/{frame}.png`` -> regex with named groups; ``*`` is one path component's
    worth of characters, ``**`` any depth, ``{f}`` a named component, ``{f:**}`` named, any depth."""
    fields: list[str] = []
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "{":
            j = pattern.index("}", i)
            spec = pattern[i + 1 : j]
            name, _, kind = spec.partition(":")
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name) or kind not in ("", "**"):
                raise ValueError(f"bad field {{{spec}}} in pattern {pattern!r}")
            if name in fields:
                raise ValueError(f"field {{{name}}} appears twice in pattern {pattern!r}")
            fields.append(name)
            out.append(f"(?P<{name}>{'.+' if kind else '[^/]+'})")
            i = j + 1
        elif pattern.startswith("**/", i):
            out.append("(?:.+/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif ch == "*":
            out.append("[^/]*")
            i += 1
        else:
            out.append(re.escape(ch))
            i += 1
    return re.compile("^" + "".join(out) + "$"), fields


def match_files(pattern: str, files: Iterable[str]) -> list[tuple[str, dict[str, str]]]:
    rx, _ = compile_pattern(pattern)
    res = []
    for f in files:
        m = rx.match(f)
        if m:
            res.append((f, m.groupdict()))
    return res


def _item_name(path: str, fields: dict[str, str]) -> str:
    if fields:
        return "/".join(fields.values())
    return os.path.splitext(path)[0]


# ------------------------------------------------------------------------------------------------
# layout -> splits


def list_files(folder) -> list[str]:
    """Relative POSIX paths of all regular files under ``folder`` (sorted), without the manifest."""
    folder = Path(folder)
    res = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        rel_dir = Path(dirpath).relative_to(folder)
        for fn in filenames:
            rel = (rel_dir / fn).as_posix()
            if rel == MANIFEST:
                continue
            res.append(rel)
    return sorted(res)


def resolve_splits(recipe: Recipe, folder, files: list[str] | None = None) -> dict[str, Any]:
    """Apply the recipe's split specifications to the files under ``folder``.

    Returns ``{"splits": {split: [items]}, "masks": {bin: [rows]}?}``. Raises `LayoutError` when
    pairs are incomplete or the counts differ from the recipe's."""
    from . import masks as masklib

    folder = Path(folder)
    if files is None:
        files = list_files(folder)
    splits: dict[str, list[dict]] = {}
    extra: dict[str, Any] = {}
    order = sorted(recipe.splits, key=lambda s: 1 if recipe.splits[s].get("exclude_split") else 0)
    for sname in order:
        spec = recipe.splits[sname]
        where = f"{recipe.name}: split {sname!r}"
        if "images" in spec:
            items = [
                {"name": _item_name(p, f), "image": p} for p, f in match_files(spec["images"], files)
            ]
            _check_unique(items, where)
            sel = spec.get("select")
            if sel is not None:
                by_name = {it["name"]: it for it in items}
                missing = [n for n in sel if n not in by_name]
                if missing:
                    raise LayoutError(
                        f"{where}: {len(missing)} listed images are missing (first: {missing[0]!r})"
                    )
                items = [by_name[n] for n in sel]
            ex = spec.get("exclude_split")
            if ex is not None:
                drop = {it["name"] for it in splits[ex]}
                items = [it for it in items if it["name"] not in drop]
            if sel is None:
                items.sort(key=lambda it: it["name"])
        elif "list" in spec:
            found = [p for p, _ in match_files(spec["list"], files)]
            if len(found) != 1:
                raise LayoutError(
                    f"{where}: list file {spec['list']!r} matches {len(found)} files, expected one")
            lst_rel = found[0]
            base = os.path.dirname(lst_rel)
            cols = spec["columns"]
            fileset = set(files)
            items = []
            for ln, line in enumerate((folder / lst_rel).read_text().splitlines(), 1):
                parts = line.split()
                if not parts:
                    continue
                if len(parts) < 2:
                    raise LayoutError(f"{where}: {lst_rel}:{ln}: expected two paths")
                row = {c: (f"{base}/{v}" if base else v) for c, v in zip(cols, parts[:2])}
                for k in ("input", "target"):
                    if row[k] not in fileset:
                        raise LayoutError(f"{where}: {lst_rel}:{ln}: {row[k]!r} is missing")
                items.append({"name": os.path.splitext(parts[cols.index("input")])[0], **row})
            _check_unique(items, where)
        elif "input" in spec:
            ins = match_files(spec["input"], files)
            tgs = match_files(spec["target"], files)
            if spec.get("pair_by", "fields") == "sorted":
                if len(ins) != len(tgs):
                    raise LayoutError(f"{where}: {len(ins)} inputs but {len(tgs)} targets")
                ins.sort()
                tgs.sort()
                items = [
                    {"name": _item_name(pi, fi), "input": pi, "target": pt}
                    for (pi, fi), (pt, _ft) in zip(ins, tgs)
                ]
            else:
                _, in_fields = compile_pattern(spec["input"])
                _, tg_fields = compile_pattern(spec["target"])
                common = [f for f in in_fields if f in tg_fields]
                if not common:
                    raise LayoutError(f"{where}: input and target patterns share no named field")
                targets: dict[tuple, str] = {}
                for p, f in tgs:
                    key = tuple(f[c] for c in common)
                    if key in targets:
                        raise LayoutError(f"{where}: two targets for {'/'.join(key)!r}")
                    targets[key] = p
                items = []
                for p, f in ins:
                    key = tuple(f[c] for c in common)
                    if key not in targets:
                        raise LayoutError(f"{where}: no target for input {p!r}")
                    items.append({"name": _item_name(p, f), "input": p, "target": targets[key]})
            _check_unique(items, where)
            items.sort(key=lambda it: it["name"])
        elif "masks" in spec:
            found = match_files(spec["masks"], files)
            paths = [p for p, _ in found]
            binned = masklib.bin_mask_files(paths, root=folder, hole=spec.get("hole", "nonzero"))
            items = [{"name": _item_name(p, f), "mask": p} for p, f in found]
            _check_unique(items, where)
            names = {p: it["name"] for it, (p, _) in zip(items, found)}
            extra["masks"] = {
                b: [{"name": names[r["file"]], "mask": r["file"], "holes": r["holes"],
                     "pixels": r["pixels"], "ratio": r["ratio"]} for r in rows]
                for b, rows in binned.items()
            }
            extra["mask_hole"] = spec.get("hole", "nonzero")
        else:  # pragma: no cover - validated earlier
            raise LayoutError(f"{where}: unknown split kind")
        splits[sname] = items
    for sname in recipe.splits:
        want = recipe.counts.get(sname)
        got = len(splits[sname])
        if want is not None and want != got:
            raise LayoutError(
                f"{recipe.name}: split {sname!r} has {got} items, the recipe expects {want}"
            )
    want_files = recipe.counts.get("files")
    if want_files is not None and want_files != len(files):
        raise LayoutError(f"{recipe.name}: {len(files)} files, the recipe expects {want_files}")
    return {"splits": splits, **extra}


def _check_unique(items: list[dict], where: str) -> None:
    seen = set()
    for it in items:
        if it["name"] in seen:
            raise LayoutError(f"{where}: item name {it['name']!r} occurs twice")
        seen.add(it["name"])


# ------------------------------------------------------------------------------------------------
# manifest


def build_manifest(
    name: str,
    task: str,
    kind: str,
    folder,
    resolved: dict[str, Any],
    *,
    files: list[str] | None = None,
    archives: list[dict] | None = None,
    build: dict | None = None,
    progress: bool = False,
) -> dict:
    folder = Path(folder)
    if files is None:
        files = list_files(folder)
    entries = []
    it: Iterable[str] = files
    if progress:
        from tqdm import tqdm

        it = tqdm(files, desc=f"hashing {name}", unit="file", disable=None)
    for rel in it:
        p = folder / rel
        entries.append({"path": rel, "sha256": sha256_file(p), "size": p.stat().st_size})
    counts = {"files": len(files)}
    for s, items in resolved["splits"].items():
        counts[s] = len(items)
    man: dict[str, Any] = {
        "schema": SCHEMA,
        "name": name,
        "task": task,
        "kind": kind,
        "counts": counts,
        "splits": resolved["splits"],
        "files": entries,
    }
    for k, v in resolved.items():
        if k != "splits":
            man[k] = v
    if "masks" in resolved:
        counts["masks_per_bin"] = {b: len(rows) for b, rows in resolved["masks"].items()}
    if archives is not None:
        man["archives"] = archives
    if build is not None:
        man["build"] = build
    return man


def write_manifest(folder, manifest: dict) -> str:
    """Write ``manifest.json`` (canonical bytes) and return the data version."""
    data = canonical_json(manifest)
    tmp = Path(folder) / (MANIFEST + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, Path(folder) / MANIFEST)
    return hashlib.sha256(data).hexdigest()[:16]


def read_manifest(folder) -> dict:
    return json.loads((Path(folder) / MANIFEST).read_text())


def manifest_version(folder) -> str:
    return hashlib.sha256((Path(folder) / MANIFEST).read_bytes()).hexdigest()[:16]


def missing_message(name: str, root) -> str:
    """One line: the dataset is missing, and the command that makes it."""
    from .recipes import RecipeError, load_recipe

    try:
        cmd = load_recipe(name).command()
    except RecipeError:
        cmd = f"ssmrepro fetch {name}"
    root_opt = "" if str(root) == "data" else f" --root {root}"
    return f"dataset {name!r} is not in {Path(root) / name} (no {MANIFEST}); run `{cmd}{root_opt}`"


def dataset_dir(name: str, root="data") -> Path:
    """``root/name`` if it holds a manifest, else `DatasetMissing` naming the command."""
    d = Path(root) / name
    if not (d / MANIFEST).exists():
        raise DatasetMissing(missing_message(name, root))
    return d


def data_version(name: str, root="data") -> str:
    """The data version of ``root/name``: first 16 hex digits of the manifest's sha256."""
    return manifest_version(dataset_dir(name, root))
