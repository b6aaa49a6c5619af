"""Mamba-2 block (SSD) with the parameter names and shapes of mamba-ssm's ``Mamba2``
(mamba_ssm/modules/mamba2.py), so state dicts load either way. Used for EVSSM2 (EVSSM supplement,
Table 9).

Parameters (d_inner = expand * d_model, nheads = d_inner / headdim, g = ngroups, n = d_state):
    in_proj.weight   (2*d_inner + 2*g*n + nheads, d_model)   order of outputs: [z, x, B, C, dt]
    conv1d.weight    (d_inner + 2*g*n, 1, d_conv), conv1d.bias (same channels): causal, depth-wise,
                     over [x, B, C], then SiLU
    dt_bias (nheads), A_log (nheads), D (nheads; (d_inner,) with D_has_hdim)
    norm.weight      (d_inner): gated RMSNorm, y * silu(z) then RMS-normalised per group of
                     d_inner / g channels (norm_before_gate=False, eps 1e-5)
    out_proj.weight  (d_model, d_inner)
Differences from mamba-ssm's defaults: ``d_state`` defaults to 64 here (mamba-ssm: 128); the MLP
split (``d_ssm``), tensor parallelism and inference caches are not implemented.

The scan is the SSD chunked algorithm in pure PyTorch (``ssd_chunked``, after mamba-ssm's
``ssd_minimal_discrete``): within a chunk of ``chunk_size`` steps the output is a masked
"attention" with decays exp(segsum(dt * A)) (sums of masked copies taken before exp, so nothing
overflows); chunk states are carried by a short loop over chunks. It computes in float32
(float64 when the parameters are float64), as mamba-ssm's kernels compute in float32.
Memory: the within-chunk decay matrices take batch * nheads * length * chunk_size numbers.

Inside ``scan_backend(name)`` the SSD runs instead as the equivalent Mamba-1 selective scan
(``ssd_as_selective_scan``: channels = heads x headdim, A and dt repeated over headdim, B/C
grouped), through ``selective_scan`` with that backend. So the MAC counter's ``skip`` and
``count`` backends exclude / count it like every other scan, and ``reference`` checks it.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


def segsum(x: torch.Tensor) -> torch.Tensor:
    """(..., T) -> (..., T, T): out[..., i, j] = x[j+1] + ... + x[i] for i >= j, -inf above the
    diagonal. Sums of masked copies (no difference of two large cumulative sums), so exp() of it
    is exact to rounding and never overflows for x <= 0."""
    T = x.shape[-1]
    rep = x.unsqueeze(-1).expand(*x.shape, T)  # rep[..., i, j] = x[i]
    strict = torch.ones(T, T, dtype=torch.bool, device=x.device).tril(-1)
    out = rep.masked_fill(~strict, 0).cumsum(-2)
    lower = torch.ones(T, T, dtype=torch.bool, device=x.device).tril(0)
    return out.masked_fill(~lower, float("-inf"))


def ssd_chunked(x, dt, A, B, C, chunk_size: int, initial_state=None, return_final_state=False):
    """SSD scan. x (b, l, h, p), dt (b, l, h) (already positive), A (h,) (negative),
    B, C (b, l, g, n) with g dividing h. Returns y (b, l, h, p) (and the final state (b, h, p, n)).

        state_t = exp(dt_t A) state_{t-1} + dt_t x_t B_t^T,   y_t = state_t C_t
    """
    b, length, h, p = x.shape
    g, n = B.shape[2], B.shape[3]
    if h % g:
        raise ValueError(f"ssd_chunked: groups g={g} must divide heads h={h}")
    T = max(1, min(int(chunk_size), length))
    pad = (-length) % T
    X = x * dt.unsqueeze(-1)
    Adt = dt * A  # (b, l, h)
    if pad:  # padded steps come last: they cannot change earlier outputs
        X = F.pad(X, (0, 0, 0, 0, 0, pad))
        Adt = F.pad(Adt, (0, 0, 0, pad))
        B = F.pad(B, (0, 0, 0, 0, 0, pad))
        C = F.pad(C, (0, 0, 0, 0, 0, pad))
    nc = (length + pad) // T
    rep = h // g
    X = X.reshape(b, nc, T, h, p)
    Adt = Adt.reshape(b, nc, T, h).permute(0, 3, 1, 2)  # (b, h, c, T)
    Bh = B.reshape(b, nc, T, g, n).repeat_interleave(rep, dim=3)  # (b, c, T, h, n)
    Ch = C.reshape(b, nc, T, g, n).repeat_interleave(rep, dim=3)
    Acum = Adt.cumsum(-1)  # (b, h, c, T)

    # 1. within chunks: y_l = sum_{s <= l} (C_l . B_s) exp(A(l..s]) X_s
    Lmat = torch.exp(segsum(Adt))  # (b, h, c, T, T)
    scores = torch.einsum("bclhn,bcshn->bhcls", Ch, Bh) * Lmat
    y = torch.einsum("bhcls,bcshp->bclhp", scores, X)

    # 2. each chunk's final state from a zero start
    decay_to_end = torch.exp(Acum[..., -1:] - Acum)  # (b, h, c, T), exponents <= 0
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", Bh, decay_to_end, X)

    # 3. carry across chunks (a short loop; decays exp(<= 0))
    chunk_decay = torch.exp(Acum[..., -1])  # (b, h, c)
    prev = (x.new_zeros((b, h, p, n)) if initial_state is None
            else initial_state.to(states.dtype))
    starts = []
    for c in range(nc):
        starts.append(prev)
        prev = chunk_decay[:, :, c, None, None] * prev + states[:, c]
    starts = torch.stack(starts, dim=1)  # (b, c, h, p, n)

    # 4. contribution of each chunk's initial state
    y = y + torch.einsum("bclhn,bchpn,bhcl->bclhp", Ch, starts, torch.exp(Acum))
    y = y.reshape(b, nc * T, h, p)[:, :length]
    return (y, prev) if return_final_state else y


def ssd_as_selective_scan(x, dt, A, B, C, D=None, z=None, backend="auto"):
    """The SSD scan written as a Mamba-1 selective scan, through ``selective_scan``.
    x (b, l, h, p), dt (b, l, h) positive, A (h,), B, C (b, l, g, n), D (h,) or (h*p,),
    z (b, l, h*p) or None. Returns (y + D x) [* silu(z)] as (b, l, h, p)."""
    from .scan import selective_scan

    b, length, h, p = x.shape
    n = B.shape[-1]
    u = x.permute(0, 2, 3, 1).reshape(b, h * p, length)
    delta = dt.permute(0, 2, 1).repeat_interleave(p, dim=1)
    A_full = A.repeat_interleave(p)[:, None].expand(h * p, n)
    if D is not None and D.numel() == h:
        D = D.repeat_interleave(p)
    y = selective_scan(u, delta, A_full, B.permute(0, 2, 3, 1), C.permute(0, 2, 3, 1), D,
                       z=None if z is None else z.transpose(1, 2), backend=backend)
    return y.reshape(b, h, p, length).permute(0, 3, 1, 2)


class RMSNormGated(nn.Module):
    """mamba-ssm's gated RMSNorm (``layernorm_gated.RMSNorm``): parameter ``weight`` only."""

    def __init__(self, hidden_size: int, eps: float = 1e-5, group_size: int | None = None,
                 norm_before_gate: bool = False):
        super().__init__()
        self.eps = eps
        self.group_size = group_size or hidden_size
        self.norm_before_gate = norm_before_gate
        self.weight = nn.Parameter(torch.ones(hidden_size))

    def forward(self, x: torch.Tensor, z: torch.Tensor | None = None) -> torch.Tensor:
        dtype = x.dtype
        work = torch.float64 if dtype == torch.float64 else torch.float32
        x = x.to(work)
        if z is not None and not self.norm_before_gate:
            x = x * F.silu(z.to(work))
        xg = x.unflatten(-1, (-1, self.group_size))
        xg = xg * torch.rsqrt(xg.square().mean(-1, keepdim=True) + self.eps)
        out = xg.flatten(-2) * self.weight.to(work)
        if z is not None and self.norm_before_gate:
            out = out * F.silu(z.to(work))
        return out.to(dtype)


