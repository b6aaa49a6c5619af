"""`ssmrepro.data.fetch`: download (with resume), checksums, safe extraction, atomic placement,
manifest, DVC -- against a small archive served by a local HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest

from ssmrepro.data import fetch as F
from ssmrepro.data.imageio import encode_png
from ssmrepro.data.manifest import data_version, read_manifest
from ssmrepro.data.recipes import load_recipe

NAME = "toyblur"


# ------------------------------------------------------------------------------------------------
# a local HTTP server with Range support and scripted failures


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):  # noqa: N802
        srv = self.server
        srv.requests.append({"path": self.path, "range": self.headers.get("Range")})
        body = srv.files.get(self.path.split("?")[0])
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        start = 0
        rng = self.headers.get("Range")
        if rng and srv.honour_range:
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        payload = body[start:]
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("Content-Type", "application/octet-stream")
        self.end_headers()
        if srv.drop_next > 0:
            srv.drop_next -= 1
            self.wfile.write(payload[: len(payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            try:
                self.connection.shutdown(2)
            except OSError:
                pass
            return
        self.wfile.write(payload)


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True


@pytest.fixture()
def server():
    srv = _Server(("127.0.0.1", 0), _Handler)
    srv.files = {}
    srv.requests = []
    srv.drop_next = 0
    srv.honour_range = True
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    yield srv
    srv.shutdown()
    srv.server_close()


# ------------------------------------------------------------------------------------------------
# a toy deblurring dataset archive and its recipe


def _png(seed: int, size: int = 8) -> bytes:
    rng = np.random.default_rng(seed)
    return encode_png(rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def _members(n_train=3, n_test=2, salt=0):
    m = {}
    for split, n in (("train", n_train), ("test", n_test)):
        for i in range(n):
            m[f"toy/{split}/blur/{i:03d}.png"] = _png(1000 * salt + 10 * i + (split == "test"))
            m[f"toy/{split}/sharp/{i:03d}.png"] = _png(1000 * salt + 10 * i + 5 + (split == "test"))
    return m


def make_tar(members: dict[str, bytes], extra=None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            ti = tarfile.TarInfo(name)
            ti.size = len(data)
            ti.mtime = 0
            tf.addfile(ti, io.BytesIO(data))
        for ti in extra or []:
            tf.addfile(ti)
    return buf.getvalue()


def make_zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data)
    return buf.getvalue()


def write_recipe(d: Path, archive: str, sha: str | None, url: str | None, counts=(3, 2)) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    p = d / f"{NAME}.yaml"
    text = f"""
name: {NAME}
title: toy paired set
task: deblurring
kind: external
homepage: http://127.0.0.1/
licence: test data
terms: none
archives:
  - file: {archive}
    url: {json.dumps(url)}
    sha256: {json.dumps(sha)}
    checksum_note: test
manual_download: {"null" if url else json.dumps("put it somewhere")}
layout: toy
splits:
  train: {{input: "**/train/blur/{{id}}.png", target: "**/train/sharp/{{id}}.png"}}
  test: {{input: "**/test/blur/{{id}}.png", target: "**/test/sharp/{{id}}.png"}}
