"""SEM-Net (Chen, Zhang, Atapour-Abarghouei, Shum, WACV 2025), the generator of the reference code
ChrisChen1023/SEM-Net @ 1a5dcd0 (``src/networks.py`` class ``SEM``; input preparation and
``PositionalEncoding`` in ``src/models.py``), with the ablation switches of the supplement.

Network (default ``dim`` 48, blocks [4, 6, 6, 8]): Restormer-style U-Net. ``patch_embed.gproj1``
conv3x3 (4 -> dim); encoder levels at dim, 2dim, 4dim; latent at 8dim; Downsample = conv3x3 n->n/2 +
PixelUnshuffle(2), Upsample = conv3x3 n->2n + PixelShuffle(2); decoder levels 3 and 2 concatenate the
skip and reduce it with a 1x1 conv; decoder level 1 concatenates the last skip and keeps 2dim channels
(no 1x1: "last skip", Table 5); ``output.0`` conv3x3 2dim -> 3; inpainting output (tanh + 1) / 2.
Each block: ``x = x + SMB(LN(x)); x = x + SEFN(LN(x), spatial = block input)``. The SMB (published
SBDM) scans the map as a horizontal snake and a vertical snake, adds a 1-D sinusoidal PE indexed by
the sequence position, and runs each through its own LayerNorm + Mamba-1 (d_state 16, d_conv 4,
expand 2); both are put back in place and summed. PE tables are computed inside from the token count
and the level width, in float32 as the reference, then cast to the activation dtype.

Contract (docs/architecture.md, contract 0): inpainting ``model(masked_image, mask)`` with mask
(b,1,H,W), 1 = hole, ``masked_image = mask_input(image, mask)`` (holes white); the two are
concatenated to 4 channels inside. Deblurring ``model(blurred)``, output ``blurred + net(blurred)``
(no tanh). H and W must be multiples of ``input_multiple`` = 16 (three 2x downsamplings, then every
feed-forward at the H/8 level average-pools 2x2); the model never pads (``pads_input = False``).

Parameters and the reference checkpoint
---------------------------------------
The reference ``SEM`` holds 56.7M parameters its forward pass never uses (default config: 820 of
2,390 state-dict entries, 56,661,696 of 138,099,744 parameters). This module builds only the used
ones (81,438,048 by default) under the reference names, so a reference state dict loads strictly
after dropping exactly ``reference_unused_keys(...)`` (and a DataParallel ``module.`` prefix);
``drop_reference_unused`` does both by name pattern. Dropped keys:
- ``<stage>.<i>.norm1_1.*`` and ``<stage>.<i>.ffn1.*`` of every block (an unused LayerNorm + SEFN),
- ``refinement.*`` (refinement blocks, built but never called),
- ``down1_2.proj.weight``, ``down2_3.proj.weight``, ``down3_4.proj.weight``,
- ``output_before.weight``.
Every other key maps one-to-one with equal shape, e.g. ``encoder_level1.0.attn.mamba2.A_log``,
``decoder_level1.3.ffn.conv.4.body.bias``, ``output.0.weight``.

Switches (``sem_net(...)`` builder kwargs) and their table rows
--------------------------------------------------------------
- ``mixer``: ``mamba`` (SMB, published) | ``csa`` (Restormer MDTA, Table 3 "CSA") | ``ssa`` (plain
  spatial multi-head self-attention over H*W pixels, Table 3 "SSA").
- ``ordering`` (mixer ``mamba`` only): ``sbdm`` (published) | ``raster`` (Table 4 a) |
  ``bi_raster`` (raster + column-major, Table 4 b) | ``snake_h`` (Table 4 c) | ``umamba`` (one raster
  scan, one Mamba: U-Mamba's MambaLayer, from which the reference MambaLayer derives; Table 1) |
  ``vmamba`` (``ssmrepro.nn.vmamba_ss2d.SS2D``, Table 1) | ``ssm2d`` (``ssmrepro.nn.ssm2d.SSM2D``,
  Table 1). One-order mixers have ``attn.norm``/``attn.mamba``; two-order ones add ``norm2``/``mamba2``.
- ``pos_embed``: default (None) = as published for that mixer: on for sbdm/raster/bi_raster/snake_h,
  off for umamba, vmamba, ssm2d, csa, ssa. May be set for any Mamba ordering with a 1-D order and for
  ssa (raster order); refused for csa, vmamba and ssm2d (no token sequence to index).
- ``ffn``: ``sefn`` (published) | ``gdfn`` (Restormer GDFN, the "FN" of Tables 2/3) | ``mlp`` (plain
  1x1-GELU-1x1, only for the Table 2 (a) baseline, see below).
- ``last_skip_reduce``: True adds ``reduce_chan_level1`` (1x1, 2dim -> dim) after the last skip, so
  decoder level 1 and the output conv run at dim (Table 5 "w 1x1 conv").
- ``task``: ``inpainting`` | ``deblurring``.
- ``scale``: ``full`` (dim 48, blocks [4,6,6,8]) | ``half`` | ``half_depth`` | ``half_width_depth``;
  it only sets the defaults of ``dim``/``num_blocks``; explicit values win (card scales smoke/mini).

Readings (where the papers leave a choice)
------------------------------------------
- Half-scaled SEM-Net (all supplement ablations, Tables 2-5): ``scale: half`` = half width, dim 24
  (levels 24/48/96/192, decoder level 1 at 48), full depth [4, 6, 6, 8]. The paper says only
  "half-scaled"; ``dim`` is the one number that scales the whole network (every level's width, PE
  width, Mamba inner width), while depth is a per-level list the paper never calls a scale; Restormer-
  family papers (SEM-Net's base) scale models by width. ``half_depth`` ([2,3,3,4]) and
  ``half_width_depth`` exist to test the other readings.
- Table 2 row (a), no component ticked: the Restormer-style baseline block with the CSA (MDTA) token
  mixer and a plain feed-forward (``mixer: csa, ffn: mlp``). Reasons: a block needs some token mixer
  and the only non-Mamba one the paper names for this network is CSA; the reference code is labelled
  "Restormer-inpainting"; row (a) cannot be CSA + FN (Restormer proper), because that model is Table 3
  "CSA", whose values differ from row (a) (FID 2.75 vs 1.49 at 0.01-20%), whereas Table 3 "SMB" equals
  row (f) exactly; so (a) also lacks FN, leaving a plain FFN. Rows (b)-(g) tick MB: (b)/(c) are a
  single raster-order Mamba without PE ("vanilla" SSM), SBDM and PE are added in (d)-(g).
- Deblurring head: the supplement states I_out = I_in + SEM-Net(I_in); the reference repository has no
  deblurring code. Here: 3 input channels (no mask), the same body, ``output.0`` conv3x3 -> 3 with no
  tanh, plus the input image (Restormer's deblurring head, which SEM-Net is built from).
- SSA: ViT-style (qkv and proj Linear with bias, scaled dot-product softmax); its card enables the
  sinusoidal PE (ViT adds position embeddings; attention alone is permutation-invariant).
"""

