"""Scan orders: how an H x W map becomes a 1-D sequence, each with an exact inverse.

An order is a permutation ``perm`` of the raster indices 0..H*W-1: sequence position t holds the
pixel whose raster (row-major) index is ``perm[t]``. ``to_sequence`` gathers with ``perm`` and
``from_sequence`` scatters back with its inverse.

Names:
- ``raster``: row-major. ``reversed``: raster read backwards.
- ``transposed``: column-major. ``transposed_reversed``: column-major backwards.
- ``snake_h``: row-major, odd rows reversed (3x4: 0,1,2,3,7,6,5,4,8,9,10,11).
- ``snake_v``: column-major, odd columns reversed (3x4: 0,4,8,9,5,1,2,6,10,11,7,3).
- ``flip_h`` / ``flip_v`` / ``flip_hw``: raster of the map flipped left-right / up-down / both.
The four-direction cross-scan of VMamba is (raster, transposed, reversed, transposed_reversed).
"""

from __future__ import annotations

from functools import lru_cache

import torch

CROSS_SCAN = ("raster", "transposed", "reversed", "transposed_reversed")


def _grid(h: int, w: int) -> torch.Tensor:
    return torch.arange(h * w).reshape(h, w)


def _snake_h(h, w):
    g = _grid(h, w).clone()
    g[1::2] = g[1::2].flip(-1)
    return g.reshape(-1)


def _snake_v(h, w):
    g = _grid(h, w).t().clone()  # rows of g are the columns of the map
    g[1::2] = g[1::2].flip(-1)
    return g.reshape(-1)


_ORDERS = {
    "raster": lambda h, w: _grid(h, w).reshape(-1),
    "reversed": lambda h, w: _grid(h, w).reshape(-1).flip(0),
    "transposed": lambda h, w: _grid(h, w).t().reshape(-1),
    "transposed_reversed": lambda h, w: _grid(h, w).t().reshape(-1).flip(0),
    "snake_h": _snake_h,
    "snake_v": _snake_v,
    "flip_h": lambda h, w: _grid(h, w).flip(1).reshape(-1),
    "flip_v": lambda h, w: _grid(h, w).flip(0).reshape(-1),
    "flip_hw": lambda h, w: _grid(h, w).flip(0).flip(1).reshape(-1),
}

ORDER_NAMES = tuple(_ORDERS)


@lru_cache(maxsize=256)
def _perm_cached(name: str, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
    if name not in _ORDERS:
        raise ValueError(f"unknown scan order {name!r}; known: {', '.join(ORDER_NAMES)}")
    if h < 1 or w < 1:
        raise ValueError(f"scan order needs H, W >= 1, got {h}x{w}")
    perm = _ORDERS[name](h, w).contiguous()
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel())
    return perm, inv


def permutation(name: str, h: int, w: int) -> torch.Tensor:
    """Raster index of the pixel at each sequence position."""
    return _perm_cached(name, int(h), int(w))[0]


def inverse_permutation(name: str, h: int, w: int) -> torch.Tensor:
    """Sequence position of each raster index."""
    return _perm_cached(name, int(h), int(w))[1]


def to_sequence(x: torch.Tensor, name: str) -> torch.Tensor:
    """(b, c, H, W) -> (b, c, H*W) in the given order."""
    h, w = x.shape[-2:]
    perm = permutation(name, h, w).to(x.device)
    return x.flatten(-2).index_select(-1, perm)


def from_sequence(seq: torch.Tensor, name: str, h: int, w: int) -> torch.Tensor:
    """(b, c, H*W) in the given order -> (b, c, H, W). Exact inverse of ``to_sequence``."""
    inv = inverse_permutation(name, h, w).to(seq.device)
    return seq.index_select(-1, inv).reshape(*seq.shape[:-1], h, w)


def cross_scan(x: torch.Tensor) -> torch.Tensor:
    """(b, c, H, W) -> (b, 4, c, H*W): VMamba's four directions."""
    return torch.stack([to_sequence(x, n) for n in CROSS_SCAN], dim=1)


def cross_merge(y: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """(b, 4, c, H*W) -> (b, c, H, W): each direction put back in place, then summed."""
    return sum(from_sequence(y[:, k], n, h, w) for k, n in enumerate(CROSS_SCAN))
