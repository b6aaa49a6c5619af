"""Bad input: missing datasets, unreadable images, conversion rules; recipe validation."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from ssmrepro.data import loaders
from ssmrepro.data.imageio import ImageReadError, encode_png, read_image, read_mask
from ssmrepro.data.manifest import DatasetMissing
from ssmrepro.data.recipes import RecipeError, list_recipes, load_recipe


# ------------------------------------------------------------------------------------------------
# missing data


@pytest.mark.parametrize("name, command", [
    ("celeba_hq", "ssmrepro fetch celeba_hq"),
    ("gopro", "ssmrepro fetch gopro"),
    ("embedded_deblur", "ssmrepro build-embedded embedded_deblur"),
])
def test_missing_dataset_names_the_command(tmp_path, name, command):
    with pytest.raises(DatasetMissing) as exc:
        loaders.test_dataset(name, "20-40" if name == "celeba_hq" else name, root=tmp_path)
    msg = str(exc.value)
    assert command in msg and "\n" not in msg and str(tmp_path / name) in msg
    with pytest.raises(DatasetMissing, match=command):
        loaders.train_dataset(name, None, 64, root=tmp_path)


def test_missing_mask_set_names_its_command(tmp_path):
    from ssmrepro.data.embedded import build_embedded

    build_embedded("embedded_inpainting", root=tmp_path, size=16, count=1, test_count=1, masks_per_bin=1)
    with pytest.raises(DatasetMissing, match="ssmrepro fetch nvidia_masks"):
        loaders.test_dataset("embedded_inpainting", "20-40", root=tmp_path, masks="nvidia")


# ------------------------------------------------------------------------------------------------
# unreadable files


def _rgb(h=6, w=7, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_truncated_png_and_jpeg_name_the_file(tmp_path):
    png = tmp_path / "cut.png"
    png.write_bytes(encode_png(_rgb(40, 40))[:60])
    buf = io.BytesIO()
    Image.fromarray(_rgb(64, 64)).save(buf, format="JPEG", quality=90)
    jpg = tmp_path / "cut.jpg"
    jpg.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"not an image at all")
    for p in (png, jpg, junk, tmp_path / "absent.png"):
        with pytest.raises(ImageReadError) as exc:
            read_image(p)
        msg = str(exc.value)
        assert str(p) in msg and "\n" not in msg
    # a truncated 16-bit PNG goes through the 16-bit decoder and fails the same way
    p16 = tmp_path / "cut16.png"
    p16.write_bytes(encode_png(np.full((20, 20, 3), 1000, np.uint16))[:-20])
    with pytest.raises(ImageReadError, match="cut16.png"):
        read_image(p16)


def test_truncated_file_in_a_dataset_names_the_file(tmp_path):
    from ssmrepro.data.embedded import build_embedded

    build_embedded("embedded_deblur", root=tmp_path, size=16, count=2, test_count=1)
    victim = tmp_path / "embedded_deblur" / "test" / "input" / "00000.png"
    victim.write_bytes(victim.read_bytes()[:50])
    ds = loaders.test_dataset("embedded_deblur", "embedded_deblur", root=tmp_path)
    with pytest.raises(ImageReadError, match=str(victim)):
        ds[0]


# ------------------------------------------------------------------------------------------------
# conversion rules


def test_grayscale_is_replicated(tmp_path):
    g = np.arange(30, dtype=np.uint8).reshape(5, 6) * 8
    p = tmp_path / "g.png"
    Image.fromarray(g, "L").save(p)
    out = read_image(p)
    assert out.shape == (5, 6, 3) and out.dtype == np.uint8
    assert all(np.array_equal(out[..., c], g) for c in range(3))
    b = tmp_path / "b.png"
    Image.fromarray(g > 100).save(b)  # bilevel
    assert set(np.unique(read_image(b))) == {0, 255}


def test_rgba_is_composited_on_white(tmp_path):
    rgba = np.array([[[200, 100, 0, 255], [200, 100, 0, 0], [200, 100, 0, 128], [10, 20, 30, 51]]], np.uint8)
    p = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(p)
    out = read_image(p).astype(int)
    a = rgba[..., 3:].astype(float) / 255
    expect = np.floor(rgba[..., :3] * a + 255 * (1 - a) + 0.5).astype(int)
    assert np.array_equal(out, expect)
    assert out[0, 1].tolist() == [255, 255, 255] and out[0, 0].tolist() == [200, 100, 0]
    la = tmp_path / "la.png"
    Image.fromarray(np.array([[[0, 0], [0, 255]]], np.uint8), "LA").save(la)
    assert read_image(la)[0].tolist() == [[255] * 3, [0] * 3]
    pal = tmp_path / "p.png"
    Image.fromarray(_rgb()).convert("P").save(pal)
    assert read_image(pal).shape == (6, 7, 3)


def test_16bit_is_rounded_to_8bit(tmp_path):
    v = np.array([[0, 128, 129, 383, 385, 386, 32896, 65535]], np.uint16)
    expect = np.floor(v / 257 + 0.5).astype(np.uint8)
    assert expect.tolist() == [[0, 0, 1, 1, 1, 2, 128, 255]]
    # 16-bit grayscale PNG
    p = tmp_path / "g16.png"
    p.write_bytes(encode_png(v))
    out = read_image(p)
    assert out.dtype == np.uint8 and np.array_equal(out[..., 0], expect) and np.array_equal(out[..., 2], expect)
    # 16-bit RGB PNG (Pillow alone would truncate to v >> 8)
    rgb16 = np.stack([v, v[:, ::-1], v], -1)
    p3 = tmp_path / "c16.png"
    p3.write_bytes(encode_png(rgb16))
    out3 = read_image(p3)
    assert np.array_equal(out3[..., 0], expect) and np.array_equal(out3[..., 1], expect[:, ::-1])
    assert np.array_equal(read_image(p3, depth=16), rgb16)
    # a 16-bit PNG written by Pillow (all filter types possible) decodes identically
    p4 = tmp_path / "pil16.png"
    Image.fromarray(np.tile(v, (9, 3)).astype(np.uint16)).save(p4)
    assert np.array_equal(read_image(p4)[..., 0], np.tile(expect, (9, 3)))


def test_png16_paeth_rows_decode(tmp_path):
    # a PNG whose rows use every filter type, built by hand
    import struct
    import zlib

    rng = np.random.default_rng(0)
    img = np.cumsum(rng.integers(0, 500, (6, 5, 3)), axis=1).astype(np.uint16)
    raw_rows = img.astype(">u2").view(np.uint8).reshape(6, -1).astype(int)
    bpp = 6
    out = []
    prev = np.zeros(raw_rows.shape[1], int)
    for y, row in enumerate(raw_rows):
        t = y % 5
        left = np.concatenate([np.zeros(bpp, int), row[:-bpp]])
        ul = np.concatenate([np.zeros(bpp, int), prev[:-bpp]])
        if t == 0:
            f = row
        elif t == 1:
            f = row - left
        elif t == 2:
            f = row - prev
        elif t == 3:
            f = row - (left + prev) // 2
        else:
            p = left + prev - ul
            pa, pb, pc = abs(p - left), abs(p - prev), abs(p - ul)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, ul))
            f = row - pred
        out.append(bytes([t]) + bytes((f % 256).astype(np.uint8)))
        prev = row

    def chunk(t, b):
        return struct.pack(">I", len(b)) + t + b + struct.pack(">I", zlib.crc32(t + b) & 0xFFFFFFFF)

    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 5, 6, 16, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"".join(out))) + chunk(b"IEND", b""))
    p = tmp_path / "f.png"
    p.write_bytes(data)
    assert np.array_equal(read_image(p, depth=16), img)


def test_other_modes_are_refused(tmp_path):
    cmyk = tmp_path / "c.jpg"
    Image.fromarray(_rgb()).convert("CMYK").save(cmyk)
    with pytest.raises(ImageReadError, match="unsupported image mode 'CMYK'"):
        read_image(cmyk)
    f = tmp_path / "f.tif"
    Image.fromarray(np.zeros((4, 4), np.float32), "F").save(f)
    with pytest.raises(ImageReadError, match="'F'"):
        read_image(f)


def test_read_mask(tmp_path):
    p = tmp_path / "m.png"
    Image.fromarray(np.array([[0, 255], [7, 0]], np.uint8)).save(p)
    assert (read_mask(p) > 0).tolist() == [[False, True], [True, False]]


def test_png_writer_is_deterministic_and_readable(tmp_path):
    img = _rgb(9, 11, 3)
    a, b = encode_png(img), encode_png(img.copy())
    assert a == b
    p = tmp_path / "x.png"
    p.write_bytes(a)
    assert np.array_equal(np.asarray(Image.open(p)), img)


# ------------------------------------------------------------------------------------------------
# recipes


def test_all_recipes_validate():
    names = list_recipes()
    expected = {"celeba_hq", "places2", "gopro", "hide", "realblur_j", "realblur_r", "dpdd",
                "nvidia_masks", "embedded_inpainting", "embedded_deblur", "embedded_defocus"}
    assert expected <= set(names)
    for n in expected:
        r = load_recipe(n)
        assert r.licence and r.terms and r.layout and r.counts
        for a in r.archives:
            assert a.sha256 or a.md5 or a.checksum_note
        if r.needs_manual_download:
            assert r.manual_download and "--from" in r.manual_download
    celeba = load_recipe("celeba_hq")
    assert len(celeba.splits["test"]["select"]) == 2000 and celeba.counts["train"] == 28000


_GOOD = """
name: bad
title: t
task: deblurring
kind: external
homepage: null
licence: l
terms: t
archives:
  - {file: a.zip, url: "https://x/a.zip", sha256: null, checksum_note: none}
