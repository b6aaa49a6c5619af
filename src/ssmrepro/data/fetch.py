"""``ssmrepro fetch <name>``: download, verify, extract safely, manifest, version with DVC.

Steps, each of which leaves the previous ``data/<name>/`` untouched when it fails:

1. the archives: downloaded into ``data/.cache/<name>/<file>`` through ``<file>.part`` (resumed
   with an HTTP ``Range`` request after an interrupted transfer, a progress bar with tqdm), or
   taken from ``from_path`` (an archive downloaded by hand, or a folder holding the recipe's
   archives);
2. checksums: sha256 (or md5 where only that is published) against the recipe; a mismatch is
   refused (and a downloaded file deleted, so that the next attempt starts afresh);
3. extraction into ``data/.tmp-<name>-*/``, refusing the whole archive if any member has an
   absolute path, a ``..`` component, is a symlink or hard link pointing outside the target, or is
   a device/FIFO (members are checked before they are written, links are created last);
4. the recipe's splits are resolved and the file counts checked; ``manifest.json`` is written;
5. the folder is renamed into place atomically (an exchange with the old folder where the kernel
   offers it, else two renames with recovery on the next run); the old data are removed only then;
6. ``dvc add data/<name>`` when the root lies in a DVC repository (``dvc=False`` skips it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import fnmatch
import http.client
import os
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import time
import uuid
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Sequence
from urllib.error import HTTPError, URLError
from urllib.request import Request, urlopen

from .manifest import (
    LayoutError,
    build_manifest,
    list_files,
    manifest_version,
    md5_file,
    resolve_splits,
    sha256_file,
    write_manifest,
)
from .manifest import data_version as data_version  # re-exported
from .recipes import Recipe, load_recipe


try:  # the command line prints UserErrors as one line
    from ..errors import UserError as _UserError
except ImportError:  # pragma: no cover
    _UserError = RuntimeError


class FetchError(_UserError):
    """Fetching failed; the message is one line and the previous data are untouched."""


class DownloadError(FetchError):
    pass


class ChecksumError(FetchError):
    pass


class UnsafeArchiveError(FetchError):
    pass


class DvcError(FetchError):
    pass


@dataclass(frozen=True)
class FetchResult:
    name: str
    path: Path
    version: str
    counts: dict
    dvc_file: Path | None


# ------------------------------------------------------------------------------------------------
# download


_RETRYABLE = (URLError, http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError, OSError)


def download(
    url: str,
    dest,
    *,
    retries: int = 3,
    timeout: float = 60.0,
    progress: bool = True,
    backoff: float = 1.0,
    chunk: int = 1 << 20,
) -> Path:
    """Download ``url`` to ``dest`` through ``dest.part``; resume with Range after a broken
    transfer (within this call, up to ``retries`` more attempts, and across calls)."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    last_exc: BaseException | None = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * (2 ** (attempt - 1)))
        try:
            _download_once(url, part, timeout, progress, chunk)
            os.replace(part, dest)
            return dest
        except HTTPError as exc:
            if exc.code in (408, 429) or exc.code >= 500:
                last_exc = exc
                continue
            raise DownloadError(f"download of {url} failed: HTTP {exc.code} {exc.reason}") from None
        except DownloadError:
            raise
        except _RETRYABLE as exc:
            last_exc = exc
            continue
    have = part.stat().st_size if part.exists() else 0
    why = " ".join(str(last_exc).split()) or type(last_exc).__name__
    raise DownloadError(
        f"download of {url} failed after {retries + 1} attempts ({why}); {have} bytes kept in "
        f"{part}, the next attempt resumes from there"
    )


