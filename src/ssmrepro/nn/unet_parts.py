"""Encoder-decoder parts shared by the baselines and EVSSM: the 3x3 patch embedding of Restormer,
FFTformer and EVSSM, and FFTformer's and EVSSM's bilinear down/upsampling (EVSSM is built on
FFTformer's code), each followed by a 3x3 convolution that doubles or halves the channels.
Parameter names (``proj``, ``body.1``) are the reference code's."""

from __future__ import annotations

import torch.nn as nn


class OverlapPatchEmbed(nn.Module):
    """conv3x3 in_c -> embed_dim."""

    def __init__(self, in_c: int = 3, embed_dim: int = 48, bias: bool = False):
        super().__init__()
        self.proj = nn.Conv2d(in_c, embed_dim, kernel_size=3, stride=1, padding=1, bias=bias)

    def forward(self, x):
        return self.proj(x)


class Downsample(nn.Module):
    """Bilinear x0.5 then conv3x3 n -> 2n."""

    def __init__(self, n_feat: int):
        super().__init__()
        self.body = nn.Sequential(nn.Upsample(scale_factor=0.5, mode="bilinear", align_corners=False),
                                  nn.Conv2d(n_feat, n_feat * 2, 3, stride=1, padding=1, bias=False))

    def forward(self, x):
        return self.body(x)


class Upsample(nn.Module):
    """Bilinear x2 then conv3x3 n -> n/2."""

    def __init__(self, n_feat: int):
        super().__init__()
        self.body = nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                                  nn.Conv2d(n_feat, n_feat // 2, 3, stride=1, padding=1, bias=False))

    def forward(self, x):
        return self.body(x)
