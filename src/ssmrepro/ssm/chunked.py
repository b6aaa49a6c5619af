"""The ``chunked`` selective scan: a parallel, differentiable, pure-PyTorch scan for the CPU (and
GPUs without mamba-ssm). Same semantics as ``selective_scan_reference``.

Recurrence, per batch b, channel d and state index n (A real, normally negative):

    x_t = a_t * x_{t-1} + beta_t,  a_t = exp(delta_t * A),  beta_t = delta_t * u_t * B_t
    y_t = sum_n C_t * x_t

How it is computed (memory bounded, numerically as safe as the plain loop):

* The sequence is cut into *superblocks* of ``Ls`` steps; only one superblock's work buffers
  (``budget`` elements each) exist at a time, so memory does not grow with L. A superblock is cut
  into ``nc`` chunks of ``T`` steps, laid out (T, nc, b, n, d): step t of every chunk is one
  contiguous slice of about ``TARGET_SLICE`` elements, so each step is a few fused, vectorised,
  cache-resident operations on all chunks at once (T + nc Python-level steps instead of Ls).
* The decays a = exp(delta * A) of a superblock are one operation (exp2 of a pre-scaled A).
* Pass 1 (only with several chunks): the recurrence over t = 0..T-1 for all chunks at once from
  a zero state gives each chunk's local final state.
* Carry: a short loop over the chunks gives each chunk's true initial state, using the chunk's
  total decay exp(A * sum(delta)). Only products of decays in [0, 1] appear (no division, no
  exp of a positive number): nothing can overflow; tiny decays underflow to 0 as in the loop.
* Pass 2: the recurrence again from the true initial states; y_t = <C_t, x_t> at each step.
* Backward (custom ``autograd.Function``, no autograd graph over the steps): per superblock in
  reverse, the states are recomputed from the chunk initial states saved by the forward, the
  adjoint g_t = C_t dy_t + a_{t+1} g_{t+1} runs the same way backwards (local pass, carry, full
  pass), and the gradients of u, delta, A, B, C are contractions of g, a and the states at each
  step. Saved for backward: the inputs and one state per chunk, (L / T) * b * d * n numbers.

``delta_bias``/softplus, ``D`` and the ``z`` gate are (b, d, L) operations done with ordinary
autograd around the core. Computation is float64 for float64 inputs, else float32; the output has
u's dtype and the last state the compute dtype (as ``reference``). Work memory: about three
buffers of ``budget`` elements in the backward, two in the forward.
"""

from __future__ import annotations

import math

import torch

from .reference import compute_dtype, finish, prepare_delta

#: Elements of one superblock work buffer (the decays ``a``; backward also keeps the states).
DEFAULT_BUDGET = 1 << 21
#: Target elements of one step slice (nc * b * d * n): large enough to amortise Python overhead,
#: small enough to stay in cache while a step's operations run on it.
TARGET_SLICE = 1 << 17
LOG2E = 1.4426950408889634


