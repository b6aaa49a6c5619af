"""Building blocks of EVSSM (Kong et al., CVPR 2025; reference kkkls/EVSSM @ 5098a52).

- ``LayerNorm``: RMS-style per-pixel norm over channels, ``x * rsqrt(mean(x^2) + 1e-6) * w + b``
  (no mean subtraction), wrapped so the parameter names are ``<name>.body.weight/bias``.
- ``EDFFN``: Restormer's gated-Dconv FFN followed by a learnable filter on the spectrum of every
  8x8 patch (``rfft2`` x ``fft`` of shape (dim, 1, 1, 8, 5), ``irfft2``). With ``pad=True`` (the
  test-time file ``models/EVSSM.py``) the map is reflect-padded to multiples of 8 and cropped back;
  with ``pad=False`` (the training arch ``basicsr/models/archs/EVSSM_arch.py``) H and W must already
  be multiples of 8.
- ``SS2D``: the one-direction (K=1) selective-scan mixer of the reference, or with ``directions=4``
  VMamba's cross-scan (row, column, and both reversed; K=4 projections, outputs summed).
- ``window_starts`` / ``split_windows`` / ``merge_windows``: the overlapping-window tiling of the
  reference's ``EVS.grids`` / ``EVS.grids_inverse`` (last window aligned to the border, overlaps
  averaged by the per-pixel window count).

Parameter names, shapes, registration order and the order in which random initialisers are called
follow the reference, so ``torch.manual_seed(s)`` builds the same initial weights and official
checkpoints load with ``strict=True``.

Precision: as the reference, the scan path and the patch FFT run in float32 for float16/bfloat16/
float32 activations; with float64 activations they run in float64 (the fixtures' float64 variant).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ssm.mamba1 import init_A_log, init_dt_proj
from ..ssm.scan import selective_scan

PATCH = 8  # EDFFN frequency-filter patch size


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


class _RMSNorm(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x):  # (..., dim)
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * self.weight + self.bias


class LayerNorm(nn.Module):
    """RMS-style norm over the channels of a (b, c, h, w) map (the reference's 'WithBias' LN)."""

    def __init__(self, dim: int):
        super().__init__()
        self.body = _RMSNorm(dim)

    def forward(self, x):
        return self.body(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class EDFFN(nn.Module):
    def __init__(self, dim: int, ffn_expansion_factor: float = 3, bias: bool = False, pad: bool = True):
        super().__init__()
        hidden = int(dim * ffn_expansion_factor)
        self.dim = dim
        self.pad = pad
        self.project_in = nn.Conv2d(dim, hidden * 2, kernel_size=1, bias=bias)
        self.dwconv = nn.Conv2d(hidden * 2, hidden * 2, kernel_size=3, padding=1, groups=hidden * 2,
                                bias=bias)
        self.fft = nn.Parameter(torch.ones(dim, 1, 1, PATCH, PATCH // 2 + 1))
        self.project_out = nn.Conv2d(hidden, dim, kernel_size=1, bias=bias)

    def forward(self, x):
        x1, x2 = self.dwconv(self.project_in(x)).chunk(2, dim=1)
        x = self.project_out(F.gelu(x1) * x2)
        b, c, h, w = x.shape
        if self.pad:
            ph, pw = (-h) % PATCH, (-w) % PATCH
            if ph or pw:
                x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        elif h % PATCH or w % PATCH:
            raise ValueError(f"EDFFN without padding needs H and W multiples of {PATCH}, got {h}x{w}")
        hp, wp = x.shape[-2:]
        dtype_in = x.dtype
        work = _work_dtype(x)
        patches = x.to(work).reshape(b, c, hp // PATCH, PATCH, wp // PATCH, PATCH).transpose(3, 4)
        spec = torch.fft.rfft2(patches) * self.fft.to(work)
        patches = torch.fft.irfft2(spec, s=(PATCH, PATCH))
        x = patches.transpose(3, 4).reshape(b, c, hp, wp)
        return x[:, :, :h, :w].to(dtype_in)


class SS2D(nn.Module):
    """EVSSM's selective-scan mixer on a (b, c, h, w) map.

    in_proj -> (x, z); x = GELU(depth-wise conv d_conv x d_conv (x)); raster flatten; x_proj to
    (dt_rank + 2 d_state) channels; depth-wise Conv1d of ``kernel_size`` along the sequence
    (the reference hard-codes 7; Table 11 varies it); split into dt, B, C; dt_proj; selective scan
    (softplus dt, D skip, no z); LayerNorm(d_inner); y * GELU(z); out_proj.

    ``directions=4`` (not in the reference; the "four-direction" baseline of Fig. 5d) scans the
    raster, column-major, and both reversed sequences, each with its own x_proj / dt_proj / A / D
    (stacked as K=4 like VMamba) and its own Conv1d kernels (one depth-wise Conv1d over K*(dt_rank+2N)
    channels); the four outputs are mapped back to raster order and summed before ``out_norm``.
    """

    def __init__(self, d_model: int, d_state: int = 8, d_conv: int = 3, expand: float = 2.0,
                 dt_rank: int | str = "auto", kernel_size: int = 7, directions: int = 1,
                 dt_min: float = 0.001, dt_max: float = 0.1, dt_init: str = "random",
                 dt_scale: float = 1.0, dt_init_floor: float = 1e-4, conv_bias: bool = True,
                 bias: bool = False):
        super().__init__()
        if directions not in (1, 4):
            raise ValueError(f"SS2D directions must be 1 or 4, got {directions}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"SS2D kernel_size must be odd and positive, got {kernel_size}")
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.directions = K = directions
        self.kernel_size = kernel_size
        c_dbl = self.dt_rank + 2 * d_state

        self.in_proj = nn.Linear(d_model, self.d_inner * 2, bias=bias)
        self.conv2d = nn.Conv2d(self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner,
                                padding=(d_conv - 1) // 2, bias=conv_bias)
        self.act = nn.GELU()
        x_projs = [nn.Linear(self.d_inner, c_dbl, bias=False) for _ in range(K)]
        self.x_proj_weight = nn.Parameter(torch.stack([p.weight for p in x_projs], dim=0))  # (K, c, d)
        self.x_conv = nn.Conv1d(K * c_dbl, K * c_dbl, kernel_size=kernel_size,
                                padding=(kernel_size - 1) // 2, groups=K * c_dbl)
        dt_projs = []
        for _ in range(K):
            p = nn.Linear(self.dt_rank, self.d_inner, bias=True)
            init_dt_proj(p, self.dt_rank, dt_init, dt_scale, dt_min, dt_max, dt_init_floor)
            dt_projs.append(p)
        self.dt_projs_weight = nn.Parameter(torch.stack([p.weight for p in dt_projs], dim=0))  # (K, d, r)
        self.dt_projs_bias = nn.Parameter(torch.stack([p.bias for p in dt_projs], dim=0))  # (K, d)
        self.A_logs = nn.Parameter(init_A_log(self.d_inner, d_state).repeat(K, 1))  # (K*d, n)
        self.A_logs._no_weight_decay = True
        self.Ds = nn.Parameter(torch.ones(K * self.d_inner))
        self.Ds._no_weight_decay = True
        self.out_norm = nn.LayerNorm(self.d_inner)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def _sequences(self, x):
        """(b, d, h, w) -> (b, K, d, L) in the scan orders."""
        b, d, h, w = x.shape
        seq = x.reshape(b, 1, d, h * w)
        if self.directions == 1:
            return seq
        cols = x.transpose(2, 3).reshape(b, 1, d, h * w)
        both = torch.cat([seq, cols], dim=1)
        return torch.cat([both, both.flip(-1)], dim=1)

    def _merge(self, y, h, w):
        """(b, K, d, L) scan outputs -> (b, d, L) in raster order (summed over directions)."""
        if self.directions == 1:
            return y[:, 0]
        b, _, d, L = y.shape
        y_rev = y[:, 2:].flip(-1)
        raster = y[:, 0] + y_rev[:, 0]
        cols = y[:, 1] + y_rev[:, 1]
        return raster + cols.reshape(b, d, w, h).transpose(2, 3).reshape(b, d, L)

    def forward_core(self, x):
        b, d, h, w = x.shape
        L = h * w
        K = self.directions
        work = _work_dtype(x)
        xs = self._sequences(x)  # (b, K, d, L)
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)
        x_dbl = self.x_conv(x_dbl.reshape(b, -1, L)).reshape(b, K, -1, L)
        dts, Bs, Cs = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)
        y = selective_scan(
            xs.to(work).reshape(b, -1, L),
            dts.contiguous().to(work).reshape(b, -1, L),
            -torch.exp(self.A_logs.to(work)),
            Bs.to(work).contiguous(),
            Cs.to(work).contiguous(),
            self.Ds.to(work),
            z=None,
            delta_bias=self.dt_projs_bias.to(work).reshape(-1),
            delta_softplus=True,
        ).reshape(b, K, -1, L)
        return self._merge(y, h, w)

    def forward(self, x):
        """(b, c, h, w) -> (b, c, h, w)."""
        b, c, h, w = x.shape
        xz = self.in_proj(x.permute(0, 2, 3, 1))
        x, z = xz.chunk(2, dim=-1)
        x = self.act(self.conv2d(x.permute(0, 3, 1, 2).contiguous()))
        y = self.forward_core(x)  # (b, d, L), work dtype
        y = self.out_norm(y.transpose(1, 2).reshape(b, h, w, -1))
        y = y * F.gelu(z)
        return self.out_proj(y).permute(0, 3, 1, 2)


# ---------------------------------------------------------------------------------------------
# overlapping windows (the reference's EVS.grids / EVS.grids_inverse)

def window_starts(size: int, k: int) -> list[int]:
    """Start offsets of the windows of size ``min(size, k)`` along one axis: a regular step of
    ``ceil((size - k) / (n - 1))`` for ``n = ceil(size / k)`` windows, the last one moved back to end
    at the border (the reference's placement, including its ``- 1e-8`` guard)."""
    k = min(size, k)
    n = (size - 1) // k + 1
    step = k if n == 1 else math.ceil((size - k) / (n - 1) - 1e-8)
    starts, i = [], 0
    while True:
        if i + k >= size:
            starts.append(size - k)
            return starts
        starts.append(i)
        i += step


def split_windows(x: torch.Tensor, k: int):
    """(b, c, h, w) -> (n_windows * b, c, kh, kw), windows in row-major order of their positions.
    Batch b > 1 is supported (the reference asserts b == 1): window t of sample s is row t*b + s."""
    b, c, h, w = x.shape
    pos = [(i, j) for i in window_starts(h, k) for j in window_starts(w, k)]
    kh, kw = min(h, k), min(w, k)
    parts = torch.cat([x[:, :, i:i + kh, j:j + kw] for i, j in pos], dim=0)
    return parts, pos


def merge_windows(parts: torch.Tensor, pos, size) -> torch.Tensor:
    """Inverse of ``split_windows``: sum of the windows at their positions divided by the number of
    windows covering each pixel; accumulators in the dtype of ``parts``."""
    b, c, h, w = size
    kh, kw = parts.shape[-2:]
    out = parts.new_zeros((b, c, h, w))
    count = parts.new_zeros((b, 1, h, w))
    for t, (i, j) in enumerate(pos):
        out[:, :, i:i + kh, j:j + kw] += parts[t * b:(t + 1) * b]
        count[:, :, i:i + kh, j:j + kw] += 1.0
    return out / count