counts: {{train: {counts[0]}, test: {counts[1]}}}
"""
    p.write_text(text)
    return p


def sha(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _leftovers(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir() if p.name.startswith((".tmp-", ".old-")))


def _snapshot(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): sha(p.read_bytes()) for p in sorted(d.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------


def test_fetch_success_manifest_and_version(server, tmp_path):
    arc = make_tar(_members())
    server.files["/toy.tar.gz"] = arc
    rec = write_recipe(tmp_path / "recipes", "toy.tar.gz", sha(arc), server.url + "/toy.tar.gz")
    root = tmp_path / "data"
    r = F.fetch(NAME, root=root, recipe=rec, dvc=False, progress=False, backoff=0)
    d = root / NAME
    assert r.path == d and (d / "manifest.json").exists()
    man = read_manifest(d)
    assert man["counts"] == {"files": 10, "train": 3, "test": 2}
    assert man["archives"] == [{"file": "toy.tar.gz", "sha256": sha(arc), "size": len(arc)}]
    assert man["splits"]["test"][0] == {"name": "000", "input": "toy/test/blur/000.png",
                                        "target": "toy/test/sharp/000.png"}
    for e in man["files"]:
        assert sha((d / e["path"]).read_bytes()) == e["sha256"]
    assert r.version == data_version(NAME, root) == F.data_version(NAME, root)
    assert r.version == hashlib.sha256((d / "manifest.json").read_bytes()).hexdigest()[:16]
    assert _leftovers(root) == []
    assert not (root / ".cache" / NAME).exists()  # the download is not kept by default
    # the same archive again: same data version (no timestamps in the manifest)
    r2 = F.fetch(NAME, root=root, recipe=rec, dvc=False, progress=False, backoff=0)
    assert r2.version == r.version


def test_tampered_archive_is_refused_and_old_data_kept(server, tmp_path):
    good = make_tar(_members())
    server.files["/toy.tar.gz"] = good
    rec = write_recipe(tmp_path / "recipes", "toy.tar.gz", sha(good), server.url + "/toy.tar.gz")
    root = tmp_path / "data"
    v1 = F.fetch(NAME, root=root, recipe=rec, dvc=False, progress=False, backoff=0).version
    before = _snapshot(root / NAME)
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF
    server.files["/toy.tar.gz"] = bytes(bad)
    with pytest.raises(F.ChecksumError, match="checksum mismatch for toy.tar.gz"):
        F.fetch(NAME, root=root, recipe=rec, dvc=False, progress=False, backoff=0)
    assert _snapshot(root / NAME) == before
    assert data_version(NAME, root) == v1
    assert _leftovers(root) == []
    cache = root / ".cache" / NAME
    assert not any(cache.glob("*")) if cache.exists() else True  # the bad download is deleted


def test_interrupted_download_resumes_with_range(server, tmp_path):
    arc = make_tar(_members(n_train=6, n_test=4))
    server.files["/toy.tar.gz"] = arc
    server.drop_next = 1  # the first response stops half-way and closes the connection
    rec = write_recipe(tmp_path / "recipes", "toy.tar.gz", sha(arc), server.url + "/toy.tar.gz", counts=(6, 4))
    root = tmp_path / "data"
    r = F.fetch(NAME, root=root, recipe=rec, dvc=False, progress=False, backoff=0)
    assert r.counts["train"] == 6
    assert len(server.requests) == 2
    assert server.requests[0]["range"] is None
    first_part = len(arc) // 2
    assert server.requests[1]["range"] == f"bytes={first_part}-"


def test_resume_across_calls(server, tmp_path):
    arc = make_tar(_members())
    server.files["/toy.tar.gz"] = arc
    server.drop_next = 1
    rec = write_recipe(tmp_path / "recipes", "toy.tar.gz", sha(arc), server.url + "/toy.tar.gz")
    root = tmp_path / "data"
    with pytest.raises(F.DownloadError, match="resumes from there"):
        F.fetch(NAME, root=root, recipe=rec, dvc=False, progress=False, retries=0, backoff=0)
    part = root / ".cache" / NAME / "toy.tar.gz.part"
    assert part.exists() and part.stat().st_size == len(arc) // 2
    assert not (root / NAME).exists() and _leftovers(root) == []
    F.fetch(NAME, root=root, recipe=rec, dvc=False, progress=False, retries=0, backoff=0)
    assert server.requests[-1]["range"] == f"bytes={len(arc) // 2}-"
    assert (root / NAME / "manifest.json").exists() and not part.exists()


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    arc = make_tar(_members())
    server.files["/toy.tar.gz"] = arc
    server.drop_next = 1
    server.honour_range = False
    rec = write_recipe(tmp_path / "recipes", "toy.tar.gz", sha(arc), server.url + "/toy.tar.gz")
    r = F.fetch(NAME, root=tmp_path / "data", recipe=rec, dvc=False, progress=False, backoff=0)
    assert r.counts["test"] == 2


def _malicious_archives():
    good = _members()
    out = {}
    # zip: .. traversal
    out["zip_dotdot"] = ("z.zip", make_zip({**good, "toy/../../evil.txt": b"x"}))
    # zip: absolute path
    out["zip_abs"] = ("z.zip", make_zip({**good, "/tmp/ssmrepro_evil_abs.txt": b"x"}))
    # zip: symlink pointing out
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, d in good.items():
            zf.writestr(n, d)
        zi = zipfile.ZipInfo("toy/link")
        zi.external_attr = (0o120777 << 16)
        zf.writestr(zi, "../../outside")
    out["zip_symlink_out"] = ("z.zip", buf.getvalue())
    # tar: .. traversal
    out["tar_dotdot"] = ("t.tar.gz", make_tar({**good, "toy/../../evil.txt": b"x"}))
    # tar: absolute
    out["tar_abs"] = ("t.tar.gz", make_tar({**good, "/tmp/ssmrepro_evil_abs.txt": b"x"}))
    # tar: symlink out
    sl = tarfile.TarInfo("toy/link")
    sl.type = tarfile.SYMTYPE
    sl.linkname = "../../../etc"
    out["tar_symlink_out"] = ("t.tar.gz", make_tar(good, extra=[sl]))
    sl2 = tarfile.TarInfo("toy/abslink")
    sl2.type = tarfile.SYMTYPE
    sl2.linkname = "/etc/passwd"
    out["tar_symlink_abs"] = ("t.tar.gz", make_tar(good, extra=[sl2]))
    # tar: hard link out
    hl = tarfile.TarInfo("toy/hard")
    hl.type = tarfile.LNKTYPE
    hl.linkname = "../outside.txt"
    out["tar_hardlink_out"] = ("t.tar.gz", make_tar(good, extra=[hl]))
    # tar: device file
    dev = tarfile.TarInfo("toy/dev")
    dev.type = tarfile.CHRTYPE
    dev.devmajor, dev.devminor = 1, 3
    out["tar_device"] = ("t.tar.gz", make_tar(good, extra=[dev]))
    return out


@pytest.mark.parametrize("kind", sorted(_malicious_archives()))
def test_malicious_archive_refused(server, tmp_path, kind):
    fname, data = _malicious_archives()[kind]
    server.files["/" + fname] = data
    rec = write_recipe(tmp_path / "recipes", fname, sha(data), server.url + "/" + fname)
    root = tmp_path / "sub" / "data"
    with pytest.raises(F.UnsafeArchiveError, match="refused"):
        F.fetch(NAME, root=root, recipe=rec, dvc=False, progress=False, backoff=0)
    assert not (root / NAME).exists()
    assert _leftovers(root) == []
    assert not (tmp_path / "sub" / "evil.txt").exists() and not (tmp_path / "evil.txt").exists()
    assert not Path("/tmp/ssmrepro_evil_abs.txt").exists()


def test_safe_extract_keeps_in_tree_links(tmp_path):
    good = _members()
    sl = tarfile.TarInfo("toy/alias")
    sl.type = tarfile.SYMTYPE
    sl.linkname = "train/blur/000.png"
    arc = tmp_path / "a.tar.gz"
    arc.write_bytes(make_tar(good, extra=[sl]))
    F.safe_extract(arc, tmp_path / "out")
    assert (tmp_path / "out/toy/alias").is_symlink()
    assert (tmp_path / "out/toy/alias").read_bytes() == good["toy/train/blur/000.png"]


def test_from_path_and_counts_mismatch(tmp_path):
    arc = make_zip(_members())
    local = tmp_path / "downloads" / "toy.zip"
    local.parent.mkdir()
    local.write_bytes(arc)
    rec = write_recipe(tmp_path / "recipes", "toy.zip", sha(arc), None)
    root = tmp_path / "data"
    # no URL: the error names the manual step and --from
    with pytest.raises(F.FetchError, match=r"--from PATH"):
        F.fetch(NAME, root=root, recipe=rec, dvc=False, progress=False)
    r = F.fetch(NAME, root=root, from_path=local, recipe=rec, dvc=False, progress=False)
    assert r.counts == {"files": 10, "train": 3, "test": 2}
    assert local.exists()  # the user's file is never deleted
    v1 = r.version
    # a folder holding the archive works too
    r = F.fetch(NAME, root=root, from_path=local.parent, recipe=rec, dvc=False, progress=False)
    assert r.version == v1
    # wrong expected counts: refused, old data kept, nothing half-written
    rec_bad = write_recipe(tmp_path / "recipes_bad", "toy.zip", sha(arc), None, counts=(4, 2))
    with pytest.raises(F.FetchError, match="expects 4"):
        F.fetch(NAME, root=root, from_path=local, recipe=rec_bad, dvc=False, progress=False)
    assert data_version(NAME, root) == v1 and _leftovers(root) == []
    # a tampered local archive is refused and left where it is
    local.write_bytes(arc[:-10] + b"0123456789")
    with pytest.raises(F.ChecksumError):
        F.fetch(NAME, root=root, from_path=local, recipe=rec, dvc=False, progress=False)
    assert local.exists() and data_version(NAME, root) == v1


def test_replacement_is_atomic_and_recovers(tmp_path):
    root = tmp_path / "data"
    a1 = make_zip(_members(salt=1))
    a2 = make_zip(_members(salt=2))
    (tmp_path / "a1.zip").write_bytes(a1)
    (tmp_path / "a2.zip").write_bytes(a2)
    v1 = F.fetch(NAME, root=root, from_path=tmp_path / "a1.zip", dvc=False, progress=False,
                 recipe=write_recipe(tmp_path / "r1", "toy.zip", sha(a1), None)).version
    v2 = F.fetch(NAME, root=root, from_path=tmp_path / "a2.zip", dvc=False, progress=False,
                 recipe=write_recipe(tmp_path / "r2", "toy.zip", sha(a2), None)).version
    assert v1 != v2 and data_version(NAME, root) == v2 and _leftovers(root) == []
    # a fetch that died between its two renames: the old copy is put back on the next run
    os.rename(root / NAME, root / f".old-{NAME}-deadbeef")
    (root / f".tmp-{NAME}-cafebabe").mkdir()
    F.recover(root, NAME)
    assert data_version(NAME, root) == v2 and _leftovers(root) == []


def test_place_atomically_fallback(tmp_path, monkeypatch):
    monkeypatch.setattr(F, "_renameat2_exchange", lambda a, b: False)
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "x").write_text("new")
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "x").write_text("old")
    F.place_atomically(tmp_path / "new", tmp_path / "final")
    assert (tmp_path / "final" / "x").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_real_recipes_name_their_manual_step(tmp_path):
    with pytest.raises(F.FetchError, match=r"ssmrepro fetch dpdd --from PATH"):
        F.fetch("dpdd", root=tmp_path / "data", dvc=False, progress=False)
    assert load_recipe("gopro").archives[0].url.startswith("https://")


@pytest.mark.integration
def test_fetch_with_dvc(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    try:
        import dvc  # noqa: F401
    except ImportError:
        pytest.skip("dvc is not installed")
    repo = tmp_path / "repo"
    repo.mkdir()
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "DVC_NO_ANALYTICS": "1"}
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True, env=env)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True, env=env)
    arc = make_zip(_members())
    (tmp_path / "toy.zip").write_bytes(arc)
    rec = write_recipe(tmp_path / "recipes", "toy.zip", sha(arc), None)
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    r = F.fetch(NAME, root=repo / "data", from_path=tmp_path / "toy.zip", recipe=rec, dvc=True, progress=False)
    assert r.dvc_file == repo / "data" / f"{NAME}.dvc"
    text = r.dvc_file.read_text()
    assert f"path: {NAME}" in text and "md5:" in text and "nfiles: 11" in text
    assert f"/{NAME}" in (repo / "data" / ".gitignore").read_text()
    # without a DVC repository, dvc=True is a no-op
    r2 = F.fetch(NAME, root=tmp_path / "plain", from_path=tmp_path / "toy.zip", recipe=rec, dvc=True,
                 progress=False)
    assert r2.dvc_file is None


def test_fetched_mask_set_is_binned_and_used_for_testing(tmp_path):
    """A toy `nvidia_masks` (512 x 512 PNGs, white = hole) fetched from an archive: the manifest
    bins every mask by its ratio, and inpainting test sets pair image i with mask i mod N."""
    from ssmrepro.data import loaders
    from ssmrepro.data import masks as M
    from ssmrepro.data.embedded import build_embedded

    members = {}
    for i, rt in enumerate([0.05, 0.15, 0.3, 0.33, 0.45]):
        m = np.zeros((512, 512), np.uint8)
        m[: int(rt * 512)] = 255
        members[f"mask/testing_mask_dataset/{i:05d}.png"] = encode_png(m)
    arc = make_zip(members)
    (tmp_path / "test_mask.zip").write_bytes(arc)
    rdir = tmp_path / "recipes"
    rdir.mkdir()
    text = load_recipe("nvidia_masks").path.read_text().replace("counts: {test: 12000}", "counts: {test: 5}")
    (rdir / "nvidia_masks.yaml").write_text(text)
    root = tmp_path / "data"
    r = F.fetch("nvidia_masks", root=root, from_path=tmp_path / "test_mask.zip",
                recipe=rdir / "nvidia_masks.yaml", dvc=False, progress=False)
    man = read_manifest(r.path)
    assert [row["name"] for row in man["masks"]["20-40"]] == ["00002", "00003"]
    assert [row["ratio"] for row in man["masks"]["40-60"]] == [round(int(0.45 * 512) / 512, 6)]
    assert man["counts"]["masks_per_bin"]["0.01-20"] == 2
    build_embedded("embedded_inpainting", root=root, size=32, count=1, test_count=3, masks_per_bin=1)
    te = loaders.test_dataset("embedded_inpainting", "20-40", root=root, masks="nvidia")
    assert [p[1] for p in te.pairing] == ["00002", "00003", "00002"]
    assert te.pairing_record()["mask_version"] == r.version
    m0 = te[0]["mask"][0].numpy() > 0
    assert m0.shape == (32, 32) and M.in_bin(int(m0.sum()), 32 * 32, "20-40")
