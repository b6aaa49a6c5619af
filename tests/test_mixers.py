"""Alternative SEM-Net mixers of Table 1: VMamba's SS2D against a direction-by-direction loop over
the reference scan, and the 2-D SSM against a step-by-step run of its 2-D recurrence."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssmrepro.nn.ssm2d import SSM2D, causal_conv2d_fft
from ssmrepro.nn.vmamba_ss2d import SS2D
from ssmrepro.ssm.orders import CROSS_SCAN, from_sequence, to_sequence
from ssmrepro.ssm.scan import selective_scan

# --------------------------------------------------------------------------- SS2D


def naive_ss2d(m: SS2D, x: torch.Tensor) -> torch.Tensor:
    """SS2D with one ungrouped reference scan per direction, each in its own scan order."""
    d, n, r = m.d_inner, m.d_state, m.dt_rank
    h, w = x.shape[-2:]
    u, z = m.in_proj(x.permute(0, 2, 3, 1)).chunk(2, dim=-1)
    u = F.silu(m.conv2d(u.permute(0, 3, 1, 2)))
    total = 0
    for k, order in enumerate(CROSS_SCAN):
        seq = to_sequence(u, order)  # (b, d, L)
        dbl = torch.einsum("bdl,cd->bcl", seq, m.x_proj_weight[k])
        dt, B, C = torch.split(dbl, [r, n, n], dim=1)
        dt = torch.einsum("brl,dr->bdl", dt, m.dt_projs_weight[k])
        A = -torch.exp(m.A_logs.reshape(4, d, n)[k])
        y = selective_scan(seq, dt, A, B, C, m.Ds.reshape(4, d)[k], delta_bias=m.dt_projs_bias[k],
                           delta_softplus=True, backend="reference")
        total = total + from_sequence(y, order, h, w)
    y = m.out_norm(total.permute(0, 2, 3, 1)) * F.silu(z)
    return m.out_proj(y).permute(0, 3, 1, 2)


def _perturbed(m: torch.nn.Module, std: float = 0.3) -> torch.nn.Module:
    """Make the directions differ (their initial A and D are identical)."""
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn_like(p) * std)
    return m


def test_ss2d_matches_direction_by_direction_reference():
    torch.manual_seed(0)
    m = _perturbed(SS2D(6, d_state=4)).double()
    x = torch.randn(2, 6, 5, 7, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(m(x), naive_ss2d(m, x), rtol=1e-10, atol=1e-10)


def test_ss2d_shapes_names_and_gradients():
    torch.manual_seed(1)
    m = SS2D(8, d_state=4, d_conv=3, expand=2)
    assert m.dt_rank == 1 and m.d_inner == 16
    shapes = {k: tuple(v.shape) for k, v in m.state_dict().items()}
    assert shapes["x_proj_weight"] == (4, 1 + 2 * 4, 16)
    assert shapes["dt_projs_weight"] == (4, 16, 1) and shapes["dt_projs_bias"] == (4, 16)
    assert shapes["A_logs"] == (64, 4) and shapes["Ds"] == (64,)
    assert shapes["conv2d.weight"] == (16, 1, 3, 3)
    x = torch.randn(2, 8, 4, 6, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape
    y.square().mean().backward()
    assert x.grad.abs().sum() > 0
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    with pytest.raises(ValueError, match="SS2D"):
        m(torch.randn(1, 4, 4, 4))


def test_ss2d_sees_the_whole_map():
    """Every output pixel depends on every input pixel (the four scans cover all four corners)."""
    torch.manual_seed(2)
    m = _perturbed(SS2D(4, d_state=4)).double()
    h, w = 4, 5
    for i, j in [(0, 0), (h - 1, w - 1), (0, w - 1), (2, 2)]:
        x = torch.randn(1, 4, h, w, dtype=torch.float64, requires_grad=True)
        m(x)[0, :, i, j].sum().backward()
        assert (x.grad.abs().sum(1)[0] > 0).all()


# --------------------------------------------------------------------------- 2-D SSM


def roesser_step_by_step(u, a, b, c1, c2):
    """Run the recurrence cell by cell. u (H, W); a (4, N); b (2, N); c1, c2 (N,) (scaled)."""
    hgt, wid = u.shape
    n = a.shape[1]
    xh = torch.zeros(hgt, wid, n, dtype=u.dtype)
    xv = torch.zeros(hgt, wid, n, dtype=u.dtype)
    y = torch.zeros(hgt, wid, dtype=u.dtype)
    for i in range(hgt):
        for j in range(wid):
            hl, vl = (xh[i, j - 1], xv[i, j - 1]) if j > 0 else (0.0, 0.0)
            hu, vu = (xh[i - 1, j], xv[i - 1, j]) if i > 0 else (0.0, 0.0)
            xh[i, j] = a[0] * hl + a[1] * vl + b[0] * u[i, j]
            xv[i, j] = a[2] * hu + a[3] * vu + b[1] * u[i, j]
            y[i, j] = (c1 * xh[i, j]).sum() + (c2 * xv[i, j]).sum()
    return y


def direction_params(m: SSM2D, k: int, c: int):
    """Recurrence parameters that channel c uses in direction k."""
    g = k * m.n_ssm + c // (m.d_model // m.n_ssm)
    a = torch.sigmoid(m.A[:, g])
    b = torch.sigmoid(m.B[:, g])
    return a, b, m.C[0, k, c] * m.scale, m.C[1, k, c] * m.scale


@pytest.mark.parametrize("n_ssm", [1, 3])
def test_ssm2d_fft_path_equals_step_by_step_recurrence_one_direction(n_ssm):
    torch.manual_seed(3)
    m = SSM2D(3, d_state=4, n_ssm=n_ssm, directions=1).double()
    with torch.no_grad():
        m.D.zero_()
        x = torch.randn(2, 3, 5, 7, dtype=torch.float64)
        y = m(x)
        for bi in range(2):
            for c in range(3):
                ref = roesser_step_by_step(x[bi, c], *direction_params(m, 0, c))
                torch.testing.assert_close(y[bi, c], ref, rtol=1e-10, atol=1e-10)


def test_ssm2d_four_directions_are_flipped_recurrences_plus_skip():
    torch.manual_seed(4)
    m = SSM2D(2, d_state=3, directions=4).double()
    flips = [(), (-2,), (-1,), (-2, -1)]
    with torch.no_grad():
        x = torch.randn(1, 2, 5, 7, dtype=torch.float64)
        y = m(x)
        for c in range(2):
            ref = m.D[c] * x[0, c]
            for k, f in enumerate(flips):
                u = x[0, c].flip(f) if f else x[0, c]
                yk = roesser_step_by_step(u, *direction_params(m, k, c))
                ref = ref + (yk.flip(f) if f else yk)
            torch.testing.assert_close(y[0, c], ref, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("flip", [(-2,), (-1,), (-2, -1)])
def test_ssm2d_flip_symmetry(flip):
    """Flipping the input flips the output when the four directions share their parameters; with
    distinct parameters it does so once the directions' parameters are swapped accordingly."""
    torch.manual_seed(5)
    m = SSM2D(3, d_state=4).double()
    x = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    tied = SSM2D(3, d_state=4).double()
    with torch.no_grad():
        tied.load_state_dict(m.state_dict())
        tied.A.copy_(m.A[:, :1].expand_as(m.A))
        tied.B.copy_(m.B[:, :1].expand_as(m.B))
        tied.C.copy_(m.C[:, :1].expand_as(m.C))
        torch.testing.assert_close(tied(x.flip(flip)), tied(x).flip(flip))

        perm = {(-2,): [1, 0, 3, 2], (-1,): [2, 3, 0, 1], (-2, -1): [3, 2, 1, 0]}[flip]
        swapped = SSM2D(3, d_state=4).double()
        swapped.load_state_dict({"A": m.A[:, perm], "B": m.B[:, perm], "C": m.C[:, perm], "D": m.D})
        torch.testing.assert_close(swapped(x.flip(flip)), m(x).flip(flip))
        assert not torch.allclose(m(x.flip(flip)), m(x).flip(flip))  # directions do differ


