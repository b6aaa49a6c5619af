"""VMamba's SS2D mixer (Liu et al., "VMamba: Visual State Space Model"; reference MzeroMiko/VMamba
``vmamba.py``, class ``SS2Dv0``), the "VMamba" ordering of SEM-Net Table 1.

Layout: input and output are (b, d_model, H, W) maps. The projections are ``nn.Linear`` applied on
a channels-last view, so the parameter names and shapes are the reference's (v0):

    in_proj (d_model -> 2 d_inner, no bias); conv2d (depth-wise d_conv x d_conv, bias);
    x_proj_weight (K=4, dt_rank + 2 d_state, d_inner); dt_projs_weight (4, d_inner, dt_rank);
    dt_projs_bias (4, d_inner); A_logs (4 d_inner, d_state); Ds (4 d_inner);
    out_norm (LayerNorm d_inner); out_proj (d_inner -> d_model, no bias).

Forward: ``x, z = in_proj(x)``; ``x = SiLU(dwconv(x))``; the four cross-scan sequences (row-major,
column-major, and both reversed: ``ssmrepro.ssm.orders.cross_scan``); per direction k
``dt, B, C = x_proj_k(x_k)``, ``dt = dt_proj_k(dt)``; one selective scan over the 4 d_inner channels
(the directions folded into the channel dimension; B and C grouped, one group per direction;
softplus(dt + bias); A = -exp(A_logs); D skip); the sequences put back in place and summed
(``cross_merge``); ``LayerNorm``; ``y * SiLU(z)``; ``out_proj``.

Initialisation follows the reference: x_proj rows as ``nn.Linear`` default, dt_proj as Mamba
(softplus(bias) log-uniform in [1e-3, 1e-1]), A = -(1..N) per channel, D = 1, per direction; the
random initialisers are called in the reference's order and the parameters registered in its
order, so under the same seed ``SS2D(d)`` starts from the same weights as ``SS2Dv0(d_model=d)``.
The scan runs in float32 (float64 for float64 inputs) through ``ssmrepro.ssm.selective_scan``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..ssm.mamba1 import init_A_log, init_dt_proj
from ..ssm.orders import cross_merge, cross_scan
from ..ssm.scan import selective_scan

K_DIRECTIONS = 4


class SS2D(nn.Module):
    """Four-direction selective-scan 2-D mixer: (b, d_model, H, W) -> (b, d_model, H, W)."""

    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 3, expand: float = 2,
                 dt_rank: int | str = "auto", dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init: str = "random", dt_scale: float = 1.0, dt_init_floor: float = 1e-4,
                 conv_bias: bool = True, bias: bool = False):
        super().__init__()
        if d_conv % 2 == 0:
            raise ValueError(f"SS2D: d_conv must be odd (same-size depth-wise conv), got {d_conv}")
        self.d_model = d_model
        self.d_state = d_state
        self.d_inner = d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        K, R, N = K_DIRECTIONS, self.dt_rank, d_state

        self.in_proj = nn.Linear(d_model, d_inner * 2, bias=bias)
        self.conv2d = nn.Conv2d(d_inner, d_inner, kernel_size=d_conv, padding=(d_conv - 1) // 2,
                                groups=d_inner, bias=conv_bias)
        x_projs = [nn.Linear(d_inner, R + 2 * N, bias=False) for _ in range(K)]
        self.x_proj_weight = nn.Parameter(torch.stack([p.weight for p in x_projs], dim=0))
        dt_projs = []
        for _ in range(K):  # created and initialised one after the other, as the reference
            dt_projs.append(nn.Linear(R, d_inner, bias=True))
            init_dt_proj(dt_projs[-1], R, dt_init, dt_scale, dt_min, dt_max, dt_init_floor)
        # registration order as the reference (A_logs, Ds, dt_projs_weight, dt_projs_bias)
        self.A_logs = nn.Parameter(init_A_log(d_inner, N).repeat(K, 1))  # (K * d_inner, N)
        self.Ds = nn.Parameter(torch.ones(K * d_inner))
        self.dt_projs_weight = nn.Parameter(torch.stack([p.weight for p in dt_projs], dim=0))
        self.dt_projs_bias = nn.Parameter(torch.stack([p.bias for p in dt_projs], dim=0))
        self.A_logs._no_weight_decay = True
        self.Ds._no_weight_decay = True
        self.out_norm = nn.LayerNorm(d_inner)
        self.out_proj = nn.Linear(d_inner, d_model, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.d_model:
            raise ValueError(f"SS2D: input must be (batch, {self.d_model}, H, W), got {tuple(x.shape)}")
        b, _, h, w = x.shape
        L, K, N, R = h * w, K_DIRECTIONS, self.d_state, self.dt_rank
        xz = self.in_proj(x.permute(0, 2, 3, 1))  # (b, h, w, 2 d_inner)
        u, z = xz.chunk(2, dim=-1)
        u = F.silu(self.conv2d(u.permute(0, 3, 1, 2)))  # (b, d_inner, h, w)

        xs = cross_scan(u)  # (b, K, d_inner, L)
        x_dbl = torch.einsum("bkdl,kcd->bkcl", xs, self.x_proj_weight)
        dts, Bs, Cs = torch.split(x_dbl, [R, N, N], dim=2)
        dts = torch.einsum("bkrl,kdr->bkdl", dts, self.dt_projs_weight)

        work = torch.float64 if x.dtype == torch.float64 else torch.float32
        y = selective_scan(
            xs.reshape(b, K * self.d_inner, L).to(work), dts.reshape(b, K * self.d_inner, L).to(work),
            -torch.exp(self.A_logs.to(work)), Bs.to(work).contiguous(), Cs.to(work).contiguous(),
            self.Ds.to(work), delta_bias=self.dt_projs_bias.reshape(-1).to(work), delta_softplus=True,
        ).reshape(b, K, self.d_inner, L)
        y = cross_merge(y, h, w).permute(0, 2, 3, 1)  # (b, h, w, d_inner)
        y = self.out_norm(y.to(x.dtype)) * F.silu(z)
        return self.out_proj(y).permute(0, 3, 1, 2)
