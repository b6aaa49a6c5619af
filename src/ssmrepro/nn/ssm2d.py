"""The 2-D SSM layer of Baron, Zimerman & Wolf ("2-D SSM: A General Spatial Layer for Visual
Transformers", arXiv 2306.06635; reference ethanbar11/ssm_2d ``models/mega/two_d_ssm.py``), the
"2-D SSM" ordering of SEM-Net Table 1.

The model is a linear, shift-invariant 2-D Roesser recurrence on the grid (i = row, j = column),
with a horizontal state x^h that travels along j and a vertical state x^v that travels along i,
each of size N (``d_state``) with diagonal transitions:

    x^h[i, j] = A1 x^h[i, j-1] + A2 x^v[i, j-1] + B1 u[i, j]
    x^v[i, j] = A3 x^h[i-1, j] + A4 x^v[i-1, j] + B2 u[i, j]
    y[i, j]   = (C1 . x^h[i, j] + C2 . x^v[i, j]) / sqrt(N)

with zero states outside the grid. Being linear and shift-invariant, ``y = K * u`` for the causal
(top-left) kernel ``K[i, j] = (C1 . h[i, j] + C2 . v[i, j]) / sqrt(N)``, where (h, v) is the
response to a unit impulse at (0, 0). ``kernel`` computes (h, v) numerically by dynamic
programming over the anti-diagonals of the grid (cells with i + j = s depend only on cells with
i + j = s - 1: H + W - 1 vectorised steps), and the layer applies K as a 2-D linear convolution by
FFT (zero-padded to 2H x 2W).

Directions: as the reference, the input is flipped in 4 ways (none, H, W, both), each copy is
convolved with its own kernel, flipped back, and the four results are summed, so every output
pixel sees the whole image (``directions=2``: none and both; ``directions=1``: the causal layer
alone). A per-channel skip ``D * u`` is added (the reference's ``omega``).

Parameters (reference parametrisation): A1..A4 = sigmoid(``A``), B1, B2 = sigmoid(``B``), shared by
the channels of each of ``n_ssm`` groups per direction; C1, C2 (``C``) per direction and per
channel, so every channel has its own kernel; ``D`` per channel. Shapes: ``A`` (4, directions *
n_ssm, N), ``B`` (2, directions * n_ssm, N), ``C`` (2, directions, d_model, N), ``D`` (d_model,).
Initialisation as the reference: A, B ~ N(0, 0.2) before the sigmoid, C, D ~ N(0, 1). The
reference's defaults are N = 16, n_ssm = 1, 4 directions, real-valued; ``n_ssm = d_model`` gives
every channel its own A, B too (memory grows with n_ssm * N * H * W).

``kernel_form``:
- ``"roesser"`` (default): exactly the recurrence above; ``tests/test_mixers.py`` checks that the
  FFT path equals a step-by-step run of it.
- ``"reference"``: the kernel of the reference's symbolic coefficient tables (``CoeffCalculator``):
  a state update whose two predecessor states are both non-zero is halved, and the kernel's first
  row and column are then doubled (the origin is left as it is). It is a different kernel, not a
  different recurrence, and is offered to reproduce the reference's numbers.

``kernel_size``: None (default) builds the kernel over the whole H x W map; an int k limits it to
k x k (zero beyond), as the reference does with its fixed ``L``.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

FLIPS = {1: ((),), 2: ((), (-2, -1)), 4: ((), (-2,), (-1,), (-2, -1))}
KERNEL_FORMS = ("roesser", "reference")


def _flip(x: torch.Tensor, dims: tuple) -> torch.Tensor:
    return x.flip(dims) if dims else x


def _halving(h: int, s: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's factors on anti-diagonal s (one per row i, column j = s - i): 1/2 where
    both predecessor states of the update are structurally non-zero."""
    i = torch.arange(h, device=device)
    j = s - i
    fh = torch.where(((i == 0) & (j == 1)) | ((i >= 1) & (j >= 2)), 0.5, 1.0)
    fv = torch.where(((i == 1) & (j == 0)) | ((i >= 2) & (j >= 1)), 0.5, 1.0)
    return fh, fv


def roesser_impulse(a: torch.Tensor, b: torch.Tensor, h: int, w: int,
                    form: str = "roesser") -> tuple[torch.Tensor, torch.Tensor]:
    """Impulse response of the diagonal Roesser model on an h x w grid.

    a: (4, ..., N) = A1..A4; b: (2, ..., N) = B1, B2. Returns the states (h_state, v_state), each
    (..., N, h, w). Anti-diagonal dynamic programming: the vector over rows i of diagonal s holds
    the cell (i, s - i); x^h comes from the same row of diagonal s - 1, x^v from the row above.
    Cells with s - i < 0 stay zero; cells with s - i >= w are computed and dropped.
    """
    if form not in KERNEL_FORMS:
        raise ValueError(f"kernel_form must be one of {', '.join(KERNEL_FORMS)}; got {form!r}")
    a1, a2, a3, a4 = (t.unsqueeze(-1) for t in a)
    b1, b2 = (t.unsqueeze(-1) for t in b)
    e0 = torch.zeros(h, dtype=a.dtype, device=a.device)
    e0[0] = 1
    hs, vs = b1 * e0, b2 * e0  # diagonal 0: (..., N, h)
    diag_h, diag_v = [hs], [vs]
    for s in range(1, h + w - 1):
        h_new = a1 * hs + a2 * vs
        v_new = a3 * nn.functional.pad(hs[..., :-1], (1, 0)) + a4 * nn.functional.pad(vs[..., :-1], (1, 0))
        if form == "reference":
            fh, fv = _halving(h, s, a.device)
            h_new, v_new = h_new * fh.to(a.dtype), v_new * fv.to(a.dtype)
        hs, vs = h_new, v_new
        diag_h.append(hs)
        diag_v.append(vs)
    rows = torch.arange(h, device=a.device)[:, None]
    cols = torch.arange(w, device=a.device)[None, :]
    grid_h = torch.stack(diag_h, dim=-2)[..., rows + cols, rows]  # (..., N, h, w)
    grid_v = torch.stack(diag_v, dim=-2)[..., rows + cols, rows]
    return grid_h, grid_v