def _download_once(url: str, part: Path, timeout: float, progress: bool, chunk: int) -> None:
    offset = part.stat().st_size if part.exists() else 0
    headers = {"User-Agent": "ssmrepro-fetch/1"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    req = Request(url, headers=headers)
    try:
        resp = urlopen(req, timeout=timeout)
    except HTTPError as exc:
        if exc.code == 416 and offset:
            # nothing left to send: the .part file is already complete (or longer than the file)
            total = _content_range_total(exc.headers.get("Content-Range", ""))
            if total is not None and total == offset:
                return
            part.unlink()
            raise ConnectionError("range not satisfiable; restarting from zero") from None
        raise
    with resp:
        status = getattr(resp, "status", 200) or 200
        mode = "ab"
        if offset and status == 206:
            start = _content_range_start(resp.headers.get("Content-Range", ""))
            if start != offset:
                mode, offset = "wb", 0
                resp.close()
                part.unlink()
                raise ConnectionError("server resumed at the wrong offset; restarting")
        elif offset:
            mode, offset = "wb", 0  # server ignored Range: start again
        length = resp.headers.get("Content-Length")
        remaining = int(length) if length is not None else None
        total = offset + remaining if remaining is not None else None
        from tqdm import tqdm

        bar = tqdm(total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                   desc=part.name[:-5], disable=None if progress else True, leave=False)
        got = 0
        try:
            with open(part, mode) as fh:
                while True:
                    b = resp.read(chunk)
                    if not b:
                        break
                    fh.write(b)
                    got += len(b)
                    bar.update(len(b))
        finally:
            bar.close()
        if remaining is not None and got < remaining:
            raise http.client.IncompleteRead(b"", remaining - got)


def _content_range_start(value: str) -> int | None:
    # "bytes 100-199/200"
    try:
        return int(value.split()[1].split("-")[0])
    except (IndexError, ValueError):
        return None


def _content_range_total(value: str) -> int | None:
    try:
        return int(value.rsplit("/", 1)[1])
    except (IndexError, ValueError):
        return None


# ------------------------------------------------------------------------------------------------
# checksums


def verify_archive(path: Path, sha256: str | None, md5: str | None, label: str) -> str:
    """Return the file's sha256; raise `ChecksumError` if it differs from the expected one."""
    actual = sha256_file(path)
    if sha256 is not None and actual != sha256:
        raise ChecksumError(
            f"checksum mismatch for {label}: sha256 {actual}, the recipe expects {sha256}; refused"
        )
    if sha256 is None and md5 is not None:
        got = md5_file(path)
        if got != md5:
            raise ChecksumError(f"checksum mismatch for {label}: md5 {got}, the recipe expects {md5}; refused")
    return actual


# ------------------------------------------------------------------------------------------------
# safe extraction

_JUNK_PREFIXES = ("__MACOSX/",)
_JUNK_NAMES = (".DS_Store",)


def _safe_name(name: str, archive: Path) -> str:
    n = name.replace("\\", "/")
    if "\x00" in n:
        raise UnsafeArchiveError(f"{archive.name}: member name with a NUL byte refused")
    if n.startswith("/") or (len(n) > 1 and n[1] == ":" and n[0].isalpha()):
        raise UnsafeArchiveError(f"{archive.name}: member {name!r} has an absolute path; refused")
    parts = [p for p in n.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise UnsafeArchiveError(f"{archive.name}: member {name!r} leaves the target folder (..); refused")
    return "/".join(parts)


def _link_target_inside(member: str, target: str, archive: Path) -> str:
    """Normalised archive-relative path a symlink at ``member`` pointing to ``target`` resolves to."""
    if target.startswith("/") or target.startswith("\\") or (len(target) > 1 and target[1] == ":"):
        raise UnsafeArchiveError(f"{archive.name}: link {member!r} -> {target!r} points outside; refused")
    parts: list[str] = list(PurePosixPath(member).parent.parts)
    for p in target.replace("\\", "/").split("/"):
        if p in ("", "."):
            continue
        if p == "..":
            if not parts:
                raise UnsafeArchiveError(
                    f"{archive.name}: link {member!r} -> {target!r} points outside; refused")
            parts.pop()
        else:
            parts.append(p)
    return "/".join(parts)


def _wanted(name: str, include: Sequence[str]) -> bool:
    if name.startswith(_JUNK_PREFIXES) or PurePosixPath(name).name in _JUNK_NAMES:
        return False
    if not include:
        return True
    return any(fnmatch.fnmatchcase(name, g) or name.startswith(g.rstrip("*").rstrip("/") + "/") for g in include)


def _write_stream(src, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as out:
        shutil.copyfileobj(src, out, 1 << 20)
    os.chmod(dest, 0o644)


def _ensure_no_symlink_parent(dest_root: Path, rel: str, archive: Path) -> None:
    p = dest_root
    for part in PurePosixPath(rel).parts[:-1]:
        p = p / part
        if p.is_symlink():
            raise UnsafeArchiveError(f"{archive.name}: member {rel!r} is written through a link; refused")


def safe_extract(archive, dest, fmt: str | None = None, include: Sequence[str] = ()) -> int:
    """Extract ``archive`` (zip or tar, any compression) into the folder ``dest`` safely.

    Refused (`UnsafeArchiveError`, nothing should be used from ``dest`` then): absolute member
    paths, ``..`` components, symlinks/hard links resolving outside ``dest``, device files and
    FIFOs. Links are created after all regular files. Returns the number of files written."""
    archive = Path(archive)
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    if fmt is None:
        fmt = "zip" if zipfile.is_zipfile(archive) else "tar"
    try:
        if fmt == "zip":
            return _extract_zip(archive, dest, include)
        return _extract_tar(archive, dest, include)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, UnsafeArchiveError):
            raise
        why = " ".join(str(exc).split())
        raise FetchError(f"{archive.name}: cannot extract ({why})") from None


def _extract_zip(archive: Path, dest: Path, include: Sequence[str]) -> int:
    n = 0
    links: list[tuple[str, str]] = []
    with zipfile.ZipFile(archive) as zf:
        infos = zf.infolist()
        # check every member before writing anything
        plan = []
        for info in infos:
            name = _safe_name(info.filename, archive)
            if not name:
                continue
            mode = (info.external_attr >> 16) & 0xFFFF
            ftype = stat.S_IFMT(mode)
            if ftype and ftype not in (stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK):
                raise UnsafeArchiveError(f"{archive.name}: member {info.filename!r} is a device or FIFO; refused")
            if ftype == stat.S_IFLNK:
                target = zf.read(info).decode("utf-8", "surrogateescape")
                _link_target_inside(name, target, archive)
                plan.append(("link", info, name, target))
            elif info.is_dir():
                plan.append(("dir", info, name, None))
            else:
                plan.append(("file", info, name, None))
        for kind, info, name, target in plan:
            if not _wanted(name, include):
                continue
            out = dest / name
            if kind == "dir":
                out.mkdir(parents=True, exist_ok=True)
            elif kind == "link":
                links.append((name, target))
            else:
                _ensure_no_symlink_parent(dest, name, archive)
                with zf.open(info) as src:
                    _write_stream(src, out)
                n += 1
    for name, target in links:
        out = dest / name
        out.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, out)
    return n


def _extract_tar(archive: Path, dest: Path, include: Sequence[str]) -> int:
    n = 0
    links: list[tuple[str, str]] = []
    hardlinks: list[tuple[str, str]] = []
    with tarfile.open(archive, mode="r:*") as tf:
        for m in tf:  # one streaming pass; a refusal aborts (the caller discards ``dest``)
            name = _safe_name(m.name, archive)
            if not name:
                continue
            if m.ischr() or m.isblk() or m.isfifo() or m.isdev():
                raise UnsafeArchiveError(f"{archive.name}: member {m.name!r} is a device or FIFO; refused")
            if m.issym():
                _link_target_inside(name, m.linkname, archive)
                if _wanted(name, include):
                    links.append((name, m.linkname))
                continue
            if m.islnk():
                target = _safe_name(m.linkname, archive)
                if _wanted(name, include):
                    hardlinks.append((name, target))
                continue
            if not _wanted(name, include):
                continue
            out = dest / name
            if m.isdir():
                out.mkdir(parents=True, exist_ok=True)
            elif m.isreg():
                _ensure_no_symlink_parent(dest, name, archive)
                src = tf.extractfile(m)
                if src is None:
                    raise UnsafeArchiveError(f"{archive.name}: member {m.name!r} cannot be read; refused")
                with src:
                    _write_stream(src, out)
                n += 1
            else:
                raise UnsafeArchiveError(f"{archive.name}: member {m.name!r} has an unsupported type; refused")
    for name, target in hardlinks:
        src = dest / target
        if not src.is_file() or src.is_symlink():
            raise UnsafeArchiveError(f"{archive.name}: hard link {name!r} -> {target!r} has no file inside; refused")
        out = dest / name
        _ensure_no_symlink_parent(dest, name, archive)
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, out)
        n += 1
    for name, target in links:
        out = dest / name
        out.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(target, out)
    return n


