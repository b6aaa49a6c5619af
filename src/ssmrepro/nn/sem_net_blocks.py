"""Building blocks of SEM-Net (Chen et al., WACV 2025; reference ChrisChen1023/SEM-Net @ 1a5dcd0,
``src/networks.py``) and of its ablation variants. Parameter names follow the reference.

- ``sinusoid_table`` / ``positional_encoding``: the reference's 1-D sinusoidal table
  (``PositionalEncoding`` in ``src/models.py``), evaluated in float32 as there.
- ``MambaMixer``: the Snake Mamba Block's sequence part (reference ``MambaLayer``) for any list of
  scan orders (one or two): each order gets its own LayerNorm + Mamba-1; PE is added before the norm.
- ``SEFN``: spatially enhanced feed-forward (reference ``FeedForward``), ``MLP``: plain feed-forward.
- ``SpatialSelfAttention``: plain multi-head self-attention over the H*W pixels ("SSA", ViT-style).
- ``SEMBlock``: ``x = x + attn(norm1(x)); x = x + ffn(norm2(x), spatial=block input)``.
- ``make_mixer`` / ``make_ffn``: the factories behind the ``mixer``/``ordering``/``ffn`` switches.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ssm.mamba1 import Mamba
from ..ssm.orders import from_sequence, to_sequence
from .restormer_blocks import GDFN, MDTA, LayerNorm

# ordering switch -> scan orders, one LayerNorm + Mamba each (names norm/mamba, norm2/mamba2)
MAMBA_ORDERINGS = {
    "sbdm": ("snake_h", "snake_v"),      # snake bi-directional modelling (published)
    "raster": ("raster",),               # Table 4 (a): horizontal raster, one direction
    "bi_raster": ("raster", "transposed"),  # Table 4 (b): row-major + column-major, no snake
    "snake_h": ("snake_h",),             # Table 4 (c): horizontal snake only
    "umamba": ("raster",),               # Table 1: U-Mamba's MambaLayer (one raster scan)
}
MAP_ORDERINGS = ("vmamba", "ssm2d")      # whole-map mixers written elsewhere
ORDERINGS = tuple(MAMBA_ORDERINGS) + MAP_ORDERINGS
MIXERS = ("mamba", "csa", "ssa")
FFNS = ("sefn", "gdfn", "mlp")


# --------------------------------------------------------------------------------------------
# positional encoding
@lru_cache(maxsize=16)
def _cpu_table(n_tokens: int, width: int) -> torch.Tensor:
    if width % 2:
        raise ValueError(f"sinusoidal positional encoding needs an even width, got {width}")
    position = torch.arange(0, n_tokens, dtype=torch.float32).unsqueeze(1)
    div_term = torch.exp(torch.arange(0, width, 2).float() * (-math.log(10000.0) / width))
    pe = torch.zeros(n_tokens, width)
    pe[:, 0::2] = torch.sin(position * div_term)
    pe[:, 1::2] = torch.cos(position * div_term)
    return pe


@lru_cache(maxsize=16)
def _device_table(n_tokens: int, width: int, device: torch.device) -> torch.Tensor:
    return _cpu_table(n_tokens, width).to(device)


def sinusoid_table(n_tokens: int, width: int) -> torch.Tensor:
    """(n_tokens, width) float32: ``pe[p, 2i] = sin(p w_i)``, ``pe[p, 2i+1] = cos(p w_i)``,
    ``w_i = exp(2i * -ln(10000) / width)``, computed in float32 on the CPU exactly as the
    reference ``PositionalEncoding`` (whose rows ``[:n_tokens]`` are what the generator reads)."""
    return _cpu_table(int(n_tokens), int(width)).clone()


def positional_encoding(n_tokens: int, width: int, device, dtype) -> torch.Tensor:
    """The float32 table (computed on the CPU, cached per device), then cast to ``dtype``.
    Read-only: the result may be the cached tensor itself."""
    dev = torch.device(device)
    n, w = int(n_tokens), int(width)
    table = _cpu_table(n, w) if dev.type == "cpu" else _device_table(n, w, dev)
    return table.to(dtype)


# --------------------------------------------------------------------------------------------
# sequence mixers
class MambaMixer(nn.Module):
    """Mamba over one or two scan orders of a (b, c, H, W) map (reference ``MambaLayer``).

    For each order k: tokens in that order, + PE (row = position in the sequence, shared by all
    orders), LayerNorm (``norm``, ``norm2``), Mamba-1 (``mamba``, ``mamba2``), back to the map; the
    maps are summed. With ``orders = (snake_h, snake_v)`` this is the published SBDM.
    """

    def __init__(self, dim: int, orders: tuple[str, ...], pos_embed: bool = True, d_state: int = 16,
                 d_conv: int = 4, expand: int = 2):
        super().__init__()
        if not 1 <= len(orders) <= 2:
            raise ValueError(f"MambaMixer takes one or two scan orders, got {orders}")
        self.dim = dim
        self.orders = tuple(orders)
        self.pos_embed = pos_embed
        # registration order as the reference: norm, norm2, mamba, mamba2
        self.norm = nn.LayerNorm(dim)
        if len(orders) == 2:
            self.norm2 = nn.LayerNorm(dim)
        self.mamba = Mamba(d_model=dim, d_state=d_state, d_conv=d_conv, expand=expand)
        if len(orders) == 2:
            self.mamba2 = Mamba(d_model=dim, d_state=d_state, d_conv=d_conv, expand=expand)

    def _branches(self):
        yield self.orders[0], self.norm, self.mamba
        if len(self.orders) == 2:
            yield self.orders[1], self.norm2, self.mamba2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The reference runs this layer with autocast off (half inputs cast to float32). Same here:
        # under autocast it runs in float32 and returns the input dtype; otherwise it runs in the
        # input dtype (float64 for the fixtures, bfloat16 for a bfloat16 model).
        if torch.is_autocast_enabled(x.device.type):
            with torch.autocast(x.device.type, enabled=False):
                return self._forward(x.float()).to(x.dtype)
        return self._forward(x)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if c != self.dim:
            raise ValueError(f"MambaMixer: expected {self.dim} channels, got {c}")
        pe = positional_encoding(h * w, c, x.device, x.dtype) if self.pos_embed else None
        out = None
        for order, norm, mamba in self._branches():
            seq = to_sequence(x, order).transpose(1, 2)  # (b, L, c)
            if pe is not None:
                seq = seq + pe
            y = mamba(norm(seq)).transpose(1, 2)
            y = from_sequence(y, order, h, w)
            out = y if out is None else out + y
        return out


class SpatialSelfAttention(nn.Module):
    """Plain multi-head self-attention over all H*W pixels ("SSA", ViT [Dosovitskiy et al.]):
    tokens in raster order (+ the sinusoidal PE when ``pos_embed``), ``qkv`` Linear (bias, as ViT),
    softmax(q k^T / sqrt(d_head)) v with the full L x L map, ``proj`` Linear. Memory grows as
    (H*W)^2 (a 256x256 level-1 map is 65,536 tokens: 17 GB per head and image in float32)."""

    def __init__(self, dim: int, num_heads: int, pos_embed: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"SSA: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.pos_embed = pos_embed
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)  # (b, L, c)
        if self.pos_embed:
            t = t + positional_encoding(h * w, c, x.device, x.dtype)
        qkv = self.qkv(t).reshape(b, h * w, 3, self.num_heads, c // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each (b, heads, L, d_head)
        # explicit (L x L) attention map, as ViT: no fused kernel, so memory grows as (H*W)^2 as in
        # the paper (out of memory at 256x256) and the MAC counter sees both matmuls
        attn = (q @ k.transpose(-2, -1)) * (c // self.num_heads) ** -0.5
        y = attn.softmax(dim=-1) @ v  # (b, heads, L, d_head)
        y = self.proj(y.transpose(1, 2).reshape(b, h * w, c))
        return y.transpose(1, 2).reshape(b, c, h, w)


def _import_map_mixer(ordering: str):
    module, cls = {"vmamba": ("ssmrepro.nn.vmamba_ss2d", "SS2D"),
                   "ssm2d": ("ssmrepro.nn.ssm2d", "SSM2D")}[ordering]
    import importlib

    try:
        mod = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name != module:
            raise
        raise NotImplementedError(
            f"SEM-Net ordering={ordering!r} needs {module}.{cls}, which is not in this checkout "
            f"(it is written separately); the other orderings work") from None
    if not hasattr(mod, cls):
        raise NotImplementedError(f"SEM-Net ordering={ordering!r} needs {module}.{cls}, "
                                  f"which that module does not define yet")
    return getattr(mod, cls)


def make_mixer(mixer: str, ordering: str, dim: int, num_heads: int, pos_embed: bool,
               bias: bool = False, d_state: int = 16, d_conv: int = 4, expand: int = 2) -> nn.Module:
    """The token mixer of one block: (b, c, H, W) -> (b, c, H, W)."""
    if mixer == "csa":
        return MDTA(dim, num_heads, bias)
    if mixer == "ssa":
        return SpatialSelfAttention(dim, num_heads, pos_embed=pos_embed)
    if mixer != "mamba":
        raise ValueError(f"unknown SEM-Net mixer {mixer!r}; known: {', '.join(MIXERS)}")
    if ordering in MAMBA_ORDERINGS:
        return MambaMixer(dim, MAMBA_ORDERINGS[ordering], pos_embed=pos_embed, d_state=d_state,
                          d_conv=d_conv, expand=expand)
    if ordering == "vmamba":
        return _import_map_mixer("vmamba")(dim, d_state=d_state)
    if ordering == "ssm2d":
        return _import_map_mixer("ssm2d")(dim)
    raise ValueError(f"unknown SEM-Net ordering {ordering!r}; known: {', '.join(ORDERINGS)}")


# --------------------------------------------------------------------------------------------
# feed-forward networks
class SEFN(nn.Module):
    """Spatially enhanced feed-forward (reference ``FeedForward``), hidden h = dim * expansion.

    Spatial branch on the block input: y = Up2(ReLU(LN(conv3(ReLU(LN(conv3(AvgPool2(spatial)))))))).
    Main: ``project_in`` 1x1 dim->2h, ``dwconv`` 3x3, split x1, x2;
    x1 = ``dwconv_afterfusion``(``fusion`` 1x1 (cat[x1, y])); out = ``project_out``(GELU(x1) * x2).
    """

    uses_spatial = True

    def __init__(self, dim: int, ffn_expansion_factor: float = 2, bias: bool = False):
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.fusion = nn.Conv2d(hidden + dim, hidden, kernel_size=1, bias=bias)
        self.dwconv_afterfusion = nn.Conv2d(hidden, hidden, kernel_size=3, stride=1, padding=1,
                                            groups=hidden, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, stride=1, padding=1,
                                groups=hidden * 2, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)
        self.avg_pool = nn.AvgPool2d(kernel_size=2, stride=2)
        self.conv = nn.Sequential(
            nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, bias=True),
            LayerNorm(dim, "WithBias"),
            nn.ReLU(),
            nn.Conv2d(dim, dim, kernel_size=3, stride=1, padding=1, bias=True),
            LayerNorm(dim, "WithBias"),
            nn.ReLU(),
        )
        self.upsample = nn.Upsample(scale_factor=2, mode="nearest")

    def forward(self, x: torch.Tensor, spatial: torch.Tensor) -> torch.Tensor:
        x = self.project_in(x)
        y = self.upsample(self.conv(self.avg_pool(spatial)))
        x1, x2 = self.dwconv(x).chunk(2, dim=1)
        x1 = self.dwconv_afterfusion(self.fusion(torch.cat((x1, y), dim=1)))
        return self.project_out(F.gelu(x1) * x2)


class MLP(nn.Module):
    """Plain feed-forward: ``project_in`` 1x1 dim->h, GELU, ``project_out`` 1x1 h->dim."""

    uses_spatial = False

    def __init__(self, dim: int, ffn_expansion_factor: float = 2, bias: bool = False):
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.project_in = nn.Conv2d(dim, hidden, kernel_size=1, bias=bias)
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project_out(F.gelu(self.project_in(x)))


def make_ffn(ffn: str, dim: int, ffn_expansion_factor: float, bias: bool) -> nn.Module:
    if ffn == "sefn":
        return SEFN(dim, ffn_expansion_factor, bias)
    if ffn == "gdfn":
        return GDFN(dim, ffn_expansion_factor, bias)
    if ffn == "mlp":
        return MLP(dim, ffn_expansion_factor, bias)
    raise ValueError(f"unknown SEM-Net ffn {ffn!r}; known: {', '.join(FFNS)}")


# --------------------------------------------------------------------------------------------
class SEMBlock(nn.Module):
    """Reference ``TransformerBlock`` minus its unused ``norm1_1``/``ffn1``:
    ``x = x + attn(norm1(x)); x = x + ffn(norm2(x)[, spatial = block input])``."""

    def __init__(self, dim: int, num_heads: int, ffn_expansion_factor: float, bias: bool,
                 layer_norm: str, mixer: str, ordering: str, ffn: str, pos_embed: bool,
                 d_state: int = 16, d_conv: int = 4, expand: int = 2):
        super().__init__()
        self.norm1 = LayerNorm(dim, layer_norm)
        self.attn = make_mixer(mixer, ordering, dim, num_heads, pos_embed, bias=bias,
                               d_state=d_state, d_conv=d_conv, expand=expand)
        self.norm2 = LayerNorm(dim, layer_norm)
        self.ffn = make_ffn(ffn, dim, ffn_expansion_factor, bias)
        self._ffn_spatial = getattr(self.ffn, "uses_spatial", False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        spatial = x
        x = x + self.attn(self.norm1(x))
        y = self.norm2(x)
        return x + (self.ffn(y, spatial) if self._ffn_spatial else self.ffn(y))
