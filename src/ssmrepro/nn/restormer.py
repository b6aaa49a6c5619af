"""Restormer (Zamir et al., CVPR 2022; reference swz30/Restormer
``basicsr/models/archs/restormer_arch.py``), the deblurring configuration, as a baseline of the
receptive-field figure (EVSSM Fig. 4 b) and of EVSSM Table 13 (DPDD).

Architecture (dim 48, blocks [4, 6, 6, 8], refinement 4, heads [1, 2, 4, 8], FFN 2.66, no biases,
'WithBias' LayerNorm; 26,126,644 parameters):

    conv3x3 3->48 | enc1 48 (4) | down | enc2 96 (6) | down | enc3 192 (6) | down | latent 384 (8)
    up, cat enc3, 1x1 384->192 | dec3 192 (6) | up, cat enc2, 1x1 192->96 | dec2 96 (6)
    up, cat enc1 (no 1x1) | dec1 96 (4) | refinement 96 (4) | conv3x3 96->3 | + input

A block is ``x = x + MDTA(LN(x)); x = x + GDFN(LN(x))`` (``ssmrepro.nn.restormer_blocks``).
Parameter names follow the reference, so its checkpoints load with ``strict=True``. The reference's
dual-pixel variant (6-channel input, ``skip_conv``) is not built: every use here is single-image.

Size rule: three 2x downsamplings, so H and W must be multiples of 8. The reference network does
not pad; its test scripts (``Motion_Deblurring/test.py``) reflect-pad to a multiple of 8 and crop
the output back. ``pad_input=True`` (default) does the same inside the model; ``pad_input=False``
raises ``ValueError`` for other sizes. Reflect padding needs the pad to be smaller than the size,
so padded sizes must exceed half the multiple (``min_size``).

This module also holds the small size-rule helpers the other baselines (``nafnet``,
``fftformer``) share.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import MODELS
from .restormer_blocks import GDFN, MDTA, Downsample, LayerNorm, Upsample
from .unet_parts import OverlapPatchEmbed

# --------------------------------------------------------------------------- size rule helpers


def reflect_min_size(multiple: int) -> int:
    """Smallest H (or W) that reflect padding to ``multiple`` can take (pad < size)."""
    return multiple // 2 + 1


def check_input(x: torch.Tensor, name: str, multiple: int, pads: bool, min_size: int = 1,
                channels: int | None = None) -> None:
    """Raise ``ValueError`` naming the rule if ``x`` (b, c, H, W) does not fit it."""
    if x.dim() != 4:
        raise ValueError(f"{name}: input must be (batch, channels, H, W), got shape {tuple(x.shape)}")
    if channels is not None and x.shape[1] != channels:
        raise ValueError(f"{name}: input must have {channels} channels, got {x.shape[1]}")
    h, w = x.shape[-2:]
    if pads:
        if h < min_size or w < min_size:
            raise ValueError(f"{name}: pads H and W up to multiples of {multiple}, which needs "
                             f"H, W >= {min_size}; got {h}x{w}")
    elif h % multiple or w % multiple or h == 0 or w == 0:
        raise ValueError(f"{name}: H and W must be multiples of {multiple} (built with "
                         f"pad_input=False); got {h}x{w}")


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "reflect") -> torch.Tensor:
    """Pad the bottom and right of (b, c, H, W) up to multiples of ``multiple``."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % multiple, (-w) % multiple
    if ph == 0 and pw == 0:
        return x
    if mode == "zeros":
        return F.pad(x, (0, pw, 0, ph))
    return F.pad(x, (0, pw, 0, ph), mode=mode)


# --------------------------------------------------------------------------- Restormer


class TransformerBlock(nn.Module):
    """``x + MDTA(LN(x))`` then ``x + GDFN(LN(x))`` (reference names norm1, attn, norm2, ffn)."""

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float = 2.66,
                 bias: bool = False, LayerNorm_type: str = "WithBias"):
        super().__init__()
        self.norm1 = LayerNorm(dim, LayerNorm_type)
        self.attn = MDTA(dim, num_heads, bias)
        self.norm2 = LayerNorm(dim, LayerNorm_type)
        self.ffn = GDFN(dim, ffn_expansion_factor, bias)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.ffn(self.norm2(x))