# ------------------------------------------------------------------------------------------------
# atomic placement


def _renameat2_exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux renameat2 RENAME_EXCHANGE); False if unavailable."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    AT_FDCWD, RENAME_EXCHANGE = -100, 2
    r = fn(AT_FDCWD, os.fsencode(a), AT_FDCWD, os.fsencode(b), RENAME_EXCHANGE)
    return r == 0


def place_atomically(new: Path, final: Path) -> None:
    """Move folder ``new`` to ``final``; an existing ``final`` is replaced only once ``new`` is in
    place (atomic exchange where available; otherwise rename the old one aside first, restore it
    on failure, and `recover` puts it back if the process died in between)."""
    if not final.exists():
        os.rename(new, final)
        return
    if _renameat2_exchange(new, final):
        shutil.rmtree(new)  # now holds the old data
        return
    old = final.with_name(f".old-{final.name}-{uuid.uuid4().hex[:8]}")
    os.rename(final, old)
    try:
        os.rename(new, final)
    except BaseException:
        os.rename(old, final)
        raise
    shutil.rmtree(old, ignore_errors=True)


def recover(root: Path, name: str) -> None:
    """Clean up after a fetch that died: restore an old copy set aside, drop temporary folders."""
    final = root / name
    olds = sorted(root.glob(f".old-{name}-*"), key=lambda p: p.stat().st_mtime)
    if not final.exists() and olds:
        os.rename(olds[-1], final)
        olds = olds[:-1]
    for p in olds:
        shutil.rmtree(p, ignore_errors=True)
    for p in root.glob(f".tmp-{name}-*"):
        shutil.rmtree(p, ignore_errors=True)


