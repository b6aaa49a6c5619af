"""EVSSM: efficient visual state-space model for image deblurring (Kong et al., CVPR 2025).

Reference: kkkls/EVSSM @ 5098a5276640694a39a941119f9e8bcc3ece9fb0, two files with identical
parameters: ``models/EVSSM.py`` (test-time: EDFFN reflect padding + overlapping windows per block)
and ``basicsr/models/archs/EVSSM_arch.py`` (training arch: neither). Both are one module here with a
mode switch (``mode="test"`` / ``"train"``, or ``model.set_mode(...)``).

Layout (defaults): patch embed conv3x3 3->48; encoder levels 48/96/192 with 6/6/12 EVS blocks;
down = bilinear x0.5 + conv3x3 n->2n; decoder levels 192/96/48 with 12/6/6 blocks; up = bilinear x2 +
conv3x3 n->n/2; skips added; output conv3x3 48->3 plus the input image.

EVS block ``i`` (index restarts at 0 in every level): geometric transform of the map (published:
even i -> transpose H/W, odd i -> flip both axes; never undone), then
``x = x + SS2D(LN(x))`` (in test-time mode on overlapping windows, overlaps averaged) and
``x = x + EDFFN(LN(x))``. The transforms form the Klein four-group {I, T, R=flip both, TR}: every
element is its own inverse and they commute, and each decoder level repeats its encoder level's
schedule, so the frames at the skips and at the output always line up, for any block counts.

Switches (builder kwargs, see ``build_evssm``): ``dim``, ``num_blocks``, ``ffn_expansion_factor``,
``geo`` (``flip_transpose`` published; ``none`` = "w/o GeoT"; ``flip`` = "w/o T": the transposes are
removed from the schedule, odd blocks still flip; ``transpose`` = "w/o F": even blocks still
transpose, odd blocks do nothing; ``four_direction`` = no transforms, VMamba's 4-direction cross-scan
inside SS2D with K=4 projections), ``kernel_size`` (SS2D's depth-wise Conv1d, Table 11), ``ssm``
(``mamba1`` = SS2D; ``mamba2`` = EVSSM2, the Mamba-2 block on the raster sequence in place of SS2D,
Table 9), ``windows`` / ``window_sizes`` (test-time windows per level, reference 384/192/96),
``mode``.

EVSSM2 (``ssm="mamba2"``): the reference has no code for it. Here every EVS block keeps its
transform, norms and EDFFN and runs ``ssmrepro.ssm.mamba2.Mamba2`` on the raster-flattened map
(``attn`` = the Mamba2 module, windows as for SS2D). The supplement gives 24M parameters and 148 G;
no Mamba2 setting matches both: expand 2 / d_state 64 gives 17.33M (131 G conv+linear, fvcore),
expand 4 / d_state 64 gives 23.58M (175 G), expand 4 / d_state 128 24.42M (185 G). The cards use
expand 4, d_state 64 (the parameter count, which does not depend on a counter), with
``headdim = gcd(64, d_inner)`` (64 at width 48: mamba-ssm's default headdim 64 does not divide
d_inner = 96 at expand 2, so the authors must have changed expand or headdim).

Size rule. Training layout: H and W multiples of 32 (EDFFN cuts every level map, down to H/4, into
8x8 patches without padding). Test-time mode: the model reflect-pads the input to a multiple of 4
(what the reference ``test.py`` has, commented out, for sizes the U-Net cannot take) and crops the
output, so ``input_multiple = 1``, ``pads_input = True``; H and W must be >= 17 because the
reference's EDFFN reflect padding needs the H/4 level map to be at least 5 pixels.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..registry import MODELS
from .evssm_blocks import EDFFN, SS2D, LayerNorm, merge_windows, split_windows
from .unet_parts import Downsample, OverlapPatchEmbed, Upsample

GEO_SCHEDULES = {
    # (transform of even-index blocks, transform of odd-index blocks); "T" transpose, "R" flip H and W
    "flip_transpose": ("T", "R"),
    "none": (None, None),
    "flip": (None, "R"),
    "transpose": ("T", None),
    "four_direction": (None, None),
}
SSMS = ("mamba1", "mamba2")
MODES = ("test", "train")
TRAIN_MULTIPLE = 32  # 4 (two bilinear halvings) x 8 (EDFFN patches at H/4, no padding)
PAD_MULTIPLE = 4  # test-time input padding: two bilinear halvings
MIN_TEST_SIZE = 17  # padded to >= 20, so the H/4 map is >= 5 > its EDFFN reflect pad of 3


def block_transform(geo: str, idx: int) -> str | None:
    return GEO_SCHEDULES[geo][idx % 2]


def level_frame(geo: str, n_blocks: int) -> tuple[bool, bool]:
    """(transposed, flipped) of a level's output relative to its input after ``n_blocks`` blocks."""
    ts = [block_transform(geo, i) for i in range(n_blocks)]
    return ts.count("T") % 2 == 1, ts.count("R") % 2 == 1


