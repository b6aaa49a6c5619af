"""Mamba-1 and Mamba-2 blocks: mamba-ssm parameter names and shapes, forward against hand-written
sequential recurrences, backend agreement, gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ssmrepro.ssm.mamba1 import Mamba
from ssmrepro.ssm.mamba2 import Mamba2, RMSNormGated, segsum, ssd_chunked
from ssmrepro.ssm.scan import scan_backend


def perturbed(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """float64 copy with every parameter moved off its trivial init (ones, zeros, ramps)."""
    module = module.double()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return module


def causal_depthwise_conv(x, weight, bias):
    """x (b, c, l), weight (c, 1, k): out[t] = bias + sum_j weight[j] * x[t - k + 1 + j]."""
    k = weight.shape[-1]
    xp = F.pad(x, (k - 1, 0))
    out = sum(weight[:, 0, j, None] * xp[..., j:j + x.shape[-1]] for j in range(k))
    return out + bias[:, None] if bias is not None else out


# ---- Mamba-1 ---------------------------------------------------------------------------------

MAMBA1_SHAPES_48 = {
    "A_log": (96, 16),
    "D": (96,),
    "in_proj.weight": (192, 48),
    "conv1d.weight": (96, 1, 4),
    "conv1d.bias": (96,),
    "x_proj.weight": (3 + 32, 96),
    "dt_proj.weight": (96, 3),
    "dt_proj.bias": (96,),
    "out_proj.weight": (48, 96),
}


def test_mamba1_parameter_names_and_shapes():
    m = Mamba(48)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == MAMBA1_SHAPES_48
    assert list(m.state_dict()) == list(MAMBA1_SHAPES_48)  # mamba-ssm's order
    # S4D-real init and dt init as mamba-ssm
    torch.testing.assert_close(-torch.exp(m.A_log[0]), -torch.arange(1.0, 17.0))
    dt = F.softplus(m.dt_proj.bias)
    assert (dt >= 1e-4 - 1e-9).all() and (dt <= 0.1 + 1e-6).all()


def mamba1_sequential(m: Mamba, hs: torch.Tensor) -> torch.Tensor:
    """Mamba-1 forward written out step by step (mamba-ssm's slow path)."""
    length = hs.shape[1]
    xz = hs @ m.in_proj.weight.t()
    x, z = xz.transpose(1, 2).chunk(2, dim=1)  # (b, d_inner, l)
    x = F.silu(causal_depthwise_conv(x, m.conv1d.weight, m.conv1d.bias))
    x_dbl = x.transpose(1, 2) @ m.x_proj.weight.t()
    dt, B, C = torch.split(x_dbl, [m.dt_rank, m.d_state, m.d_state], dim=-1)
    dt = F.softplus(dt @ m.dt_proj.weight.t() + m.dt_proj.bias)  # (b, l, d_inner)
    A = -torch.exp(m.A_log)
    h = x.new_zeros(x.shape[0], m.d_inner, m.d_state)
    ys = []
    for t in range(length):
        h = torch.exp(dt[:, t, :, None] * A) * h + (dt[:, t] * x[..., t])[..., None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1) + m.D * x[..., t])
    y = torch.stack(ys, dim=-1) * F.silu(z)
    return y.transpose(1, 2) @ m.out_proj.weight.t()


@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_mamba1_forward_equals_sequential(backend):
    torch.manual_seed(0)
    m = perturbed(Mamba(12, d_state=5, d_conv=3), seed=1)
    hs = torch.randn(2, 23, 12, dtype=torch.float64)
    with scan_backend(backend):
        out = m(hs)
    torch.testing.assert_close(out, mamba1_sequential(m, hs), rtol=1e-10, atol=1e-12)