# ------------------------------------------------------------------------------------------------
# DVC


def find_dvc_repo(path: Path) -> Path | None:
    p = path.resolve()
    for cand in (p, *p.parents):
        if (cand / ".dvc").is_dir():
            return cand
    return None


def dvc_add(target: Path) -> Path | None:
    """``dvc add target`` in the DVC repository holding it; returns the .dvc file (None: no repo)."""
    repo = find_dvc_repo(target.parent)
    if repo is None:
        return None
    rel = os.path.relpath(target.resolve(), repo)
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "add", "--quiet", rel],
        cwd=repo, capture_output=True, text=True,
    )
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("ERROR")]
        why = (errors or lines or [f"exit code {proc.returncode}"])[0]
        raise DvcError(f"data are in place in {target}, but `dvc add {rel}` failed: {why}")
    return target.with_name(target.name + ".dvc")


# ------------------------------------------------------------------------------------------------
# fetch


def _pick_from_path(rec: Recipe, from_path: Path) -> dict[str, Path]:
    if not from_path.exists():
        raise FetchError(f"{rec.name}: --from {from_path} does not exist")
    if from_path.is_dir():
        found = {}
        missing = []
        for a in rec.archives:
            p = from_path / a.file
            if p.is_file():
                found[a.file] = p
            else:
                missing.append(a.file)
        if missing:
            raise FetchError(f"{rec.name}: {from_path} lacks {', '.join(missing)} (the recipe's archives)")
        return found
    if len(rec.archives) == 1:
        return {rec.archives[0].file: from_path}
    names = [a.file for a in rec.archives]
    if from_path.name in names:
        raise FetchError(
            f"{rec.name}: the recipe needs {len(names)} archives ({', '.join(names)}); "
            f"pass the folder holding them with --from")
    raise FetchError(f"{rec.name}: --from {from_path}: expected one of {', '.join(names)} or a folder holding them")


