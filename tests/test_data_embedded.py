"""The embedded datasets: byte-identical builds, masks in their bins, recorded pairing, loaders."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch

from ssmrepro.data import loaders
from ssmrepro.data import masks as M
from ssmrepro.data.embedded import EMBEDDED, build_embedded
from ssmrepro.data.imageio import read_image
from ssmrepro.data.manifest import data_version, read_manifest
from ssmrepro.registry import DATASETS

SMALL = dict(size=32, count=6, test_count=4, masks_per_bin=3)


def _hashes(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    root = tmp_path_factory.mktemp("emb")
    for n in EMBEDDED:
        build_embedded(n, root=root, **SMALL)
    return root


@pytest.mark.parametrize("name", EMBEDDED)
def test_builds_are_byte_identical(built, tmp_path, name):
    r = build_embedded(name, root=tmp_path, **SMALL)
    assert _hashes(tmp_path / name) == _hashes(built / name)
    assert r.version == data_version(name, built)
    # another seed gives other data
    other = build_embedded(name, root=tmp_path / "s1", seed=1, **SMALL)
    assert other.version != r.version


def test_default_build_counts(tmp_path):
    r = build_embedded("embedded_deblur", root=tmp_path)
    assert r.counts == {"files": 64, "train": 24, "test": 8}
    img = read_image(tmp_path / "embedded_deblur" / "train" / "input" / "00000.png")
    assert img.shape == (64, 64, 3)


def test_inpainting_masks_in_bins_and_pairing_recorded(built):
    d = built / "embedded_inpainting"
    man = read_manifest(d)
    assert sorted(man["masks"]) == sorted(M.ALL_BINS)
    tests = [it["name"] for it in man["splits"]["test"]]
    for b, rows in man["masks"].items():
        assert len(rows) == SMALL["masks_per_bin"]
        for r in rows:
            m = read_image(d / r["mask"])[..., 0] > 0
            assert int(m.sum()) == r["holes"] and r["pixels"] == 32 * 32
            assert M.in_bin(r["holes"], r["pixels"], b)
        names = [r["name"] for r in rows]
        assert man["pairing"][b] == [[im, names[i % len(names)]] for i, im in enumerate(tests)]
    # the CSV next to the masks says the same
    table = M.read_mask_table(d / "test" / "masks")
    assert {b: [r["holes"] for r in rs] for b, rs in table.items()} == \
        {b: [r["holes"] for r in rs] for b, rs in man["masks"].items()}


def test_blurred_differs_from_sharp(built):
    for name in ("embedded_deblur", "embedded_defocus"):
        d = built / name
        diffs = []
        for it in read_manifest(d)["splits"]["train"]:
            a = read_image(d / it["input"]).astype(float)
            b = read_image(d / it["target"]).astype(float)
            diffs.append(np.abs(a - b).mean())
        assert np.mean(diffs) > 1.0


def test_loaders_on_embedded_sets(built):
    tr = loaders.train_dataset("embedded_inpainting", "inpainting", 32, root=built, seed=5)
    assert len(tr) == 6
    it = tr[2]
    assert set(it) == {"image", "mask", "name"}
    assert it["image"].shape == (3, 32, 32) and it["image"].dtype == torch.float32
    assert it["mask"].shape == (1, 32, 32) and set(torch.unique(it["mask"]).tolist()) <= {0.0, 1.0}
    assert 0.0 <= float(it["image"].min()) and float(it["image"].max()) <= 1.0
    # same seed/epoch/index -> same item; another epoch -> another mask
    again = loaders.train_dataset("embedded_inpainting", "inpainting", 32, root=built, seed=5)[2]
    assert torch.equal(it["mask"], again["mask"])
    tr.set_epoch(1)
    assert not torch.equal(tr[2]["mask"], it["mask"])

    te = loaders.test_dataset("embedded_inpainting", "40-60", root=built)
    assert len(te) == 4 and te.pairing[3][1] == "40-60/00000"
    x = te[1]
    ratio = float(x["mask"].mean())
    assert 0.4 < ratio <= 0.6
    assert te.pairing_record()["mask_source"] == "embedded_inpainting"
    gen = loaders.test_dataset("embedded_inpainting", "20-40", root=built, masks="generated")
    g1, g2 = gen[0]["mask"], gen[0]["mask"]
    assert torch.equal(g1, g2) and 0.2 < float(g1.mean()) <= 0.4

    # a dataset "at a stated resolution" (celeba_hq@64-style): inpainting images and masks resized
    small = loaders.test_dataset("embedded_inpainting", "20-40", root=built, resolution=16)
    assert small[0]["image"].shape == (3, 16, 16) and small[0]["mask"].shape == (1, 16, 16)
    assert small.pairing_record()["mask_resize"] == "nearest"
    assert loaders.train_dataset("embedded_inpainting", "inpainting", 256, root=built,
                                 resolution=16)[0]["image"].shape == (3, 16, 16)
    # deblurring pairs are centre-cropped (never resampled)
    crop = loaders.test_dataset("embedded_deblur", "embedded_deblur", root=built, resolution=20)[0]
    full = loaders.test_dataset("embedded_deblur", "embedded_deblur", root=built)[0]
    assert torch.equal(crop["input"], full["input"][:, 6:26, 6:26])

    pt = loaders.train_dataset("embedded_deblur", "deblurring", 16, root=built, seed=0)
    it = pt[0]
    assert set(it) == {"input", "target", "name"} and it["input"].shape == (3, 16, 16)
    tt = loaders.test_dataset("embedded_defocus", "embedded_defocus", root=built)
    assert tt[0]["input"].shape == (3, 32, 32) and len(tt) == 4
    with pytest.raises(ValueError, match="smaller than the patch"):
        loaders.train_dataset("embedded_deblur", "deblurring", 64, root=built)[0]
    with pytest.raises(ValueError, match="not inpainting"):
        loaders.train_dataset("embedded_deblur", "inpainting", 16, root=built)
    with pytest.raises(ValueError, match="test condition"):
        loaders.test_dataset("embedded_deblur", "gopro", root=built)


def test_paired_crop_is_aligned(built):
    pt = loaders.train_dataset("embedded_defocus", "deblurring", 8, root=built, seed=3)
    d = built / "embedded_defocus"
    item = read_manifest(d)["splits"]["train"][0]
    full_t = torch.from_numpy(read_image(d / item["target"])).permute(2, 0, 1).float() / 255
    x = pt[0]
    # the target patch occurs in some flip/transposition of the full target at the same place
    # as the input patch does in the full input
    full_i = torch.from_numpy(read_image(d / item["input"])).permute(2, 0, 1).float() / 255
    found = False
    for a_t, a_i in ((full_t, full_i), (full_t.transpose(1, 2), full_i.transpose(1, 2))):
        for ft, fi in ((a_t, a_i), (a_t.flip(2), a_i.flip(2)), (a_t.flip(1), a_i.flip(1)),
                       (a_t.flip(1).flip(2), a_i.flip(1).flip(2))):
            for top in range(ft.shape[1] - 7):
                for left in range(ft.shape[2] - 7):
                    if torch.equal(ft[:, top:top + 8, left:left + 8], x["target"]):
                        found = found or torch.equal(fi[:, top:top + 8, left:left + 8], x["input"])
    assert found


def test_registry_entries():
    import ssmrepro.data  # noqa: F401  (registers the datasets)

    for n in ("celeba_hq", "places2", "gopro", "hide", "realblur_j", "realblur_r", "dpdd",
              "nvidia_masks", *EMBEDDED):
        h = DATASETS.get(n)
        assert h.name == n and h().name == n
    assert DATASETS.get("gopro").task == "deblurring"
    with pytest.raises(KeyError, match="known: celeba_hq"):
        DATASETS.get("imagenet")