def causal_conv2d_fft(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``out[..., i, j] = sum_{p <= i, q <= j} k[..., i - p, j - q] x[..., p, q]`` by FFT.

    x: (..., H, W); k: (..., kh, kw) broadcastable over the leading dims, kh <= H, kw <= W."""
    h, w = x.shape[-2:]
    size = (2 * h, 2 * w)
    out = torch.fft.irfft2(torch.fft.rfft2(x, s=size) * torch.fft.rfft2(k, s=size), s=size)
    return out[..., :h, :w]


class SSM2D(nn.Module):
    """2-D SSM layer: (b, d_model, H, W) -> (b, d_model, H, W)."""

    def __init__(self, d_model: int, d_state: int = 16, n_ssm: int = 1, directions: int = 4,
                 kernel_form: str = "roesser", kernel_size: int | None = None):
        super().__init__()
        if directions not in FLIPS:
            raise ValueError(f"SSM2D: directions must be 1, 2 or 4, got {directions}")
        if d_model % n_ssm:
            raise ValueError(f"SSM2D: d_model {d_model} is not divisible by n_ssm {n_ssm}")
        if kernel_form not in KERNEL_FORMS:
            raise ValueError(f"SSM2D: kernel_form must be one of {', '.join(KERNEL_FORMS)}; "
                             f"got {kernel_form!r}")
        if kernel_size is not None and kernel_size < 1:
            raise ValueError(f"SSM2D: kernel_size must be None or >= 1, got {kernel_size}")
        self.d_model, self.d_state, self.n_ssm = d_model, d_state, n_ssm
        self.directions, self.kernel_form, self.kernel_size = directions, kernel_form, kernel_size
        self.scale = math.sqrt(1.0 / d_state)
        g = directions * n_ssm
        self.A = nn.Parameter(torch.empty(4, g, d_state))
        self.B = nn.Parameter(torch.empty(2, g, d_state))
        self.C = nn.Parameter(torch.empty(2, directions, d_model, d_state))
        self.D = nn.Parameter(torch.empty(d_model))
        for p in (self.A, self.B, self.C):
            p._no_weight_decay = True
        self.reset_parameters()

    def reset_parameters(self) -> None:
        with torch.no_grad():
            nn.init.normal_(self.A, mean=0.0, std=0.2)
            nn.init.normal_(self.B, mean=0.0, std=0.2)
            nn.init.normal_(self.C, mean=0.0, std=1.0)
            nn.init.normal_(self.D, mean=0.0, std=1.0)

    def extra_repr(self) -> str:
        return (f"d_model={self.d_model}, d_state={self.d_state}, n_ssm={self.n_ssm}, "
                f"directions={self.directions}, kernel_form={self.kernel_form!r}, "
                f"kernel_size={self.kernel_size}")

    def kernel(self, h: int, w: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """The causal kernels, (directions, d_model, h, w), direction k for flip ``FLIPS[k]``."""
        dtype = dtype or self.A.dtype
        kh, kw = (h, w) if self.kernel_size is None else (min(h, self.kernel_size), min(w, self.kernel_size))
        a, b = torch.sigmoid(self.A.to(dtype)), torch.sigmoid(self.B.to(dtype))
        hs, vs = roesser_impulse(a, b, kh, kw, self.kernel_form)  # (dirs * n_ssm, N, kh, kw)
        dirs, n, per = self.directions, self.d_state, self.d_model // self.n_ssm
        hs = hs.reshape(dirs, self.n_ssm, n, kh, kw)
        vs = vs.reshape(dirs, self.n_ssm, n, kh, kw)
        c = (self.C.to(dtype) * self.scale).reshape(2, dirs, self.n_ssm, per, n)
        k = (torch.einsum("dgnhw,dgcn->dgchw", hs, c[0])
             + torch.einsum("dgnhw,dgcn->dgchw", vs, c[1])).reshape(dirs, self.d_model, kh, kw)
        if self.kernel_form == "reference":
            edge = torch.ones(kh, kw, dtype=dtype, device=k.device)
            edge[0, :] *= 2
            edge[:, 0] *= 2
            edge[0, 0] /= 4
            k = k * edge
        if (kh, kw) != (h, w):
            k = nn.functional.pad(k, (0, w - kw, 0, h - kh))
        return k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[1] != self.d_model:
            raise ValueError(f"SSM2D: input must be (batch, {self.d_model}, H, W), got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        work = torch.float64 if x.dtype == torch.float64 else torch.float32
        k = self.kernel(h, w, work)  # (dirs, d, h, w)
        flips = FLIPS[self.directions]
        xs = torch.stack([_flip(x, f) for f in flips], dim=1).to(work)  # (b, dirs, d, h, w)
        ys = causal_conv2d_fft(xs, k)
        y = sum(_flip(ys[:, i], f) for i, f in enumerate(flips))
        y = y + x.to(work) * self.D.to(work)[:, None, None]
        return y.to(x.dtype)
