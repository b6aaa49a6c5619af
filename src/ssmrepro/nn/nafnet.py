"""NAFNet (Chen et al., ECCV 2022, "Simple Baselines for Image Restoration"; reference
megvii-research/NAFNet ``basicsr/models/archs/NAFNet_arch.py``), the GoPro deblurring model, as a
baseline of the receptive-field figure (EVSSM Fig. 4 a).

GoPro configuration (``options/train/GoPro/NAFNet-width64.yml``): width 64, enc_blk_nums
[1, 1, 1, 28], middle_blk_num 1, dec_blk_nums [1, 1, 1, 1]: **67,888,835** parameters (the width-32
model of ``NAFNet-width32.yml``: 17,111,907). Both counted on the reference class built from those configs.

    conv3x3 3->w | per level: NAFBlocks, then conv2x2 stride 2 c->2c | middle NAFBlocks
    per level: conv1x1 c->2c (no bias) + PixelShuffle(2), + encoder skip, NAFBlocks | conv3x3 w->3 | + input

NAFBlock (activation-free): ``y = x + beta * conv3(SCA(SG(dw3x3(conv1(LN(x))))))``;
``out = y + gamma * conv5(SG(conv4(LN(y))))``, with SimpleGate ``SG(a, b) = a * b`` (channel
halves), simplified channel attention ``SCA(x) = x * conv1x1(avgpool(x))``, LayerNorm2d over
channels (eps 1e-6), beta and gamma initialised to zero. Parameter names follow the reference.

Test-time local pooling ("TLC", the reference's ``NAFNetLocal``, used by both GoPro configs): the
global average pool of every SCA becomes a local mean over a window of 1.5x the feature size at the
training crop (256: kernel 384 / 2^level, stride 1, replicate-padded back to the map size); it
equals the global mean whenever the window covers the map, so it changes nothing at or below
384x384. ``tlc_train_size=None`` gives the plain ``NAFNet`` class (global pooling always).

Size rule: ``2 ** len(enc_blk_nums)`` = 16. As the reference network does, the model zero-pads the
bottom/right up to that multiple and crops the output (``pad_input=True``, default); with
``pad_input=False`` other sizes raise ``ValueError``.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import MODELS
from .restormer import check_input, pad_to_multiple


class LayerNorm2d(nn.Module):
    """LayerNorm over the channels of a (b, c, h, w) map (biased variance, eps 1e-6)."""

    def __init__(self, channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x):
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        y = (x - mu) / (var + self.eps).sqrt()
        return self.weight.view(1, -1, 1, 1) * y + self.bias.view(1, -1, 1, 1)


class SimpleGate(nn.Module):
    """Split the channels in two halves and multiply them."""

    def forward(self, x):
        x1, x2 = x.chunk(2, dim=1)
        return x1 * x2


class LocalAvgPool2d(nn.Module):
    """TLC pooling: mean over a ``kernel`` x ``kernel`` window (stride 1), replicate-padded back to
    the input size; the global mean when the window covers the whole map."""

    def __init__(self, kernel: int):
        super().__init__()
        self.kernel = int(kernel)

    def extra_repr(self) -> str:
        return f"kernel={self.kernel}"

    def forward(self, x):
        h, w = x.shape[-2:]
        if self.kernel >= h and self.kernel >= w:
            return x.mean(dim=(-2, -1), keepdim=True)
        k1, k2 = min(h, self.kernel), min(w, self.kernel)
        out = F.avg_pool2d(x, (k1, k2), stride=1)
        oh, ow = out.shape[-2:]
        pad = ((w - ow) // 2, (w - ow + 1) // 2, (h - oh) // 2, (h - oh + 1) // 2)
        return F.pad(out, pad, mode="replicate")


class NAFBlock(nn.Module):
    def __init__(self, c: int, DW_Expand: int = 2, FFN_Expand: int = 2, drop_out_rate: float = 0.0,
                 pool_kernel: int | None = None):
        super().__init__()
        dw = c * DW_Expand
        self.conv1 = nn.Conv2d(c, dw, kernel_size=1, bias=True)
        self.conv2 = nn.Conv2d(dw, dw, kernel_size=3, padding=1, groups=dw, bias=True)
        self.conv3 = nn.Conv2d(dw // 2, c, kernel_size=1, bias=True)
        pool = nn.AdaptiveAvgPool2d(1) if pool_kernel is None else LocalAvgPool2d(pool_kernel)
        self.sca = nn.Sequential(pool, nn.Conv2d(dw // 2, dw // 2, kernel_size=1, bias=True))
        self.sg = SimpleGate()
        ffn = FFN_Expand * c
        self.conv4 = nn.Conv2d(c, ffn, kernel_size=1, bias=True)
        self.conv5 = nn.Conv2d(ffn // 2, c, kernel_size=1, bias=True)
        self.norm1 = LayerNorm2d(c)
        self.norm2 = LayerNorm2d(c)
        self.dropout1 = nn.Dropout(drop_out_rate) if drop_out_rate > 0 else nn.Identity()
        self.dropout2 = nn.Dropout(drop_out_rate) if drop_out_rate > 0 else nn.Identity()
        self.beta = nn.Parameter(torch.zeros((1, c, 1, 1)))
        self.gamma = nn.Parameter(torch.zeros((1, c, 1, 1)))

    def forward(self, inp):
        x = self.sg(self.conv2(self.conv1(self.norm1(inp))))
        x = self.dropout1(self.conv3(x * self.sca(x)))
        y = inp + x * self.beta
        x = self.dropout2(self.conv5(self.sg(self.conv4(self.norm2(y)))))
        return y + x * self.gamma


class NAFNet(nn.Module):
    """NAFNet for deblurring: ``model(blurred) -> restored``, (b,3,H,W) -> (b,3,H,W)."""

    task = "deblurring"

    def __init__(self, img_channel: int = 3, width: int = 64, middle_blk_num: int = 1,
                 enc_blk_nums: Sequence[int] = (1, 1, 1, 28), dec_blk_nums: Sequence[int] = (1, 1, 1, 1),
                 drop_out_rate: float = 0.0, tlc_train_size: int | None = 256, pad_input: bool = True):
        super().__init__()
        enc_blk_nums, dec_blk_nums = list(enc_blk_nums), list(dec_blk_nums)
        if len(enc_blk_nums) != len(dec_blk_nums):
            raise ValueError(f"NAFNet: enc_blk_nums {enc_blk_nums} and dec_blk_nums {dec_blk_nums} "
                             "need the same number of levels")
        self.img_channel = img_channel
        self.input_multiple = 2 ** len(enc_blk_nums)
        self.pads_input = bool(pad_input)
        self.min_size = 1 if self.pads_input else self.input_multiple
        self.tlc_train_size = tlc_train_size

        def kernel(level: int) -> int | None:  # TLC window at this level, None = global pooling
            if tlc_train_size is None:
                return None
            base = int(tlc_train_size * 1.5)
            return (tlc_train_size >> level) * base // tlc_train_size

        def blocks(n: int, chan: int, level: int) -> nn.Sequential:
            return nn.Sequential(*[NAFBlock(chan, drop_out_rate=drop_out_rate, pool_kernel=kernel(level))
                                   for _ in range(n)])

        self.intro = nn.Conv2d(img_channel, width, kernel_size=3, padding=1, bias=True)
        self.ending = nn.Conv2d(width, img_channel, kernel_size=3, padding=1, bias=True)
        self.encoders = nn.ModuleList()
        self.decoders = nn.ModuleList()
        self.ups = nn.ModuleList()
        self.downs = nn.ModuleList()
        chan = width
        for level, num in enumerate(enc_blk_nums):
            self.encoders.append(blocks(num, chan, level))
            self.downs.append(nn.Conv2d(chan, 2 * chan, 2, 2))
            chan *= 2
        self.middle_blks = blocks(middle_blk_num, chan, len(enc_blk_nums))
        for i, num in enumerate(dec_blk_nums):
            self.ups.append(nn.Sequential(nn.Conv2d(chan, chan * 2, 1, bias=False), nn.PixelShuffle(2)))
            chan //= 2
            self.decoders.append(blocks(num, chan, len(enc_blk_nums) - 1 - i))

    def forward(self, inp: torch.Tensor) -> torch.Tensor:
        check_input(inp, "NAFNet", self.input_multiple, self.pads_input, self.min_size, self.img_channel)
        h, w = inp.shape[-2:]
        x_in = pad_to_multiple(inp, self.input_multiple, "zeros") if self.pads_input else inp
        x = self.intro(x_in)
        skips = []
        for encoder, down in zip(self.encoders, self.downs):
            x = encoder(x)
            skips.append(x)
            x = down(x)
        x = self.middle_blks(x)
        for decoder, up, skip in zip(self.decoders, self.ups, skips[::-1]):
            x = decoder(up(x) + skip)
        out = self.ending(x) + x_in
        return out[..., :h, :w]


@MODELS.register("nafnet")
def build_nafnet(**switches) -> NAFNet:
    """NAFNet; switches are the constructor's arguments (reference names, plus ``tlc_train_size``
    and ``pad_input``)."""
    return NAFNet(**switches)
