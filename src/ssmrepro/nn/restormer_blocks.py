"""Restormer building blocks (Zamir et al., CVPR 2022; reference swz30/Restormer), shared by
SEM-Net (which is built on Restormer's U-Net) and the Restormer baseline.

- ``LayerNorm``: per-pixel LayerNorm over channels of a (b, c, h, w) map, 'WithBias' or 'BiasFree'.
- ``GDFN``: gated-Dconv feed-forward network (SEM-Net's "FN" ablation).
- ``MDTA``: multi-Dconv head transposed attention, a C x C map per head (SEM-Net's "CSA").
- ``Downsample`` / ``Upsample``: conv3x3 then PixelUnshuffle(2) / PixelShuffle(2).
Parameter names follow the reference code so checkpoints map one-to-one.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class _BiasFreeLN(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        sigma = x.var(-1, keepdim=True, unbiased=False)
        return x / torch.sqrt(sigma + 1e-5) * self.weight


class _WithBiasLN(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        mu = x.mean(-1, keepdim=True)
        sigma = x.var(-1, keepdim=True, unbiased=False)
        return (x - mu) / torch.sqrt(sigma + 1e-5) * self.weight + self.bias


class LayerNorm(nn.Module):
    """LayerNorm over the channels of a (b, c, h, w) map. Parameters live under ``body``."""

    def __init__(self, dim: int, kind: str = "WithBias"):
        super().__init__()
        if kind not in ("WithBias", "BiasFree"):
            raise ValueError(f"LayerNorm kind must be 'WithBias' or 'BiasFree', got {kind!r}")
        self.body = _BiasFreeLN(dim) if kind == "BiasFree" else _WithBiasLN(dim)

    def forward(self, x):
        h, w = x.shape[-2:]
        y = self.body(x.flatten(2).transpose(1, 2))  # (b, hw, c)
        return y.transpose(1, 2).reshape(x.shape[0], -1, h, w)


class GDFN(nn.Module):
    """Gated-Dconv feed-forward: 1x1 dim->2h, dw3x3, GELU(x1) * x2, 1x1 h->dim."""

    def __init__(self, dim: int, ffn_expansion_factor: float = 2.66, bias: bool = False):
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, stride=1, padding=1,
                                groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x):
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class MDTA(nn.Module):
    """Multi-Dconv head transposed attention: softmax(norm(q) norm(k)^T * t) v over channels."""

    def __init__(self, dim: int, num_heads: int, bias: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MDTA: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.temperature = nn.Parameter(torch.ones(num_heads, 1, 1))
        self.qkv = nn.Conv2d(dim, dim * 3, kernel_size=1, bias=bias)
        self.qkv_dwconv = nn.Conv2d(dim * 3, dim * 3, kernel_size=3, stride=1, padding=1,
                                    groups=dim * 3, bias=bias)
        self.project_out = nn.Conv2d(dim, dim, kernel_size=1, bias=bias)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv_dwconv(self.qkv(x)).chunk(3, dim=1)
        q, k, v = (t.reshape(b, self.num_heads, c // self.num_heads, h * w) for t in (q, k, v))
        q = F.normalize(q, dim=-1)
        k = F.normalize(k, dim=-1)
        attn = (q @ k.transpose(-2, -1)) * self.temperature
        out = attn.softmax(dim=-1) @ v
        return self.project_out(out.reshape(b, c, h, w))


class Downsample(nn.Module):
    """conv3x3 n -> n/2, PixelUnshuffle(2): (n, H, W) -> (2n, H/2, W/2)."""

    def __init__(self, n_feat: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat // 2, 3, 1, 1, bias=False),
                                  nn.PixelUnshuffle(2))

    def forward(self, x):
        return self.body(x)


class Upsample(nn.Module):
    """conv3x3 n -> 2n, PixelShuffle(2): (n, H, W) -> (n/2, 2H, 2W)."""

    def __init__(self, n_feat: int):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(n_feat, n_feat * 2, 3, 1, 1, bias=False),
                                  nn.PixelShuffle(2))

    def forward(self, x):
        return self.body(x)