from __future__ import annotations

import re

import torch
import torch.nn as nn

from ..registry import MODELS
from .restormer_blocks import Downsample, Upsample
from .sem_net_blocks import FFNS, MAMBA_ORDERINGS, MIXERS, ORDERINGS, SEFN, SEMBlock

INPUT_MULTIPLE = 16
SCALES = {
    "full": (48, (4, 6, 6, 8)),
    "half": (24, (4, 6, 6, 8)),
    "half_depth": (48, (2, 3, 3, 4)),
    "half_width_depth": (24, (2, 3, 3, 4)),
}
TASKS = ("inpainting", "deblurring")
# orderings whose published design uses the PE (others default to no PE)
_PE_BY_DEFAULT = ("sbdm", "raster", "bi_raster", "snake_h")


def mask_input(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``image * (1 - mask) + mask``: holes (mask 1) set to white, as the reference."""
    mask = mask.to(image.dtype)
    return image * (1 - mask) + mask


class PatchEmbed(nn.Module):
    """Reference ``OverlapPatchEmbed``: conv3x3, no bias (parameter ``gproj1``)."""

    def __init__(self, in_channels: int, dim: int):
        super().__init__()
        self.gproj1 = nn.Conv2d(in_channels, dim, kernel_size=3, stride=1, padding=1, bias=False)

    def forward(self, x):
        return self.gproj1(x)


class SEMNet(nn.Module):
    """SEM-Net generator (see the module docstring). Build it with ``sem_net(**switches)``."""

    pads_input = False
    input_multiple = INPUT_MULTIPLE

    def __init__(self, task: str, dim: int, num_blocks, heads, ffn_expansion_factor: float,
                 bias: bool, layer_norm: str, mixer: str, ordering: str, ffn: str,
                 pos_embed: bool, last_skip_reduce: bool, d_state: int, d_conv: int, expand: int):
        super().__init__()
        self.task = task
        in_channels = 4 if task == "inpainting" else 3
        widths = (dim, dim * 2, dim * 4, dim * 8)

        def level(width, heads_i, n):
            return nn.Sequential(*[
                SEMBlock(width, heads_i, ffn_expansion_factor, bias, layer_norm, mixer, ordering, ffn,
                         pos_embed, d_state=d_state, d_conv=d_conv, expand=expand)
                for _ in range(n)])

        self.patch_embed = PatchEmbed(in_channels, dim)
        self.encoder_level1 = level(widths[0], heads[0], num_blocks[0])
        self.down1_2 = Downsample(widths[0])
        self.encoder_level2 = level(widths[1], heads[1], num_blocks[1])
        self.down2_3 = Downsample(widths[1])
        self.encoder_level3 = level(widths[2], heads[2], num_blocks[2])
        self.down3_4 = Downsample(widths[2])
        self.latent = level(widths[3], heads[3], num_blocks[3])
        self.up4_3 = Upsample(widths[3])
        self.reduce_chan_level3 = nn.Conv2d(widths[3], widths[2], kernel_size=1, bias=bias)
        self.decoder_level3 = level(widths[2], heads[2], num_blocks[2])
        self.up3_2 = Upsample(widths[2])
        self.reduce_chan_level2 = nn.Conv2d(widths[2], widths[1], kernel_size=1, bias=bias)
        self.decoder_level2 = level(widths[1], heads[1], num_blocks[1])
        self.up2_1 = Upsample(widths[1])
        dec1 = widths[0] if last_skip_reduce else widths[1]
        if last_skip_reduce:
            self.reduce_chan_level1 = nn.Conv2d(widths[1], widths[0], kernel_size=1, bias=bias)
        else:
            self.reduce_chan_level1 = None
        self.decoder_level1 = level(dec1, heads[0], num_blocks[0])
        self.output = nn.Sequential(nn.Conv2d(dec1, 3, kernel_size=3, stride=1, padding=1, bias=bias))

    def check_input(self, image: torch.Tensor, mask: torch.Tensor | None) -> None:
        if image.dim() != 4 or image.shape[1] != 3:
            raise ValueError(f"SEM-Net expects a (b, 3, H, W) image, got {tuple(image.shape)}")
        h, w = image.shape[-2:]
        if h % self.input_multiple or w % self.input_multiple or h == 0 or w == 0:
            raise ValueError(f"SEM-Net needs H and W to be multiples of {self.input_multiple}, "
                             f"got {h}x{w} (it does not pad)")
        if self.task == "inpainting":
            if mask is None:
                raise ValueError("SEM-Net (inpainting) is called as model(masked_image, mask)")
            if mask.dim() != 4 or mask.shape[1] != 1 or mask.shape[-2:] != image.shape[-2:] \
                    or mask.shape[0] != image.shape[0]:
                raise ValueError(f"SEM-Net: mask must be (b, 1, H, W) = ({image.shape[0]}, 1, {h}, {w}), "
                                 f"got {tuple(mask.shape)}")
        elif mask is not None:
            raise ValueError("SEM-Net (deblurring) is called as model(blurred), without a mask")

    def forward(self, image: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        self.check_input(image, mask)
        x = torch.cat((image, mask.to(image.dtype)), dim=1) if self.task == "inpainting" else image
        enc1 = self.encoder_level1(self.patch_embed(x))
        enc2 = self.encoder_level2(self.down1_2(enc1))
        enc3 = self.encoder_level3(self.down2_3(enc2))
        lat = self.latent(self.down3_4(enc3))
        dec3 = self.decoder_level3(self.reduce_chan_level3(torch.cat([self.up4_3(lat), enc3], 1)))
        dec2 = self.decoder_level2(self.reduce_chan_level2(torch.cat([self.up3_2(dec3), enc2], 1)))
        dec1 = torch.cat([self.up2_1(dec2), enc1], 1)
        if self.reduce_chan_level1 is not None:
            dec1 = self.reduce_chan_level1(dec1)
        out = self.output(self.decoder_level1(dec1))
        if self.task == "inpainting":
            return (torch.tanh(out) + 1) / 2
        return out + image


def resolve_switches(task: str = "inpainting", dim: int | None = None, num_blocks=None,
                     scale: str = "full", heads=(1, 2, 4, 8), ffn_expansion_factor: float = 2,
                     bias: bool = False, layer_norm: str = "WithBias", mixer: str = "mamba",
                     ordering: str | None = None, ffn: str = "sefn", pos_embed: bool | None = None,
                     last_skip_reduce: bool = False, d_state: int = 16, d_conv: int = 4,
                     expand: int = 2) -> dict:
    """Check the switches and fill in the defaults; returns the full SEMNet kwargs."""
    if task not in TASKS:
        raise ValueError(f"SEM-Net task must be one of {', '.join(TASKS)}; got {task!r}")
    if scale not in SCALES:
        raise ValueError(f"SEM-Net scale must be one of {', '.join(SCALES)}; got {scale!r}")
    dim = SCALES[scale][0] if dim is None else int(dim)
    num_blocks = tuple(SCALES[scale][1] if num_blocks is None else (int(n) for n in num_blocks))
    heads = tuple(int(h) for h in heads)
    if dim < 2 or dim % 2:
        raise ValueError(f"SEM-Net dim must be even and >= 2 (Downsample halves it), got {dim}")
    if len(num_blocks) != 4 or min(num_blocks) < 0:
        raise ValueError(f"SEM-Net num_blocks must be 4 non-negative ints, got {list(num_blocks)}")
    if len(heads) != 4 or min(heads) < 1:
        raise ValueError(f"SEM-Net heads must be 4 positive ints, got {list(heads)}")
    if mixer not in MIXERS:
        raise ValueError(f"unknown SEM-Net mixer {mixer!r}; known: {', '.join(MIXERS)}")
    if ffn not in FFNS:
        raise ValueError(f"unknown SEM-Net ffn {ffn!r}; known: {', '.join(FFNS)}")
    if layer_norm not in ("WithBias", "BiasFree"):
        raise ValueError(f"SEM-Net layer_norm must be 'WithBias' or 'BiasFree', got {layer_norm!r}")
    if mixer == "mamba":
        ordering = "sbdm" if ordering is None else ordering
        if ordering not in ORDERINGS:
            raise ValueError(f"unknown SEM-Net ordering {ordering!r}; known: {', '.join(ORDERINGS)}")
    elif ordering is not None:
        raise ValueError(f"SEM-Net ordering applies to mixer 'mamba' only (got mixer {mixer!r}, "
                         f"ordering {ordering!r})")
    if pos_embed is None:
        pos_embed = mixer == "mamba" and ordering in _PE_BY_DEFAULT
    pos_embed = bool(pos_embed)
    if pos_embed and not (mixer == "ssa" or (mixer == "mamba" and ordering in MAMBA_ORDERINGS)):
        raise ValueError(f"SEM-Net pos_embed=True needs a 1-D token order (mixer 'mamba' with "
                         f"{', '.join(MAMBA_ORDERINGS)}, or 'ssa'); got mixer {mixer!r}"
                         + (f", ordering {ordering!r}" if ordering else ""))
    if mixer in ("csa", "ssa"):
        widths = (dim, 2 * dim, 4 * dim, 8 * dim)
        dec1 = dim if last_skip_reduce else 2 * dim
        for width, h in list(zip(widths, heads)) + [(dec1, heads[0])]:
            if width % h:
                raise ValueError(f"SEM-Net: width {width} is not divisible by {h} heads")
    return dict(task=task, dim=dim, num_blocks=list(num_blocks), heads=list(heads),
                ffn_expansion_factor=ffn_expansion_factor, bias=bool(bias), layer_norm=layer_norm,
                mixer=mixer, ordering=ordering, ffn=ffn, pos_embed=pos_embed,
                last_skip_reduce=bool(last_skip_reduce), d_state=int(d_state), d_conv=int(d_conv),
                expand=int(expand))


@MODELS.register("sem_net")
def sem_net(**switches) -> SEMNet:
    """Build SEM-Net from card switches (see the module docstring for every switch).

    Keyword arguments: task, dim, num_blocks, scale, heads, ffn_expansion_factor, bias, layer_norm,
    mixer, ordering, ffn, pos_embed, last_skip_reduce, d_state, d_conv, expand.
    """
    import inspect

    known = inspect.signature(resolve_switches).parameters
    unknown = sorted(set(switches) - set(known))
    if unknown:
        raise ValueError(f"unknown SEM-Net switch(es) {', '.join(unknown)}; known: {', '.join(known)}")
    config = resolve_switches(**switches)
    model = SEMNet(**config)
    model.config = config
    return model


def from_reference_kwargs(inp_channels: int = 4, out_channels: int = 3, dim: int = 48,
                          num_blocks=(4, 6, 6, 8), num_refinement_blocks: int = 4,
                          heads=(1, 2, 4, 8), ffn_expansion_factor: float = 2, bias: bool = False,
                          LayerNorm_type: str = "WithBias") -> SEMNet:  # noqa: N803 (reference name)
    """Build the model matching a reference ``SEM(**kwargs)`` (``num_refinement_blocks`` only
    affects the reference's unused parameters)."""
    if inp_channels != 4 or out_channels != 3:
        raise ValueError("the reference SEM is a 4-in (image + mask), 3-out inpainting generator; "
                         f"got inp_channels={inp_channels}, out_channels={out_channels}")
    return sem_net(task="inpainting", dim=dim, num_blocks=num_blocks, heads=heads,
                   ffn_expansion_factor=ffn_expansion_factor, bias=bias, layer_norm=LayerNorm_type)


# --------------------------------------------------------------------------------------------
# reference checkpoint keys
_STAGES = (("encoder_level1", 0), ("down1_2", None), ("encoder_level2", 1), ("down2_3", None),
           ("encoder_level3", 2), ("down3_4", None), ("latent", 3), ("decoder_level3", 2),
           ("decoder_level2", 1), ("decoder_level1", 0))
_UNUSED_PATTERN = re.compile(r"^(?:[^.]+\.\d+\.(?:norm1_1|ffn1)\.|refinement\.|down\d_\d\.proj\.|"
                             r"output_before\.)")


def reference_unused_keys(num_blocks=(4, 6, 6, 8), num_refinement_blocks: int = 4,
                          bias: bool = False, LayerNorm_type: str = "WithBias") -> list[str]:  # noqa: N803
    """The reference ``SEM(...)`` state-dict keys its forward pass never uses, in reference order
    (default config: 820 keys). Our model has exactly the reference keys minus these."""
    ln = ["body.weight"] if LayerNorm_type == "BiasFree" else ["body.weight", "body.bias"]
    sefn = list(SEFN(2, 2, bias).state_dict())
    unused_in_block = [f"norm1_1.{k}" for k in ln] + [f"ffn1.{k}" for k in sefn]
    template = SEMBlock(2, 1, 2, bias, LayerNorm_type, "mamba", "sbdm", "sefn", True)
    full_block = unused_in_block + list(template.state_dict())
    out = []
    for stage, lvl in _STAGES:
        if lvl is None:
            out.append(f"{stage}.proj.weight")
            continue
        for i in range(int(num_blocks[lvl])):
            out += [f"{stage}.{i}.{k}" for k in unused_in_block]
    for i in range(int(num_refinement_blocks)):
        out += [f"refinement.{i}.{k}" for k in full_block]
    out.append("output_before.weight")
    return out


def drop_reference_unused(state_dict: dict) -> dict:
    """A reference generator state dict (``ckpt['generator']``) -> ours: strips a DataParallel
    ``module.`` prefix and drops the unused keys (by name pattern, any config)."""
    out = {}
    for key, value in state_dict.items():
        key = key[len("module."):] if key.startswith("module.") else key
        if not _UNUSED_PATTERN.match(key):
            out[key] = value
    return out