def apply_transform(x: torch.Tensor, t: str | None) -> torch.Tensor:
    if t == "T":
        return x.transpose(-2, -1).contiguous()
    if t == "R":
        return torch.flip(x, dims=(-2, -1)).contiguous()
    return x


def _default_headdim(d_inner: int) -> int:
    return math.gcd(64, d_inner)


class EVS(nn.Module):
    """One EVS block. ``test_time`` and ``windows`` are set by the parent model."""

    def __init__(self, dim: int, ffn_expansion_factor: float = 3, bias: bool = False, idx: int = 0,
                 window: int = 384, geo: str = "flip_transpose", kernel_size: int = 7,
                 ssm: str = "mamba1", d_state: int = 8, mamba2: dict | None = None):
        super().__init__()
        self.idx = idx
        self.transform = block_transform(geo, idx)
        self.seq_mixer = ssm == "mamba2"
        self.norm1 = LayerNorm(dim)
        if ssm == "mamba1":
            self.attn = SS2D(d_model=dim, d_state=d_state, kernel_size=kernel_size,
                             directions=4 if geo == "four_direction" else 1)
        else:
            try:
                from ..ssm.mamba2 import Mamba2
            except ImportError as exc:
                raise NotImplementedError("EVSSM2 (ssm='mamba2') needs ssmrepro.ssm.mamba2.Mamba2, "
                                          f"which is not available: {exc}") from None

            kw = dict(mamba2 or {})
            expand = kw.get("expand", 2)
            if kw.get("headdim") is None:
                kw["headdim"] = _default_headdim(int(expand * dim))
            self.attn = Mamba2(dim, **kw)
        self.norm2 = LayerNorm(dim)
        self.ffn = EDFFN(dim, ffn_expansion_factor, bias)
        self.window_size = window
        self.test_time = True
        self.windows = True

    def _mix(self, x):
        y = self.norm1(x)
        if self.seq_mixer:
            b, c, h, w = y.shape
            y = self.attn(y.flatten(2).transpose(1, 2)).transpose(1, 2).reshape(b, c, h, w)
        else:
            y = self.attn(y)
        return x + y

    def forward(self, x):
        x = apply_transform(x, self.transform)
        k = self.window_size
        if self.test_time and self.windows and (x.shape[-2] > k or x.shape[-1] > k):
            parts, pos = split_windows(x, k)
            x = merge_windows(self._mix(parts), pos, x.shape)
        else:  # one window: the reference's (0 + y) / 1 is exactly y
            x = self._mix(x)
        return x + self.ffn(self.norm2(x))