def _stage(n: int, dim: int, heads: int, ffn: float, bias: bool, ln: str) -> nn.Sequential:
    return nn.Sequential(*[TransformerBlock(dim, heads, ffn, bias, ln) for _ in range(n)])


class Restormer(nn.Module):
    """Restormer for single-image deblurring: ``model(blurred) -> restored``, (b,3,H,W) -> (b,3,H,W)."""

    task = "deblurring"
    input_multiple = 8

    def __init__(self, inp_channels: int = 3, out_channels: int = 3, dim: int = 48,
                 num_blocks: Sequence[int] = (4, 6, 6, 8), num_refinement_blocks: int = 4,
                 heads: Sequence[int] = (1, 2, 4, 8), ffn_expansion_factor: float = 2.66,
                 bias: bool = False, LayerNorm_type: str = "WithBias", pad_input: bool = True):
        super().__init__()
        num_blocks, heads = list(num_blocks), list(heads)
        if len(num_blocks) != 4 or len(heads) != 4:
            raise ValueError(f"Restormer: num_blocks and heads need 4 entries (3 levels + latent), "
                             f"got {num_blocks} and {heads}")
        if inp_channels != out_channels:
            raise ValueError("Restormer: the global residual needs inp_channels == out_channels")
        self.inp_channels = inp_channels
        self.pads_input = bool(pad_input)
        self.min_size = reflect_min_size(self.input_multiple) if self.pads_input else self.input_multiple
        d1, d2, d3, d4 = dim, dim * 2, dim * 4, dim * 8
        args = (ffn_expansion_factor, bias, LayerNorm_type)

        self.patch_embed = OverlapPatchEmbed(inp_channels, dim)
        self.encoder_level1 = _stage(num_blocks[0], d1, heads[0], *args)
        self.down1_2 = Downsample(d1)
        self.encoder_level2 = _stage(num_blocks[1], d2, heads[1], *args)
        self.down2_3 = Downsample(d2)
        self.encoder_level3 = _stage(num_blocks[2], d3, heads[2], *args)
        self.down3_4 = Downsample(d3)
        self.latent = _stage(num_blocks[3], d4, heads[3], *args)

        self.up4_3 = Upsample(d4)
        self.reduce_chan_level3 = nn.Conv2d(d4, d3, kernel_size=1, bias=bias)
        self.decoder_level3 = _stage(num_blocks[2], d3, heads[2], *args)
        self.up3_2 = Upsample(d3)
        self.reduce_chan_level2 = nn.Conv2d(d3, d2, kernel_size=1, bias=bias)
        self.decoder_level2 = _stage(num_blocks[1], d2, heads[1], *args)
        self.up2_1 = Upsample(d2)  # level 1 keeps 2*dim channels after the concat (no 1x1)
        self.decoder_level1 = _stage(num_blocks[0], d2, heads[0], *args)
        self.refinement = _stage(num_refinement_blocks, d2, heads[0], *args)
        self.output = nn.Conv2d(d2, out_channels, kernel_size=3, stride=1, padding=1, bias=bias)

    def forward(self, inp_img: torch.Tensor) -> torch.Tensor:
        check_input(inp_img, "Restormer", self.input_multiple, self.pads_input, self.min_size,
                    self.inp_channels)
        h, w = inp_img.shape[-2:]
        x_in = pad_to_multiple(inp_img, self.input_multiple, "reflect") if self.pads_input else inp_img

        enc1 = self.encoder_level1(self.patch_embed(x_in))
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        latent = self.latent(self.down3_4(enc3))

        dec3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(latent), enc3], 1)))
        dec2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], 1)))
        dec1 = self.decoder_level1(torch.cat([self.up2_1(dec2), enc1], 1))
        out = self.output(self.refinement(dec1)) + x_in
        return out[..., :h, :w]


@MODELS.register("restormer")
def build_restormer(**switches) -> Restormer:
    """Restormer; switches are the constructor's arguments (reference names)."""
    return Restormer(**switches)