def fetch(
    name: str,
    root="data",
    from_path=None,
    *,
    url: str | None = None,
    urls: dict[str, str] | None = None,
    dvc: bool = True,
    recipe: Recipe | str | os.PathLike | None = None,
    keep_archives: bool = False,
    retries: int = 3,
    backoff: float = 1.0,
    progress: bool = True,
) -> FetchResult:
    """Fetch dataset ``name`` into ``root/name`` (see the module docstring). ``url`` overrides
    the URL of a single-archive recipe, ``urls`` maps archive file names to URLs; ``recipe``
    replaces ``datasets/<name>.yaml`` (a `Recipe` or a path)."""
    if recipe is None:
        rec = load_recipe(name)
    elif isinstance(recipe, Recipe):
        rec = recipe
    else:
        rec = load_recipe(recipe)
    if rec.name != name:
        raise FetchError(f"recipe {rec.name!r} given for dataset {name!r}")
    root = Path(root)
    if rec.kind == "embedded":
        from .embedded import build_embedded

        return build_embedded(name, root=root, dvc=dvc)
    root.mkdir(parents=True, exist_ok=True)
    recover(root, name)
    overrides = dict(urls or {})
    if url is not None:
        if len(rec.archives) != 1:
            raise FetchError(f"{name}: url= needs a single-archive recipe; use urls={{file: url}}")
        overrides[rec.archives[0].file] = url

    cache = root / ".cache" / name
    local: dict[str, Path] = {}
    downloaded: list[Path] = []
    if from_path is not None:
        local = _pick_from_path(rec, Path(from_path))
    else:
        for a in rec.archives:
            u = overrides.get(a.file) or a.url
            if u is None or (a.manual and a.file not in overrides):
                steps = " ".join((rec.manual_download or "").split())
                raise FetchError(
                    f"{name}: {a.file} must be downloaded by hand ({steps}); then run "
                    f"`ssmrepro fetch {name} --from PATH`")
            dest = cache / a.file
            if not dest.exists():
                download(u, dest, retries=retries, progress=progress, backoff=backoff)
                downloaded.append(dest)
            local[a.file] = dest

    archives_meta = []
    for a in rec.archives:
        p = local[a.file]
        try:
            sha = verify_archive(p, a.sha256, a.md5, a.file)
        except ChecksumError:
            if p.parent == cache:
                p.unlink(missing_ok=True)  # a bad download is not kept
            raise
        if a.sha256 is None and a.md5 is None:
            print(f"warning: {name}: no published checksum for {a.file}; recorded sha256 {sha}",
                  file=sys.stderr)
        archives_meta.append({"file": a.file, "sha256": sha, "size": p.stat().st_size})

    tmp = root / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
    try:
        tmp.mkdir()
        for a in rec.archives:
            safe_extract(local[a.file], tmp, a.format, rec.extract_include)
        files = list_files(tmp)
        resolved = resolve_splits(rec, tmp, files)
        man = build_manifest(name, rec.task, rec.kind, tmp, resolved, files=files,
                             archives=archives_meta, progress=progress and len(files) > 2000)
        write_manifest(tmp, man)
        place_atomically(tmp, root / name)
    except LayoutError as exc:
        raise FetchError(f"{exc}; the data were not changed") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)

    if not keep_archives:
        for p in local.values():
            if p.parent == cache:
                p.unlink(missing_ok=True)
        if cache.exists() and not any(cache.iterdir()):
            cache.rmdir()
    final = root / name
    dvc_file = dvc_add(final) if dvc else None
    counts = dict(man["counts"])
    return FetchResult(name, final, manifest_version(final), counts, dvc_file)