def _plan(length: int, per_step: int, budget: int, chunk: int | None) -> tuple[int, int, int]:
    """(superblocks S, chunk length T, chunks per superblock nc) with S * nc * T >= length."""
    ls_max = max(1, budget // max(per_step, 1))
    n_super = max(1, math.ceil(length / ls_max))
    ls = math.ceil(length / n_super)
    if chunk is None:
        nc = min(ls, max(1, round(TARGET_SLICE / max(per_step, 1))))
        T = math.ceil(ls / nc)
    else:
        T = max(1, min(ls, int(chunk)))
    nc = math.ceil(ls / T)
    return math.ceil(length / (T * nc)), T, nc


def _time_major(t: torch.Tensor) -> torch.Tensor:
    """(b, c, L) -> contiguous (b, L, c). One 2-D transpose per batch element (torch copies
    those with a cache-blocked kernel, much faster than a general permute)."""
    out = t.new_empty((t.shape[0], t.shape[2], t.shape[1]))
    for i in range(t.shape[0]):
        out[i].copy_(t[i].t())
    return out


def _channel_major(t: torch.Tensor) -> torch.Tensor:
    """(b, L, c) -> contiguous (b, c, L), the inverse of ``_time_major``."""
    out = t.new_empty((t.shape[0], t.shape[2], t.shape[1]))
    for i in range(t.shape[0]):
        out[i].copy_(t[i].t())
    return out


def _seq_block(t: torch.Tensor, l0: int, T: int, nc: int) -> torch.Tensor:
    """(b, L, ...) -> the superblock starting at l0 as a contiguous (T, nc, b, ...) tensor:
    [t, c] is step l0 + c*T + t. Steps past L are zero (delta = 0 there: a = 1, beta = 0, so the
    state passes through unchanged)."""
    b, L = t.shape[:2]
    rest = t.shape[2:]
    ls = T * nc
    m = t[:, l0:l0 + ls]
    if m.shape[1] < ls:
        m = torch.cat([m, m.new_zeros((b, ls - m.shape[1]) + rest)], 1)
    return m.reshape((b, nc, T) + rest).transpose(0, 2).contiguous()


def _put_block(dst: torch.Tensor, blk: torch.Tensor, l0: int) -> None:
    """Inverse of ``_seq_block``: write the (T, nc, b, ...) block into dst (b, L, ...) at l0
    (one strided copy, unless the block runs past L)."""
    T, nc, b = blk.shape[:3]
    rest = blk.shape[3:]
    valid = min(T * nc, dst.shape[1] - l0)
    if valid == T * nc:
        dst[:, l0:l0 + valid].view((b, nc, T) + rest).copy_(blk.transpose(0, 2))
    else:
        dst[:, l0:l0 + valid] = blk.transpose(0, 2).reshape((b, T * nc) + rest)[:, :valid]


def _scan_chunks(decay: torch.Tensor, hloc: torch.Tensor, h0: torch.Tensor,
                 starts: torch.Tensor) -> None:
    """starts[0] = h0, starts[c+1] = decay_c * starts[c] + hloc_c over the chunks. Products of
    decays only (values in [0, 1]): nothing can overflow. A plain loop of small fused ops is
    cheaper here than a log-depth scan for any realistic chunk count."""
    starts[0] = h0
    for c in range(decay.shape[0] - 1):
        torch.addcmul(hloc[c], decay[c], starts[c], out=starts[c + 1])


def _scan_chunks_reversed(decay: torch.Tensor, hloc: torch.Tensor, r: torch.Tensor,
                          ends: torch.Tensor) -> None:
    """The carry of the adjoint, from the last chunk back: ends[nc-1] = r,
    ends[c] = decay[c+1] * ends[c+1] + hloc[c+1] (``_scan_chunks`` in reverse, without flips)."""
    nc = decay.shape[0]
    ends[nc - 1] = r
    for c in range(nc - 2, -1, -1):
        torch.addcmul(hloc[c + 1], decay[c + 1], ends[c + 1], out=ends[c])


class _Mat:
    """B or C. Work layout puts d last: states are (..., n, d).
    const: (d, n), kept as (n, d). var: (b, L, g, n) (time-major), a superblock as
    (T, nc, b, n, g)."""

    def __init__(self, M: torch.Tensor, const: bool):
        self.const = const
        if const:
            self.MT = M.t().contiguous()
            self.g = 1
        else:
            self.full = M
            self.g = M.shape[2]

    def block(self, l0: int, T: int, nc: int) -> torch.Tensor:
        if self.const:
            return self.MT
        return _seq_block(self.full, l0, T, nc).transpose(-1, -2).contiguous()

    def steps(self, l0: int, T: int, nc: int):
        """The superblock's per-step matrices, indexable by t."""
        return [self.MT] * T if self.const else self.block(l0, T, nc).unbind(0)

    def add_outer(self, h, v, m):
        """h (nc, b, n, d) += v (nc, b, d) (x) m."""
        if self.const:
            h.addcmul_(v.unsqueeze(-2), m)
        else:
            nc, b, n, d = h.shape
            g = self.g
            h.view(nc, b, n, g, d // g).addcmul_(v.view(nc, b, 1, g, d // g), m.unsqueeze(-1))

    def contract(self, h, m, out, scratch):
        """out (nc, b, d) = sum_n h * m."""
        nc, b, n, d = h.shape
        if self.const:
            torch.sum(torch.mul(h, m, out=scratch), 2, out=out)
        elif self.g == 1:
            torch.matmul(m.view(nc * b, 1, n), h.view(nc * b, n, d), out=out.view(nc * b, 1, d))
        else:
            g = self.g
            torch.mul(h.view(nc, b, n, g, d // g), m.unsqueeze(-1),
                      out=scratch.view(nc, b, n, g, d // g))
            torch.sum(scratch, 2, out=out)

    def reduce(self, X, v, out, scratch):
        """Gradient of m in add_outer(h, v, m) for upstream X: const accumulates X * v into
        out (nc, b, n, d); var writes sum over the group's channels into out (nc, b, n, g)."""
        if self.const:
            out.addcmul_(X, v.unsqueeze(-2))
        elif self.g == 1:
            nc, b, n, d = X.shape
            torch.matmul(v.view(nc * b, 1, d), X.view(nc * b, n, d).transpose(1, 2),
                         out=out.view(nc * b, 1, n))
        else:
            nc, b, n, d = X.shape
            g = self.g
            sv = scratch.view(nc, b, n, g, d // g)
            torch.mul(X.view(nc, b, n, g, d // g), v.view(nc, b, 1, g, d // g), out=sv)
            torch.sum(sv, -1, out=out)

    def write_grad(self, full_grad, blk_grad, l0):
        _put_block(full_grad, blk_grad.transpose(-1, -2), l0)


class _ChunkedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, dt, A, B, C, const_B, const_C, plan):
        # u, dt: (b, d, L); A: (d, n); B, C: (d, n) or (b, g, n, L); S * nc * T >= L.
        # Internally time-major: (b, L, d) and (b, L, g, n).
        S, T, nc = plan
        b, d, L = u.shape
        n = A.shape[1]
        u, dt = _time_major(u), _time_major(dt)
        B, C = (M if const else _time_major(M.flatten(1, 2)).unflatten(2, M.shape[1:3])
                for M, const in ((B, const_B), (C, const_C)))
        AT2 = (A * LOG2E).t().contiguous()  # exp(dt * A) = exp2(dt * A * log2(e)): exp2 is faster
        Bm, Cm = _Mat(B, const_B), _Mat(C, const_C)
        save = any(ctx.needs_input_grad[:5])
        state = (nc, b, n, d)
        y = u.new_empty((b, L, d))
        a = u.new_empty((T,) + state)
        y_blk = u.new_empty((T, nc, b, d))
        x, hl, scratch = u.new_empty(state), u.new_empty(state), u.new_empty(state)
        starts = u.new_empty((S,) + state)
        a_t, y_t = a.unbind(0), y_blk.unbind(0)
        h = u.new_zeros((b, n, d))
        for s in range(S):
            l0 = s * T * nc
            dts = _seq_block(dt, l0, T, nc)
            du = (dts * _seq_block(u, l0, T, nc)).unbind(0)
            Bb, Cb = Bm.steps(l0, T, nc), Cm.steps(l0, T, nc)
            # decays of the whole superblock; pass 1 (several chunks): each chunk's final state
            # from a zero start, then the carry over chunks
            torch.mul(dts.unsqueeze(-2), AT2, out=a).exp2_()
            if nc > 1:
                hl.zero_()
                for t in range(T):
                    if t:
                        hl.mul_(a_t[t])
                    Bm.add_outer(hl, du[t], Bb[t])
                decay = torch.exp2(dts.sum(0).unsqueeze(-2) * AT2)
                _scan_chunks(decay, hl, h, starts[s])
            else:
                starts[s, 0] = h
            # pass 2: the states from the true chunk starts, and y
            x.copy_(starts[s])
            for t in range(T):
                x.mul_(a_t[t])
                Bm.add_outer(x, du[t], Bb[t])
                Cm.contract(x, Cb[t], y_t[t], scratch)
            h = x[nc - 1].clone()
            _put_block(y, y_blk, l0)
        ctx.plan = plan
        ctx.const = (const_B, const_C)
        if save:
            ctx.save_for_backward(u, dt, A, B, C, starts)
        return _channel_major(y), h.transpose(-1, -2).contiguous()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy, gh):
        S, T, nc = ctx.plan
        u, dt, A, B, C, starts = ctx.saved_tensors
        const_B, const_C = ctx.const
        Bm, Cm = _Mat(B, const_B), _Mat(C, const_C)
        need_u, need_dt, need_A, need_B, need_C = ctx.needs_input_grad[:5]
        b, L, d = u.shape
        n = A.shape[1]
        gy = _time_major(gy.contiguous())
        AT = A.t().contiguous()
        AT2 = (A * LOG2E).t().contiguous()
        state = (nc, b, n, d)
        gu = torch.empty_like(u) if need_u else None
        gdt = torch.empty_like(dt) if need_dt else None
        gAT = u.new_zeros(state) if need_A else None
        gB = gC = gB_blk = gC_blk = None
        if need_B:
            gB = u.new_zeros(state) if const_B else torch.empty_like(B)
            gB_blk = gB if const_B else u.new_empty((T, nc, b, n, Bm.g))
        if need_C:
            gC = u.new_zeros(state) if const_C else torch.empty_like(C)
            gC_blk = gC if const_C else u.new_empty((T, nc, b, n, Cm.g))
        a = u.new_empty((T,) + state)
        x = u.new_empty((T + 1,) + state)
        g, g2, hl, scratch, scratch2 = (u.new_empty(state) for _ in range(5))
        gdu_blk = u.new_empty((T, nc, b, d))
        gdtA_blk = u.new_empty((T, nc, b, d))
        a_t, x_t, gdu_t, gdtA_t = a.unbind(0), x.unbind(0), gdu_blk.unbind(0), gdtA_blk.unbind(0)
        gB_t = gB_blk.unbind(0) if need_B and not const_B else [gB_blk] * T
        gC_t = gC_blk.unbind(0) if need_C and not const_C else [gC_blk] * T
        r = gh.transpose(-1, -2).contiguous() if gh is not None else u.new_zeros((b, n, d))
        for s in reversed(range(S)):
            l0 = s * T * nc
            dts, us, gys = (_seq_block(v, l0, T, nc) for v in (dt, u, gy))
            du = (dts * us).unbind(0)
            dtA = dts.unsqueeze(-2).unbind(0)
            gys = gys.unbind(0)
            Bb, Cb = Bm.steps(l0, T, nc), Cm.steps(l0, T, nc)
            # recompute decays and states from the saved chunk starts
            x[0] = starts[s]
            torch.mul(dts.unsqueeze(-2), AT2, out=a).exp2_()
            for t in range(T):
                torch.mul(a_t[t], x_t[t], out=x_t[t + 1])
                Bm.add_outer(x_t[t + 1], du[t], Bb[t])
            # adjoint g_t = C_t dy_t + a_{t+1} g_{t+1}. First the gradient reaching each chunk's
            # last state from the later chunks (local reverse pass, then a carry over chunks).
            if nc > 1:
                hl.zero_()
                for t in range(T - 1, -1, -1):
                    if t < T - 1:
                        hl.mul_(a_t[t + 1])
                    Cm.add_outer(hl, gys[t], Cb[t])
                hl.mul_(a_t[0])
                decay = torch.exp2(dts.sum(0).unsqueeze(-2) * AT2)
                _scan_chunks_reversed(decay, hl, r, g)
            else:
                g[0] = r
            Cm.add_outer(g, gys[T - 1], Cb[T - 1])
            for t in range(T - 1, -1, -1):
                # here g = g_t; ag = a_t g_t serves both dL/d(log a_t) and g_{t-1}
                if need_u or need_dt:
                    Bm.contract(g, Bb[t], gdu_t[t], scratch)
                if need_B:
                    Bm.reduce(g, du[t], gB_t[t], scratch)
                if need_C:
                    Cm.reduce(x_t[t + 1], gys[t], gC_t[t], scratch)
                ag = torch.mul(a_t[t], g, out=g2)
                if need_dt or need_A:
                    V = torch.mul(ag, x_t[t], out=scratch)  # dL/d(log a_t) = g_t a_t x_{t-1}
                    if need_dt:
                        torch.sum(torch.mul(V, AT, out=scratch2), 2, out=gdtA_t[t])
                    if need_A:
                        gAT.addcmul_(V, dtA[t])
                if t:
                    Cm.add_outer(ag, gys[t - 1], Cb[t - 1])
                    g, g2 = ag, g
            r = ag[0].clone()
            if need_u:
                _put_block(gu, gdu_blk * dts, l0)
            if need_dt:
                _put_block(gdt, gdtA_blk.addcmul_(gdu_blk, us), l0)
            if need_B and not const_B:
                Bm.write_grad(gB, gB_blk, l0)
            if need_C and not const_C:
                Cm.write_grad(gC, gC_blk, l0)
        gA = gAT.sum((0, 1)).t() if need_A else None
        gB, gC = ((None if G is None else G.sum((0, 1)).t() if const
                   else _channel_major(G.flatten(2)).unflatten(1, G.shape[2:]))
                  for G, const in ((gB, const_B), (gC, const_C)))
        return (None if gu is None else _channel_major(gu),
                None if gdt is None else _channel_major(gdt), gA, gB, gC, None, None, None)


def selective_scan_chunked(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                           delta_softplus=False, return_last_state=False, *, chunk=None,
                           budget=DEFAULT_BUDGET):
    """Chunked parallel selective scan (see module doc); arguments as ``selective_scan``.
    ``chunk`` forces the chunk length T; ``budget`` is the number of elements of one work buffer
    (tests use small values to exercise many superblocks)."""
    dtype_in = u.dtype
    dtype = compute_dtype(u, delta, A, B, C)
    b, d, length = u.shape
    n = A.shape[1]
    if b == 0 or length == 0:
        y = u.new_zeros((b, d, length), dtype=dtype)
        last = u.new_zeros((b, d, n), dtype=dtype)
        out = finish(y, u, D, z, dtype_in, dtype)
        return (out, last) if return_last_state else out
    per_step = d * n
    # Split the batch if even a short superblock of the whole batch would exceed the budget.
    max_b = max(1, budget // max(per_step * 16, 1))
    if b > max_b:
        outs = [
            selective_scan_chunked(
                u[i:i + max_b], delta[i:i + max_b], A,
                B if B.dim() == 2 else B[i:i + max_b], C if C.dim() == 2 else C[i:i + max_b],
                D=D, z=None if z is None else z[i:i + max_b], delta_bias=delta_bias,
                delta_softplus=delta_softplus, return_last_state=True, chunk=chunk, budget=budget)
            for i in range(0, b, max_b)]
        out = torch.cat([o[0] for o in outs])
        last = torch.cat([o[1] for o in outs])
        return (out, last) if return_last_state else out

    plan = _plan(length, b * per_step, budget, chunk)
    dt = prepare_delta(delta, delta_bias, delta_softplus, dtype)

    def mat(M):
        M = M.to(dtype)
        if M.dim() == 3:
            M = M.unsqueeze(1)
        return M.contiguous()

    y, last = _ChunkedScan.apply(u.to(dtype).contiguous(), dt.contiguous(),
                                 A.to(dtype).contiguous(), mat(B), mat(C), B.dim() == 2,
                                 C.dim() == 2, plan)
    out = finish(y, u, D, z, dtype_in, dtype)
    return (out, last) if return_last_state else out