def test_ssm2d_reference_kernel_form():
    """kernel_form='reference' = the ssm_2d CoeffCalculator kernel: an update whose two
    predecessor states are both non-zero is halved; then the first row and column are doubled."""
    torch.manual_seed(6)
    m = SSM2D(1, d_state=2, directions=1, kernel_form="reference").double()
    hgt, wid = 5, 6
    a, b, c1, c2 = (t.detach() for t in direction_params(m, 0, 0))
    xh = [[None] * wid for _ in range(hgt)]
    xv = [[None] * wid for _ in range(hgt)]
    nz_h = [[False] * wid for _ in range(hgt)]
    nz_v = [[False] * wid for _ in range(hgt)]
    zero = torch.zeros(2, dtype=torch.float64)
    for i in range(hgt):
        for j in range(wid):
            impulse = 1.0 if (i, j) == (0, 0) else 0.0
            ph, pv, nzh, nzv = (xh[i][j - 1], xv[i][j - 1], nz_h[i][j - 1], nz_v[i][j - 1]) if j > 0 \
                else (zero, zero, False, False)
            val = a[0] * ph + a[1] * pv
            xh[i][j] = (val / 2 if nzh and nzv else val) + b[0] * impulse
            nz_h[i][j] = nzh or nzv or impulse != 0
            ph, pv, nzh, nzv = (xh[i - 1][j], xv[i - 1][j], nz_h[i - 1][j], nz_v[i - 1][j]) if i > 0 \
                else (zero, zero, False, False)
            val = a[2] * ph + a[3] * pv
            xv[i][j] = (val / 2 if nzh and nzv else val) + b[1] * impulse
            nz_v[i][j] = nzh or nzv or impulse != 0
    ref = torch.stack([torch.stack([(c1 * xh[i][j]).sum() + (c2 * xv[i][j]).sum() for j in range(wid)])
                       for i in range(hgt)])
    ref[0, :] *= 2
    ref[:, 0] *= 2
    ref[0, 0] /= 4
    torch.testing.assert_close(m.kernel(hgt, wid)[0, 0].detach(), ref, rtol=1e-12, atol=1e-12)