class Mamba2(nn.Module):
    def __init__(self, d_model: int, d_state: int = 64, d_conv: int = 4, expand: int = 2,
                 headdim: int = 64, ngroups: int = 1, chunk_size: int = 256,
                 A_init_range: tuple[float, float] = (1, 16), D_has_hdim: bool = False,
                 rmsnorm: bool = True, norm_before_gate: bool = False, dt_min: float = 0.001,
                 dt_max: float = 0.1, dt_init_floor: float = 1e-4,
                 dt_limit: tuple[float, float] = (0.0, float("inf")), bias: bool = False,
                 conv_bias: bool = True, conv_init: float | None = None):
        super().__init__()
        self.d_model = d_model
        self.d_state = d_state
        self.d_conv = d_conv
        self.expand = expand
        self.d_inner = int(expand * d_model)
        self.headdim = headdim
        self.ngroups = ngroups
        self.chunk_size = chunk_size
        self.D_has_hdim = D_has_hdim
        self.rmsnorm = rmsnorm
        self.norm_before_gate = norm_before_gate
        self.dt_limit = tuple(dt_limit)
        if self.d_inner % headdim:
            raise ValueError(f"Mamba2: d_inner = expand * d_model = {self.d_inner} must be a "
                             f"multiple of headdim={headdim}")
        self.nheads = self.d_inner // headdim
        if self.nheads % ngroups:
            raise ValueError(f"Mamba2: ngroups={ngroups} must divide nheads={self.nheads}")
        d_in_proj = 2 * self.d_inner + 2 * ngroups * d_state + self.nheads
        self.in_proj = nn.Linear(d_model, d_in_proj, bias=bias)
        conv_dim = self.d_inner + 2 * ngroups * d_state
        self.conv1d = nn.Conv1d(conv_dim, conv_dim, kernel_size=d_conv, groups=conv_dim,
                                padding=d_conv - 1, bias=conv_bias)
        if conv_init is not None:
            nn.init.uniform_(self.conv1d.weight, -conv_init, conv_init)
        dt = torch.exp(torch.rand(self.nheads) * (math.log(dt_max) - math.log(dt_min))
                       + math.log(dt_min)).clamp(min=dt_init_floor)
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # inverse softplus
        self.dt_bias._no_weight_decay = True
        if not (A_init_range[0] > 0 and A_init_range[1] >= A_init_range[0]):
            raise ValueError(f"Mamba2: A_init_range must be 0 < lo <= hi, got {A_init_range}")
        self.A_log = nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(*A_init_range)))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner if D_has_hdim else self.nheads))
        self.D._no_weight_decay = True
        if rmsnorm:
            self.norm = RMSNormGated(self.d_inner, eps=1e-5, group_size=self.d_inner // ngroups,
                                     norm_before_gate=norm_before_gate)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def ssm_inputs(self, u: torch.Tensor):
        """Everything before the scan: (x (b,l,h,p), dt (b,l,h), A (h,), B, C (b,l,g,n), z)."""
        b, length, _ = u.shape
        g, n, h = self.ngroups, self.d_state, self.nheads
        zxbcdt = self.in_proj(u)
        z, xBC, dt = torch.split(zxbcdt, [self.d_inner, self.d_inner + 2 * g * n, h], dim=-1)
        xBC = F.silu(self.conv1d(xBC.transpose(1, 2))[..., :length]).transpose(1, 2)
        x, B, C = torch.split(xBC, [self.d_inner, g * n, g * n], dim=-1)
        work = torch.float64 if self.A_log.dtype == torch.float64 else torch.float32
        A = -torch.exp(self.A_log.to(work))
        dt = F.softplus(dt.to(work) + self.dt_bias.to(work))
        if self.dt_limit != (0.0, float("inf")):
            dt = dt.clamp(*self.dt_limit)
        return (x.to(work).reshape(b, length, h, self.headdim), dt, A,
                B.to(work).reshape(b, length, g, n), C.to(work).reshape(b, length, g, n), z)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """(batch, length, d_model) -> (batch, length, d_model)."""
        if u.dim() != 3 or u.shape[-1] != self.d_model:
            raise ValueError(f"Mamba2: input must be (batch, length, {self.d_model}), "
                             f"got {tuple(u.shape)}")
        from .scan import scan_override

        b, length, _ = u.shape
        x, dt, A, B, C, z = self.ssm_inputs(u)
        D = self.D.to(x.dtype)
        if scan_override() is None:
            y = ssd_chunked(x, dt, A, B, C, self.chunk_size)
            y = y + x * (D.reshape(self.nheads, self.headdim) if self.D_has_hdim else D[:, None])
        else:  # an explicit scan backend (MAC counting, reference checks): the Mamba-1 form
            y = ssd_as_selective_scan(x, dt, A, B, C, D)
        y = y.reshape(b, length, self.d_inner)
        if self.rmsnorm:
            y = self.norm(y, z)
        else:
            y = y * F.silu(z.to(y.dtype))
        return self.out_proj(y.to(u.dtype))