class EVSSM(nn.Module):
    """EVSSM with every switch (see the module docstring). Parameter names equal the reference's."""

    task = "deblurring"

    def __init__(self, inp_channels: int = 3, out_channels: int = 3, dim: int = 48,
                 num_blocks: Sequence[int] = (6, 6, 12), ffn_expansion_factor: float = 3,
                 bias: bool = False, geo: str = "flip_transpose", kernel_size: int = 7,
                 ssm: str = "mamba1", d_state: int = 8, windows: bool = True,
                 window_sizes: Sequence[int] = (384, 192, 96), mode: str = "test",
                 mamba2: dict | None = None, num_refinement_blocks: int | None = None):
        super().__init__()
        del num_refinement_blocks  # accepted (test-time file signature), unused there too
        if geo not in GEO_SCHEDULES:
            raise ValueError(f"geo must be one of {', '.join(GEO_SCHEDULES)}; got {geo!r}")
        if ssm not in SSMS:
            raise ValueError(f"ssm must be one of {', '.join(SSMS)}; got {ssm!r}")
        if ssm == "mamba2" and geo == "four_direction":
            raise ValueError("geo='four_direction' is an SS2D (ssm='mamba1') variant")
        num_blocks = [int(n) for n in num_blocks]
        if len(num_blocks) != 3 or min(num_blocks) < 1:
            raise ValueError(f"num_blocks must be three positive counts, got {num_blocks}")
        window_sizes = [int(k) for k in window_sizes]
        if len(window_sizes) != 3 or min(window_sizes) < 1:
            raise ValueError(f"window_sizes must be three positive sizes, got {window_sizes}")
        self.dim, self.num_blocks, self.geo, self.ssm = dim, num_blocks, geo, ssm
        self.kernel_size = kernel_size

        def level(width, n, window):
            seq = nn.Sequential()
            for i in range(n):
                seq.add_module(f"block{i}", EVS(width, ffn_expansion_factor, bias, idx=i, window=window,
                                                geo=geo, kernel_size=kernel_size, ssm=ssm,
                                                d_state=d_state, mamba2=mamba2))
            return seq

        # construction order = the reference's, so seeded initialisation is identical
        self.patch_embed = OverlapPatchEmbed(inp_channels, dim)
        self.encoder_level1 = level(dim, num_blocks[0], window_sizes[0])
        self.down1_2 = Downsample(dim)
        self.encoder_level2 = level(dim * 2, num_blocks[1], window_sizes[1])
        self.down2_3 = Downsample(dim * 2)
        self.encoder_level3 = level(dim * 4, num_blocks[2], window_sizes[2])
        self.decoder_level3 = level(dim * 4, num_blocks[2], window_sizes[2])
        self.up3_2 = Upsample(dim * 4)
        self.decoder_level2 = level(dim * 2, num_blocks[1], window_sizes[1])
        self.up2_1 = Upsample(dim * 2)
        self.decoder_level1 = level(dim, num_blocks[0], window_sizes[0])
        self.output = nn.Conv2d(dim, out_channels, kernel_size=3, padding=1, bias=bias)

        self.set_mode(mode)
        self.set_windows(windows, window_sizes)

    # ---- switches that do not change parameters --------------------------------------------
    def levels(self):
        """(name, Sequential, level index 0..2) for the six block stacks, in forward order."""
        return [("encoder_level1", self.encoder_level1, 0), ("encoder_level2", self.encoder_level2, 1),
                ("encoder_level3", self.encoder_level3, 2), ("decoder_level3", self.decoder_level3, 2),
                ("decoder_level2", self.decoder_level2, 1), ("decoder_level1", self.decoder_level1, 0)]

    def set_mode(self, mode: str) -> "EVSSM":
        """``"test"``: reference test-time file (EDFFN padding, windows, input padded to 4).
        ``"train"``: reference training arch (no padding, no windows; H, W multiples of 32)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}; got {mode!r}")
        self.mode = mode
        test = mode == "test"
        self.pads_input = test
        self.input_multiple = 1 if test else TRAIN_MULTIPLE
        self.min_input_size = MIN_TEST_SIZE if test else TRAIN_MULTIPLE
        for _, seq, _ in self.levels():
            for blk in seq:
                blk.test_time = test
                blk.ffn.pad = test
        return self

    def set_windows(self, enabled: bool = True, window_sizes: Sequence[int] | None = None) -> "EVSSM":
        """Test-time overlapping windows on/off, and their sizes per level (level 1, 2, 3)."""
        if window_sizes is not None:
            self.window_sizes = [int(k) for k in window_sizes]
        self.windows = bool(enabled)
        for _, seq, lvl in self.levels():
            for blk in seq:
                blk.windows = self.windows
                blk.window_size = self.window_sizes[lvl]
        return self

    def check_size(self, h: int, w: int) -> None:
        if self.mode == "train":
            if h % TRAIN_MULTIPLE or w % TRAIN_MULTIPLE:
                raise ValueError(f"EVSSM (training layout) needs H and W to be multiples of "
                                 f"{TRAIN_MULTIPLE}, got {h}x{w}; use mode='test', which pads")
        elif min(h, w) < MIN_TEST_SIZE:
            raise ValueError(f"EVSSM (test-time mode) pads H and W to a multiple of {PAD_MULTIPLE} "
                             f"and needs them >= {MIN_TEST_SIZE}, got {h}x{w}")

    def forward(self, inp_img: torch.Tensor) -> torch.Tensor:
        h, w = inp_img.shape[-2:]
        self.check_size(h, w)
        if self.pads_input:
            ph, pw = (-h) % PAD_MULTIPLE, (-w) % PAD_MULTIPLE
            if ph or pw:
                inp_img = F.pad(inp_img, (0, pw, 0, ph), mode="reflect")
        enc1 = self.encoder_level1(self.patch_embed(inp_img))
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        dec3 = self.decoder_level3(enc3)
        dec2 = self.decoder_level2(self.up3_2(dec3) + enc2)
        dec1 = self.decoder_level1(self.up2_1(dec2) + enc1)
        out = self.output(dec1) + inp_img
        return out[..., :h, :w]


class SelfEnsemble(nn.Module):
    """Test-time self-ensemble: run the model on transformed copies of the input, undo each
    transform on the output, average with equal weights.

    Default ``"flips4"``: identity, flip W, flip H, flip both (4 forwards). The EVSSM supplement
    (Table 12) reports the self-ensemble at 4x the cost (504 = 4 x 126 GFLOPs), which rules out the
    usual x8 (flips x transposes, EDSR) set; the four flips are the 4-transform set that keeps H x W.
    ``"x8"`` (the four flips, each also transposed; 8x cost) is available for comparison. The
    reference has no self-ensemble code.

    Parameters live in ``self.model`` (state_dict keys prefixed ``model.``): load checkpoints into
    the inner model before wrapping.
    """

    MODES = ("flips4", "x8")

    def __init__(self, model: nn.Module, transforms: str = "flips4"):
        super().__init__()
        if transforms not in self.MODES:
            raise ValueError(f"transforms must be one of {', '.join(self.MODES)}; got {transforms!r}")
        self.model = model
        self.transforms = transforms
        self.task = getattr(model, "task", None)
        self.input_multiple = getattr(model, "input_multiple", 1)
        self.pads_input = getattr(model, "pads_input", False)

    def _ops(self):
        flips = [(), (-1,), (-2,), (-2, -1)]
        ops = [(f, False) for f in flips]
        if self.transforms == "x8":
            ops += [(f, True) for f in flips]
        return ops

    def forward(self, x):
        total = None
        ops = self._ops()
        for dims, transpose in ops:
            y = torch.flip(x, dims) if dims else x
            if transpose:
                y = y.transpose(-2, -1)
            y = self.model(y)
            if transpose:
                y = y.transpose(-2, -1)
            if dims:
                y = torch.flip(y, dims)
            total = y if total is None else total + y
        return total / len(ops)


@MODELS.register("evssm")
def build_evssm(dim: int = 48, num_blocks: Sequence[int] = (6, 6, 12), ffn_expansion_factor: float = 3,
                geo: str = "flip_transpose", kernel_size: int = 7, ssm: str = "mamba1",
                windows: bool = True, window_sizes: Sequence[int] = (384, 192, 96), mode: str = "test",
                d_state: int = 8, mamba2: dict | None = None, bias: bool = False,
                inp_channels: int = 3, out_channels: int = 3,
                num_refinement_blocks: int | None = None) -> EVSSM:
    """Builder for every EVSSM variant. ``mamba2``: extra ``Mamba2`` kwargs for ``ssm="mamba2"``
    (defaults: the ``Mamba2`` class defaults, with ``headdim = gcd(64, 2 * width)`` so heads divide
    d_inner at every level; 64 does not divide 96 at the default width 48)."""
    return EVSSM(inp_channels=inp_channels, out_channels=out_channels, dim=dim, num_blocks=num_blocks,
                 ffn_expansion_factor=ffn_expansion_factor, bias=bias, geo=geo,
                 kernel_size=kernel_size, ssm=ssm, d_state=d_state, windows=windows,
                 window_sizes=window_sizes, mode=mode, mamba2=mamba2,
                 num_refinement_blocks=num_refinement_blocks)