def test_ssm2d_kernel_size_truncates_the_kernel():
    torch.manual_seed(7)
    full = SSM2D(2, d_state=3).double()
    capped = SSM2D(2, d_state=3, kernel_size=3).double()
    capped.load_state_dict(full.state_dict())
    with torch.no_grad():
        kf, kc = full.kernel(6, 5), capped.kernel(6, 5)
    torch.testing.assert_close(kc[..., :3, :3], kf[..., :3, :3])
    assert kc[..., 3:, :].abs().max() == 0 and kc[..., :, 3:].abs().max() == 0


def test_causal_conv2d_fft_matches_direct_sum():
    torch.manual_seed(8)
    x = torch.randn(3, 4, 5, dtype=torch.float64)
    k = torch.randn(3, 4, 5, dtype=torch.float64)
    out = causal_conv2d_fft(x, k)
    ref = torch.zeros_like(x)
    for i in range(4):
        for j in range(5):
            for p in range(i + 1):
                for q in range(j + 1):
                    ref[:, i, j] += k[:, i - p, j - q] * x[:, p, q]
    torch.testing.assert_close(out, ref)


def test_ssm2d_gradients_flow_and_shapes():
    torch.manual_seed(9)
    m = SSM2D(4, d_state=8)
    assert {k: tuple(v.shape) for k, v in m.state_dict().items()} == {
        "A": (4, 4, 8), "B": (2, 4, 8), "C": (2, 4, 4, 8), "D": (4,)}
    x = torch.randn(2, 4, 8, 6, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    y.square().mean().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
    assert torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="SSM2D"):
        m(torch.randn(1, 3, 4, 4))
    with pytest.raises(ValueError, match="kernel_form"):
        SSM2D(4, kernel_form="sympy")
