"""Mamba-1 block with the parameter names and shapes of mamba-ssm's ``Mamba``
(mamba_ssm/modules/mamba_simple.py), so state dicts load either way.

Parameters: in_proj (d_model -> 2*d_inner, no bias), conv1d (depth-wise, kernel d_conv, causal,
bias), x_proj (d_inner -> dt_rank + 2*d_state, no bias), dt_proj (dt_rank -> d_inner, bias),
A_log (d_inner, d_state), D (d_inner), out_proj (d_inner -> d_model, no bias).

The forward pass is mamba-ssm's reference ("slow") path: conv, SiLU, x_proj, dt_proj, the selective
scan with z-gating, out_proj. mamba-ssm's fused GPU path computes the same function. The scan runs
in float32 (float64 when the parameters are float64) whatever the activation dtype.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .scan import selective_scan


class Mamba(nn.Module):
    def __init__(self, d_model: int, d_state: int = 16, d_conv: int = 4, expand: int = 2,
                 dt_rank: int | str = "auto", dt_min: float = 0.001, dt_max: float = 0.1,
                 dt_init: str = "random", dt_scale: float = 1.0, dt_init_floor: float = 1e-4,
                 conv_bias: bool = True, bias: bool = False):
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.in_proj = nn.Linear(d_model, self.d_inner * 2, bias=bias)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, kernel_size=d_conv, groups=self.d_inner,
                                padding=d_conv - 1, bias=conv_bias)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True)
        init_dt_proj(self.dt_proj, self.dt_rank, dt_init, dt_scale, dt_min, dt_max, dt_init_floor)
        self.A_log = nn.Parameter(init_A_log(self.d_inner, d_state))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner))
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        """(batch, length, d_model) -> (batch, length, d_model)."""
        if hidden_states.dim() != 3 or hidden_states.shape[-1] != self.d_model:
            raise ValueError(f"Mamba: hidden_states must be (batch, length, {self.d_model}), "
                             f"got {tuple(hidden_states.shape)}")
        length = hidden_states.shape[1]
        xz = self.in_proj(hidden_states).transpose(1, 2)  # (b, 2*d_inner, l)
        x, z = xz.chunk(2, dim=1)
        x = F.silu(self.conv1d(x)[..., :length])
        x_dbl = self.x_proj(x.transpose(1, 2))  # (b, l, dt_rank + 2n)
        dt, B, C = torch.split(x_dbl, [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.linear(dt, self.dt_proj.weight).transpose(1, 2)  # (b, d_inner, l), bias added in scan
        work = torch.float64 if self.A_log.dtype == torch.float64 else torch.float32
        A = -torch.exp(self.A_log.to(work))
        y = selective_scan(x, dt, A, B.transpose(1, 2).contiguous(), C.transpose(1, 2).contiguous(),
                           self.D.to(work), z=z, delta_bias=self.dt_proj.bias.to(work),
                           delta_softplus=True)
        return self.out_proj(y.transpose(1, 2))


def init_A_log(d_inner: int, d_state: int) -> torch.Tensor:
    """S4D-real initialisation: A = -(1, 2, ..., n) for every channel, stored as log."""
    A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)
    return torch.log(A)


def init_dt_proj(dt_proj: nn.Linear, dt_rank: int, dt_init: str, dt_scale: float, dt_min: float,
                 dt_max: float, dt_init_floor: float) -> None:
    """mamba-ssm's dt initialisation: softplus(bias) log-uniform in [dt_min, dt_max]."""
    std = dt_rank ** -0.5 * dt_scale
    if dt_init == "constant":
        nn.init.constant_(dt_proj.weight, std)
    elif dt_init == "random":
        nn.init.uniform_(dt_proj.weight, -std, std)
    else:
        raise ValueError(f"dt_init must be 'constant' or 'random', got {dt_init!r}")
    d = dt_proj.out_features
    dt = torch.exp(torch.rand(d) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min))
    dt = dt.clamp(min=dt_init_floor)
    inv_dt = dt + torch.log(-torch.expm1(-dt))  # inverse of softplus
    with torch.no_grad():
        dt_proj.bias.copy_(inv_dt)
    dt_proj.bias._no_reinit = True