def test_mamba1_backends_agree_with_gradients():
    torch.manual_seed(1)
    m = Mamba(16, d_state=4)
    hs = torch.randn(2, 40, 16)
    results = {}
    for backend in ("reference", "chunked"):
        m.zero_grad()
        x = hs.clone().requires_grad_()
        with scan_backend(backend):
            out = m(x)
        (out * torch.cos(torch.arange(out.numel()).reshape(out.shape))).sum().backward()
        results[backend] = (out.detach(), x.grad, {k: p.grad.clone() for k, p in m.named_parameters()})
    (o_r, gx_r, gp_r), (o_c, gx_c, gp_c) = results["reference"], results["chunked"]
    torch.testing.assert_close(o_c, o_r, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(gx_c, gx_r, rtol=1e-4, atol=1e-5)
    for k in gp_r:
        torch.testing.assert_close(gp_c[k], gp_r[k], rtol=1e-4, atol=1e-5, msg=k)


def test_mamba1_bad_input():
    with pytest.raises(ValueError, match=r"Mamba: hidden_states must be \(batch, length, 8\)"):
        Mamba(8)(torch.randn(2, 5, 7))


# ---- Mamba-2 (SSD) ---------------------------------------------------------------------------

def ssd_sequential(x, dt, A, B, C, initial_state=None):
    """state_t = exp(dt_t A) state_{t-1} + dt_t x_t B_t^T, y_t = state_t C_t, step by step."""
    b, length, h, p = x.shape
    rep = h // B.shape[2]
    Bh, Ch = B.repeat_interleave(rep, 2), C.repeat_interleave(rep, 2)
    s = x.new_zeros(b, h, p, B.shape[3]) if initial_state is None else initial_state
    ys = []
    for t in range(length):
        s = (torch.exp(dt[:, t] * A)[..., None, None] * s
             + (dt[:, t, :, None] * x[:, t])[..., None] * Bh[:, t, :, None, :])
        ys.append(torch.einsum("bhpn,bhn->bhp", s, Ch[:, t]))
    return torch.stack(ys, 1), s


@settings(max_examples=20, deadline=None)
@given(b=st.integers(1, 2), length=st.integers(1, 40),
       heads_groups=st.sampled_from([(1, 1), (2, 1), (2, 2), (4, 2)]), p=st.integers(1, 3),
       n=st.integers(1, 4), chunk=st.sampled_from([1, 3, 8, 64]), seed=st.integers(0, 999),
       with_init=st.booleans())
def test_ssd_chunked_equals_sequential(b, length, heads_groups, p, n, chunk, seed, with_init):
    h, g = heads_groups
    gen = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64)

    x, B, C = r(b, length, h, p), r(b, length, g, n), r(b, length, g, n)
    dt = F.softplus(r(b, length, h))
    A = -torch.exp(r(h))
    init = r(b, h, p, n) if with_init else None
    y, last = ssd_chunked(x, dt, A, B, C, chunk, initial_state=init, return_final_state=True)
    y_ref, last_ref = ssd_sequential(x, dt, A, B, C, init)
    torch.testing.assert_close(y, y_ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(last, last_ref, rtol=1e-10, atol=1e-12)


def test_ssd_extreme_decays_are_finite():
    gen = torch.Generator().manual_seed(3)
    x, B, C = (torch.randn(1, 70, 2, 2, generator=gen), torch.randn(1, 70, 1, 3, generator=gen),
               torch.randn(1, 70, 1, 3, generator=gen))
    dt = torch.full((1, 70, 2), 30.0)
    A = torch.tensor([-20.0, -0.5])
    y = ssd_chunked(x, dt, A, B, C, 32)
    assert torch.isfinite(y).all()
    torch.testing.assert_close(y, ssd_sequential(x, dt, A, B, C)[0], rtol=1e-4, atol=1e-4)


def test_segsum():
    x = torch.tensor([1.0, 2.0, 3.0])
    s = segsum(x)
    assert s[2, 0] == 5 and s[2, 1] == 3 and s[1, 1] == 0 and s[0, 2] == float("-inf")


MAMBA2_SHAPES_48 = {  # d_model 48, expand 2, headdim 16 -> d_inner 96, 6 heads; d_state 64
    "dt_bias": (6,),
    "A_log": (6,),
    "D": (6,),
    "in_proj.weight": (2 * 96 + 2 * 64 + 6, 48),
    "conv1d.weight": (96 + 2 * 64, 1, 4),
    "conv1d.bias": (96 + 2 * 64,),
    "norm.weight": (96,),
    "out_proj.weight": (48, 96),
}


def test_mamba2_parameter_names_and_shapes():
    m = Mamba2(48, headdim=16)
    assert m.d_state == 64 and m.nheads == 6 and m.chunk_size == 256
    assert list(m.state_dict()) == list(MAMBA2_SHAPES_48)  # mamba-ssm's order
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == MAMBA2_SHAPES_48
    m2 = Mamba2(32, d_state=16, headdim=8, ngroups=2, D_has_hdim=True)
    shapes = {k: tuple(v.shape) for k, v in m2.state_dict().items()}
    assert shapes["in_proj.weight"] == (2 * 64 + 2 * 2 * 16 + 8, 32)
    assert shapes["D"] == (64,) and shapes["conv1d.weight"] == (64 + 64, 1, 4)
    assert (-torch.exp(m.A_log) <= -1).all() and (-torch.exp(m.A_log) >= -16).all()


def mamba2_sequential(m: Mamba2, u: torch.Tensor) -> torch.Tensor:
    """Mamba-2 forward with the scan written out step by step."""
    b, length, _ = u.shape
    zxbcdt = u @ m.in_proj.weight.t()
    z, xBC, dt = torch.split(zxbcdt, [m.d_inner, m.d_inner + 2 * m.ngroups * m.d_state, m.nheads], -1)
    xBC = F.silu(causal_depthwise_conv(xBC.transpose(1, 2), m.conv1d.weight, m.conv1d.bias)).transpose(1, 2)
    x, B, C = torch.split(xBC, [m.d_inner, m.ngroups * m.d_state, m.ngroups * m.d_state], -1)
    x = x.reshape(b, length, m.nheads, m.headdim)
    dt = F.softplus(dt + m.dt_bias)
    y, _ = ssd_sequential(x, dt, -torch.exp(m.A_log), B.reshape(b, length, m.ngroups, -1),
                          C.reshape(b, length, m.ngroups, -1))
    D = m.D.reshape(m.nheads, m.headdim) if m.D_has_hdim else m.D[:, None]
    y = (y + x * D).reshape(b, length, m.d_inner)
    if m.rmsnorm:  # gated RMSNorm: gate first, then normalise each group
        y = (y * F.silu(z)).reshape(b, length, m.ngroups, -1)
        y = (y / torch.sqrt(y.pow(2).mean(-1, keepdim=True) + 1e-5)).reshape(b, length, -1) * m.norm.weight
    else:
        y = y * F.silu(z)
    return y @ m.out_proj.weight.t()


@pytest.mark.parametrize("kw", [
    dict(d_model=16, d_state=8, headdim=8, chunk_size=5),
    dict(d_model=16, d_state=4, headdim=4, ngroups=2, chunk_size=64, D_has_hdim=True),
    dict(d_model=8, d_state=3, headdim=4, chunk_size=4, rmsnorm=False, d_conv=2),
])
def test_mamba2_forward_equals_sequential(kw):
    torch.manual_seed(0)
    m = perturbed(Mamba2(**kw), seed=2)
    u = torch.randn(2, 19, kw["d_model"], dtype=torch.float64)
    torch.testing.assert_close(m(u), mamba2_sequential(m, u), rtol=1e-10, atol=1e-12)


def test_mamba2_shapes_gradients_and_causality():
    torch.manual_seed(0)
    m = Mamba2(16, d_state=8, headdim=8, chunk_size=8)
    u = torch.randn(2, 21, 16, requires_grad=True)
    out = m(u)
    assert out.shape == (2, 21, 16) and out.dtype == torch.float32
    out.square().sum().backward()
    assert u.grad is not None and torch.isfinite(u.grad).all()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    with torch.no_grad():  # changing the future does not change the past
        u2 = u.detach().clone()
        u2[:, 15:] += 1.0
        torch.testing.assert_close(m(u2)[:, :15], out.detach()[:, :15], rtol=1e-5, atol=1e-6)


def test_gated_rmsnorm():
    norm = RMSNormGated(6, eps=1e-5, group_size=3)
    with torch.no_grad():
        norm.weight.copy_(torch.arange(1.0, 7.0))
    x, z = torch.randn(2, 6), torch.randn(2, 6)
    g = (x * F.silu(z)).reshape(2, 2, 3)
    want = (g / torch.sqrt(g.pow(2).mean(-1, keepdim=True) + 1e-5)).reshape(2, 6) * norm.weight
    torch.testing.assert_close(norm(x, z), want)
    assert list(norm.state_dict()) == ["weight"]


def test_mamba2_bad_config_and_input():
    with pytest.raises(ValueError, match="multiple of headdim=64"):
        Mamba2(48)  # d_inner 96
    with pytest.raises(ValueError, match="ngroups=4 must divide nheads=2"):
        Mamba2(16, headdim=16, ngroups=4)
    with pytest.raises(ValueError, match=r"Mamba2: input must be \(batch, length, 16\)"):
        Mamba2(16, headdim=16)(torch.randn(1, 4, 8))


@pytest.mark.parametrize("backend", ["reference", "chunked"])
def test_mamba2_under_scan_backend_equals_ssd(backend):
    """Inside scan_backend(...) the SSD runs as the equivalent Mamba-1 selective scan."""
    torch.manual_seed(0)
    m = perturbed(Mamba2(16, d_state=4, headdim=4, ngroups=2, chunk_size=8), seed=4)
    u = torch.randn(2, 13, 16, dtype=torch.float64)
    want = m(u)
    with scan_backend(backend):
        torch.testing.assert_close(m(u), want, rtol=1e-10, atol=1e-12)


def test_mamba2_scan_is_skipped_for_mac_counting():
    from ssmrepro.complexity import count_macs

    m = Mamba2(16, d_state=8, headdim=8, chunk_size=8).eval()
    u = torch.randn(1, 20, 16)
    conv_linear = (16 * m.in_proj.out_features + m.conv1d.out_channels * m.d_conv + m.d_inner * 16) * 20
    macs = count_macs(m, u)
    assert conv_linear <= macs < conv_linear * 1.2  # projections and conv (+ norm), no SSD einsums
