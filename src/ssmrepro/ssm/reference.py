"""The reference selective scan: a plain loop over the sequence, the semantics of mamba-ssm's
``selective_scan_ref`` (mamba_ssm/ops/selective_scan_interface.py, v2.2.2). Every other backend is
tested against this one.

Shapes (b batch, d channels, n state size, l length, g groups):
    u, delta, z: (b, d, l); A: (d, n); D, delta_bias: (d,)
    B, C: (d, n) constant, (b, n, l) input-dependent, or (b, g, n, l) grouped (d divisible by g).

Precision: mamba-ssm computes in float32. Here the computation runs in float32 for float16,
bfloat16 and float32 inputs and in float64 for float64 inputs, so float64 fixtures compare exactly.
The output has the dtype of ``u``; the last state has the compute dtype.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """float64 if any given tensor is float64, else float32."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64 for t in tensors) else torch.float32


def expand_groups(M: torch.Tensor, d: int) -> torch.Tensor:
    """(b, g, n, l) -> (b, d, n, l): group k serves channels k*d/g ... (k+1)*d/g - 1."""
    return M.repeat_interleave(d // M.shape[1], dim=1)


def prepare_delta(delta, delta_bias, delta_softplus, dtype):
    delta = delta.to(dtype)
    if delta_bias is not None:
        delta = delta + delta_bias.to(dtype)[..., None]
    if delta_softplus:
        delta = F.softplus(delta)
    return delta


def finish(y, u, D, z, dtype_in, dtype):
    """y + D*u, gated by silu(z), cast back to the input dtype."""
    out = y if D is None else y + u.to(dtype) * D.to(dtype)[:, None]
    if z is not None:
        out = out * F.silu(z.to(dtype))
    return out.to(dtype_in)


def selective_scan_reference(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                             delta_softplus=False, return_last_state=False):
    dtype_in = u.dtype
    dtype = compute_dtype(u, delta, A, B, C)
    u_c = u.to(dtype)
    delta = prepare_delta(delta, delta_bias, delta_softplus, dtype)
    A = A.to(dtype)
    b, d, l = u.shape
    n = A.shape[1]
    if B.dim() == 4:
        B = expand_groups(B, d)
    if C.dim() == 4:
        C = expand_groups(C, d)
    B = B.to(dtype)
    C = C.to(dtype)
    deltaA = torch.exp(delta.unsqueeze(-1) * A[None, :, None, :])  # (b, d, l, n)
    if B.dim() == 2:
        deltaB_u = (delta * u_c).unsqueeze(-1) * B[None, :, None, :]
    elif B.dim() == 3:
        deltaB_u = (delta * u_c).unsqueeze(-1) * B.transpose(1, 2)[:, None, :, :]
    else:
        deltaB_u = (delta * u_c).unsqueeze(-1) * B.permute(0, 1, 3, 2)
    if C.dim() == 3:
        C = C.unsqueeze(1)  # (b, 1, n, l): broadcast over d
    # unbind (one autograd node) rather than indexing step by step: the same values, but the
    # backward of L separate index operations would cost O(L^2) memory traffic.
    dA_steps, dBu_steps = deltaA.unbind(2), deltaB_u.unbind(2)
    C_steps = C.unbind(-1) if C.dim() == 4 else None
    x = u_c.new_zeros((b, d, n))
    ys = []
    for i in range(l):
        x = dA_steps[i] * x + dBu_steps[i]
        y = (x * (C[None] if C_steps is None else C_steps[i])).sum(-1)
        ys.append(y)
    y = torch.stack(ys, dim=2) if ys else u_c.new_zeros((b, d, 0))
    out = finish(y, u, D, z, dtype_in, dtype)
    return (out, x) if return_last_state else out