layout: l
splits:
  test: {input: "in/{id}.png", target: "gt/{id}.png"}
counts: {test: 1}
"""


@pytest.mark.parametrize("old, new, key", [
    ("task: deblurring", "task: denoising", "task"),
    ("sha256: null", "sha256: abc", "archives[0].sha256"),
    ("sha256: null, checksum_note: none", "sha256: null", "archives[0].checksum_note"),
    ("counts: {test: 1}", "counts: {test: 1, val: 2}", "counts.val"),
    ("counts: {test: 1}", "counts: {}", "counts.test"),
    ("licence: l\n", "", "licence"),
    ("layout: l", "layout: l\nextra_key: 1", "extra_key"),
    ('url: "https://x/a.zip"', "url: null", "manual_download"),
    ('target: "gt/{id}.png"', 'target: "gt/{id}.png", pair_by: random', "splits.test.pair_by"),
])
def test_recipe_errors_name_the_key(tmp_path, old, new, key):
    p = tmp_path / "bad.yaml"
    assert old in _GOOD
    p.write_text(_GOOD.replace(old, new))
    with pytest.raises(RecipeError) as exc:
        load_recipe(p)
    msg = str(exc.value)
    assert f"bad.yaml: {key}:" in msg and "\n" not in msg


def test_recipe_name_must_match_and_unknown_names_are_listed(tmp_path):
    p = tmp_path / "other.yaml"
    p.write_text(_GOOD)
    with pytest.raises(RecipeError, match="name: must equal the file stem 'other'"):
        load_recipe(p)
    with pytest.raises(RecipeError, match="known: celeba_hq"):
        load_recipe("imagenet")
    (tmp_path / "bad.yaml").write_text("name: [unclosed")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(tmp_path / "bad.yaml")
