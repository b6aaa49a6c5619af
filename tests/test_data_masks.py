"""Masks: capsule rasterisation, free-form generator, ratio bins, NVIDIA-style binning, pairing."""

from __future__ import annotations

import numpy as np
import pytest

from ssmrepro.data import masks as M
from ssmrepro.data.imageio import encode_png


def _brute_capsules(owner, x0, y0, x1, y1, r, batch, h, w):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    ref = np.zeros((batch, h, w), bool)
    near = np.zeros((batch, h, w), bool)
    for i in range(len(owner)):
        px, py = xx - x0[i], yy - y0[i]
        dx, dy = x1[i] - x0[i], y1[i] - y0[i]
        l2 = dx * dx + dy * dy
        t = np.clip((px * dx + py * dy) / l2, 0, 1) if l2 > 0 else np.zeros_like(px)
        d = np.sqrt((px - t * dx) ** 2 + (py - t * dy) ** 2)
        ref[owner[i]] |= d <= r[i]
        near[owner[i]] |= np.abs(d - r[i]) < 1e-6
    return ref, near


def test_render_capsules_matches_distance_definition():
    rng = np.random.default_rng(7)
    n, h, w, b = 120, 23, 31, 5
    x0, x1 = rng.uniform(-6, w + 6, (2, n))
    y0, y1 = rng.uniform(-6, h + 6, (2, n))
    r = rng.uniform(0.2, 7, n)
    y1[:10] = y0[:10]  # horizontal
    x1[10:20] = x0[10:20]  # vertical
    x1[20:25], y1[20:25] = x0[20:25], y0[20:25]  # points (discs)
    owner = rng.integers(0, b, n)
    got = M.render_capsules(owner, x0, y0, x1, y1, r, b, h, w)
    ref, near = _brute_capsules(owner, x0, y0, x1, y1, r, b, h, w)
    assert got.shape == (b, h, w) and got.dtype == bool
    assert not np.any((got != ref) & ~near)


def test_bins_are_exact_half_open_intervals():
    px = 100 * 100
    assert M.in_bin(2000, px, "0.01-20") and not M.in_bin(2000, px, "20-40")  # exactly 20% -> (.., 20]
    assert M.in_bin(2001, px, "20-40")
    assert not M.in_bin(1, px, "0.01-20") and M.in_bin(2, px, "0.01-20")  # 0.01% is excluded
    assert M.in_bin(1, px, "0-10") and not M.in_bin(0, px, "0-10")
    assert M.bins_of(3500, px) == ["20-40", "30-40"]
    with pytest.raises(ValueError, match="unknown mask-ratio bin"):
        M.check_bin("10-30")


@pytest.mark.parametrize("bin_name", M.ALL_BINS)
def test_masks_in_bin_fall_in_their_bin(bin_name):
    ms = M.masks_in_bin(12, bin_name, size=64, rng=3)
    assert ms.shape == (12, 64, 64) and ms.dtype == bool
    holes = ms.reshape(12, -1).sum(1)
    assert np.all(M.in_bin(holes, 64 * 64, bin_name))
    # border-constrained masks (odd indices) keep a margin free
    m = round(M.DEFAULT_STROKES.border_fraction * 64)
    odd = ms[1::2]
    edge = np.concatenate([odd[:, : m - 1].reshape(len(odd), -1), odd[:, -m + 1 :].reshape(len(odd), -1)], 1)
    assert not edge.any()


def test_free_form_generator_is_deterministic_and_spread():
    a = M.free_form_masks(64, 128, 123)
    b = M.free_form_masks(64, 128, np.random.default_rng(123))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, M.free_form_masks(64, 128, 124))
    r = M.hole_ratio(a)
    # the NVIDIA categories are equally likely: masks land across 0-60 %
    hist = np.histogram(r, bins=[0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 1])[0]
    assert (hist[:6] > 0).sum() >= 5 and hist[6] < 16
    gen = M.FreeFormMaskGenerator(64)
    assert gen(np.random.default_rng(0)).shape == (64, 64)


def test_test_mask_set_on_disk_records_ratios(tmp_path):
    table = M.make_test_mask_set(tmp_path / "m", size=32, per_bin=3, seed=1, bins=("20-40", "0-10"))
    rows = M.read_mask_table(tmp_path / "m")
    assert sorted(rows) == ["0-10", "20-40"] and all(len(v) == 3 for v in rows.values())
    for b, rs in rows.items():
        for r in rs:
            m = M.load_mask_file(tmp_path / "m" / r["file"])
            assert int(m.sum()) == r["holes"] and M.in_bin(r["holes"], r["pixels"], b)
    assert (tmp_path / "m" / "masks.json").exists()
    again = M.make_test_mask_set(tmp_path / "m2", size=32, per_bin=3, seed=1, bins=("20-40", "0-10"))
    assert again["rows"] == table["rows"]
    assert (tmp_path / "m" / "20-40" / "00000.png").read_bytes() == (tmp_path / "m2" / "20-40" / "00000.png").read_bytes()


def test_nvidia_style_folder_is_binned_by_ratio(tmp_path):
    folder = tmp_path / "mask" / "testing_mask_dataset"
    folder.mkdir(parents=True)
    ratios = [0.05, 0.15, 0.25, 0.35, 0.45, 0.55]
    for i, rt in enumerate(ratios):
        m = np.zeros((40, 50), np.uint8)
        m.reshape(-1)[: int(rt * 2000)] = 255  # white = hole
        (folder / f"{i:05d}.png").write_bytes(encode_png(m))
    binned = M.load_nvidia_masks(tmp_path)
    assert [r["file"] for r in binned["0.01-20"]] == ["mask/testing_mask_dataset/00000.png",
                                                       "mask/testing_mask_dataset/00001.png"]
    assert [r["ratio"] for r in binned["40-60"]] == [0.45, 0.55]
    assert [len(binned[b]) for b in M.DECILE_BINS] == [1] * 6
    inv = M.bin_mask_files([f"{i:05d}.png" for i in range(6)], root=folder, hole="zero")
    assert [r["ratio"] for r in inv["40-60"]] == [0.55, 0.45]  # holes are the zeros now


def test_pairing_is_i_mod_n():
    p = M.pair_with_masks(["a", "b", "c", "d", "e"], ["m0", "m1"])
    assert p == [("a", "m0"), ("b", "m1"), ("c", "m0"), ("d", "m1"), ("e", "m0")]
    with pytest.raises(ValueError):
        M.pair_with_masks(["a"], [])
