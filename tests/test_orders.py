"""Scan orders: exact inverses, the cross-scan, the snake orders of SEM-Net's SBDM."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ssmrepro.ssm.orders import (
    CROSS_SCAN,
    ORDER_NAMES,
    cross_merge,
    cross_scan,
    from_sequence,
    inverse_permutation,
    permutation,
    to_sequence,
)

sizes = st.integers(1, 12)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(ORDER_NAMES), sizes, sizes, st.integers(1, 2), st.integers(1, 3))
def test_round_trip_is_identity(name, H, W, b, c):
    x = torch.randn(b, c, H, W)
    seq = to_sequence(x, name)
    assert seq.shape == (b, c, H * W)
    assert torch.equal(from_sequence(seq, name, H, W), x)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(ORDER_NAMES), sizes, sizes)
def test_permutation_and_inverse(name, H, W):
    perm, inv = permutation(name, H, W), inverse_permutation(name, H, W)
    assert sorted(perm.tolist()) == list(range(H * W))
    assert torch.equal(perm[inv], torch.arange(H * W))
    assert torch.equal(inv[perm], torch.arange(H * W))


@settings(max_examples=30, deadline=None)
@given(sizes, sizes)
def test_cross_merge_of_cross_scan_is_4x(H, W):
    x = torch.randn(2, 3, H, W, dtype=torch.float64)
    xs = cross_scan(x)
    assert xs.shape == (2, 4, 3, H * W)
    torch.testing.assert_close(cross_merge(xs, H, W), 4 * x, rtol=0, atol=0)


def test_cross_scan_directions():
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    xs = cross_scan(x)[0, :, 0]
    assert CROSS_SCAN == ("raster", "transposed", "reversed", "transposed_reversed")
    assert xs[0].tolist() == [0, 1, 2, 3, 4, 5]
    assert xs[1].tolist() == [0, 3, 1, 4, 2, 5]
    assert xs[2].tolist() == [5, 4, 3, 2, 1, 0]
    assert xs[3].tolist() == [5, 2, 4, 1, 3, 0]


def test_snake_orders_3x4():
    assert permutation("snake_h", 3, 4).tolist() == [0, 1, 2, 3, 7, 6, 5, 4, 8, 9, 10, 11]
    assert permutation("snake_v", 3, 4).tolist() == [0, 4, 8, 9, 5, 1, 2, 6, 10, 11, 7, 3]
    x = torch.arange(12.0).reshape(1, 1, 3, 4)
    assert to_sequence(x, "snake_h")[0, 0].tolist() == [0, 1, 2, 3, 7, 6, 5, 4, 8, 9, 10, 11]
    assert to_sequence(x, "snake_v")[0, 0].tolist() == [0, 4, 8, 9, 5, 1, 2, 6, 10, 11, 7, 3]


def test_flip_orders():
    x = torch.arange(6.0).reshape(1, 1, 2, 3)
    assert to_sequence(x, "flip_h")[0, 0].tolist() == [2, 1, 0, 5, 4, 3]
    assert to_sequence(x, "flip_v")[0, 0].tolist() == [3, 4, 5, 0, 1, 2]
    assert to_sequence(x, "flip_hw")[0, 0].tolist() == [5, 4, 3, 2, 1, 0]


def test_gradients_pass_through_orders():
    x = torch.randn(1, 2, 3, 5, requires_grad=True)
    from_sequence(to_sequence(x, "snake_v") * 2, "snake_v", 3, 5).sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 2.0))


def test_unknown_order_and_bad_size():
    with pytest.raises(ValueError, match="unknown scan order 'zigzag'"):
        permutation("zigzag", 2, 2)
    with pytest.raises(ValueError, match="H, W >= 1"):
        permutation("raster", 0, 3)
