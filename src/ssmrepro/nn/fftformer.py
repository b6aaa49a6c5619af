"""FFTformer (Kong et al., CVPR 2023, "Efficient Frequency Domain-based Transformers for High-Quality
Image Deblurring"; reference kkkls/FFTformer ``basicsr/models/archs/fftformer_arch.py``), the GoPro
model, as a baseline of the receptive-field figure (EVSSM Fig. 4 c).

GoPro configuration (``options/train/GoPro.yml``): dim 48, num_blocks [6, 6, 12],
num_refinement_blocks 4, ffn_expansion_factor 3, no biases: **16,560,474** parameters (the paper's
"16.6M"). That count includes the reference's ``reduce_chan_level2`` (1x1 192->96, 18,432
parameters), which is built but never called; it is kept (``keep_unused=True``) so the count and
the checkpoints match the reference.

    conv3x3 3->48 | enc1 48 (6) | down | enc2 96 (6) | down | enc3 192 (12)
    dec3 192 (12, with FSAS) | up | Fuse(., enc2) | dec2 96 (6, FSAS) | up | Fuse(., enc1)
    dec1 48 (6, FSAS) | refinement 48 (4, FSAS) | conv3x3 48->3 | + input

- Down: bilinear x0.5 then conv3x3 n->2n; Up: bilinear x2 then conv3x3 n->n/2 (no biases).
- Block: ``x = x + FSAS(LN(x))`` (decoder blocks only), then ``x = x + DFFN(LN(x))``; LN is
  Restormer's 'WithBias' channel LayerNorm.
- DFFN: 1x1 dim->2h (h = int(dim * ffn)), on every 8x8 patch ``irfft2(rfft2(patch) * W)`` with a
  learnable W of shape (2h, 1, 1, 8, 5), dw3x3, ``GELU(x1) * x2``, 1x1 h->dim.
- FSAS: 1x1 dim->6dim, dw3x3, split q, k, v; per 8x8 patch ``irfft2(rfft2(q) * rfft2(k))``
  (the frequency-domain correlation that stands in for q k^T), LN over 2dim channels,
  ``v * that``, 1x1 2dim->dim.
- Fuse(n): ``conv1x1(cat(enc, dec))`` (2n->2n, bias), a Restormer-default block (FFN 2.66, DFFN
  only), conv1x1 (bias), split into two halves, summed.

Precision: as the reference, the patch FFTs run in float32 (float64 for float64 inputs).

Size rule: the 8x8 patches tile the quarter-resolution level, so H and W must be multiples of 32.
The reference network does not pad; its ``test.py`` reflect-pads to multiples of 32 and crops the
output. ``pad_input=True`` (default) does this inside the model; ``pad_input=False`` raises
``ValueError`` for other sizes.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import MODELS
from .restormer import check_input, pad_to_multiple, reflect_min_size
from .restormer_blocks import LayerNorm
from .unet_parts import Downsample, OverlapPatchEmbed, Upsample

PATCH = 8


def _fft_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def to_patches(x: torch.Tensor, p: int) -> torch.Tensor:
    """(b, c, H, W) -> (b, c, H/p, W/p, p, p)."""
    b, c, h, w = x.shape
    return x.reshape(b, c, h // p, p, w // p, p).permute(0, 1, 2, 4, 3, 5)


def from_patches(x: torch.Tensor) -> torch.Tensor:
    """(b, c, H/p, W/p, p, p) -> (b, c, H, W)."""
    b, c, nh, nw, p1, p2 = x.shape
    return x.permute(0, 1, 2, 4, 3, 5).reshape(b, c, nh * p1, nw * p2)


class DFFN(nn.Module):
    """Discriminative frequency-domain FFN (reference names project_in, dwconv, fft, project_out)."""

    def __init__(self, dim: int, ffn_expansion_factor: float, bias: bool, patch_size: int = PATCH):
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.patch_size = patch_size
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, stride=1, padding=1,
                                groups=hidden * 2, bias=bias)
        self.fft = nn.Parameter(torch.ones((hidden * 2, 1, 1, patch_size, patch_size // 2 + 1)))
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x):
        x = self.project_in(x)
        p = self.patch_size
        spec = torch.fft.rfft2(to_patches(x, p).to(_fft_dtype(x))) * self.fft
        x = from_patches(torch.fft.irfft2(spec, s=(p, p))).to(x.dtype)
        x1, x2 = self.dwconv(x).chunk(2, dim=1)
        return self.project_out(F.gelu(x1) * x2)


class FSAS(nn.Module):
    """Frequency-domain self-attention solver (reference names to_hidden, to_hidden_dw,
    project_out, norm)."""

    def __init__(self, dim: int, bias: bool, patch_size: int = PATCH):
        super().__init__()
        self.to_hidden = nn.Conv2d(dim, dim * 6, kernel_size=1, bias=bias)
        self.to_hidden_dw = nn.Conv2d(dim * 6, dim * 6, kernel_size=3, stride=1, padding=1,
                                      groups=dim * 6, bias=bias)
        self.project_out = nn.Conv2d(dim * 2, dim, kernel_size=1, bias=bias)
        self.norm = LayerNorm(dim * 2, "WithBias")
        self.patch_size = patch_size

    def forward(self, x):
        q, k, v = self.to_hidden_dw(self.to_hidden(x)).chunk(3, dim=1)
        p, dt = self.patch_size, _fft_dtype(x)
        q_f = torch.fft.rfft2(to_patches(q, p).to(dt))
        k_f = torch.fft.rfft2(to_patches(k, p).to(dt))
        corr = from_patches(torch.fft.irfft2(q_f * k_f, s=(p, p))).to(x.dtype)
        return self.project_out(v * self.norm(corr))


class TransformerBlock(nn.Module):
    """``[x + FSAS(LN(x))]`` (only with ``att=True``), then ``x + DFFN(LN(x))``."""

    def __init__(self, dim: int, ffn_expansion_factor: float = 2.66, bias: bool = False,
                 LayerNorm_type: str = "WithBias", att: bool = False, patch_size: int = PATCH):
        super().__init__()
        self.att = att
        if att:
            self.norm1 = LayerNorm(dim, LayerNorm_type)
            self.attn = FSAS(dim, bias, patch_size)
        self.norm2 = LayerNorm(dim, LayerNorm_type)
        self.ffn = DFFN(dim, ffn_expansion_factor, bias, patch_size)

    def forward(self, x):
        if self.att:
            x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


class Fuse(nn.Module):
    """Fuses a decoder map with its encoder skip (reference names conv, att_channel, conv2)."""

    def __init__(self, n_feat: int, patch_size: int = PATCH):
        super().__init__()
        self.n_feat = n_feat
        self.att_channel = TransformerBlock(dim=n_feat * 2, patch_size=patch_size)
        self.conv = nn.Conv2d(n_feat * 2, n_feat * 2, 1, 1, 0)
        self.conv2 = nn.Conv2d(n_feat * 2, n_feat * 2, 1, 1, 0)

    def forward(self, enc, dnc):
        x = self.conv2(self.att_channel(self.conv(torch.cat((enc, dnc), dim=1))))
        e, d = torch.split(x, [self.n_feat, self.n_feat], dim=1)
        return e + d


class FFTformer(nn.Module):
    """FFTformer for deblurring: ``model(blurred) -> restored``, (b,3,H,W) -> (b,3,H,W)."""

    task = "deblurring"

    def __init__(self, inp_channels: int = 3, out_channels: int = 3, dim: int = 48,
                 num_blocks: Sequence[int] = (6, 6, 12), num_refinement_blocks: int = 4,
                 ffn_expansion_factor: float = 3, bias: bool = False, patch_size: int = PATCH,
                 keep_unused: bool = True, pad_input: bool = True):
        super().__init__()
        num_blocks = list(num_blocks)
        if len(num_blocks) != 3:
            raise ValueError(f"FFTformer: num_blocks needs 3 entries (one per level), got {num_blocks}")
        if inp_channels != out_channels:
            raise ValueError("FFTformer: the global residual needs inp_channels == out_channels")
        self.inp_channels = inp_channels
        self.input_multiple = patch_size * 4
        self.pads_input = bool(pad_input)
        self.min_size = reflect_min_size(self.input_multiple) if self.pads_input else self.input_multiple

        def stage(n: int, d: int, att: bool) -> nn.Sequential:
            return nn.Sequential(*[TransformerBlock(d, ffn_expansion_factor, bias, att=att,
                                                    patch_size=patch_size) for _ in range(n)])

        d1, d2, d3 = dim, dim * 2, dim * 4
        self.patch_embed = OverlapPatchEmbed(inp_channels, dim)
        self.encoder_level1 = stage(num_blocks[0], d1, False)
        self.down1_2 = Downsample(d1)
        self.encoder_level2 = stage(num_blocks[1], d2, False)
        self.down2_3 = Downsample(d2)
        self.encoder_level3 = stage(num_blocks[2], d3, False)
        self.decoder_level3 = stage(num_blocks[2], d3, True)
        self.up3_2 = Upsample(d3)
        if keep_unused:  # built but never called by the reference (kept for its state dict)
            self.reduce_chan_level2 = nn.Conv2d(d3, d2, kernel_size=1, bias=bias)
        self.decoder_level2 = stage(num_blocks[1], d2, True)
        self.up2_1 = Upsample(d2)
        self.decoder_level1 = stage(num_blocks[0], d1, True)
        self.refinement = stage(num_refinement_blocks, d1, True)
        self.fuse2 = Fuse(d2, patch_size)
        self.fuse1 = Fuse(d1, patch_size)
        self.output = nn.Conv2d(d1, out_channels, kernel_size=3, stride=1, padding=1, bias=bias)

    def forward(self, inp_img: torch.Tensor) -> torch.Tensor:
        check_input(inp_img, "FFTformer", self.input_multiple, self.pads_input, self.min_size,
                    self.inp_channels)
        h, w = inp_img.shape[-2:]
        x_in = pad_to_multiple(inp_img, self.input_multiple, "reflect") if self.pads_input else inp_img
        enc1 = self.encoder_level1(self.patch_embed(x_in))
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        dec3 = self.decoder_level3(enc3)
        dec2 = self.decoder_level2(self.fuse2(self.up3_2(dec3), enc2))
        dec1 = self.decoder_level1(self.fuse1(self.up2_1(dec2), enc1))
        out = self.output(self.refinement(dec1)) + x_in
        return out[..., :h, :w]


@MODELS.register("fftformer")
def build_fftformer(**switches) -> FFTformer:
    """FFTformer; switches are the constructor's arguments (reference names, plus ``patch_size``,
    ``keep_unused`` and ``pad_input``)."""
    return FFTformer(**switches)
