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
buffers of ``budget`` elements in the backward, two in the forward, kept between calls (one set
per thread and dtype; ``clear_workspace()`` frees them): allocated afresh, their pages were
faulted in again at every call, a quarter of the time. Each step's operands are views made once
per superblock, so a step costs a few tensor operations and nothing else.
"""

from __future__ import annotations

import math
import threading

import torch

from .reference import compute_dtype, finish, prepare_delta

#: Elements of one superblock work buffer (the decays ``a``; backward also keeps the states).
DEFAULT_BUDGET = 1 << 21
#: Target elements of one step slice (nc * b * d * n): large enough to amortise Python overhead,
#: small enough to stay in cache while a step's operations run on it.
TARGET_SLICE = 1 << 17
LOG2E = 1.4426950408889634


class _Workspace(threading.local):
    """Work buffers kept between calls, one set per thread, dtype and device.

    The scan's temporaries are large (a superblock of decays and states: ``budget`` elements
    each); allocated afresh at every call, each of their pages is faulted in again (the C
    allocator returns large blocks to the system), which cost about a quarter of the time of a
    forward + backward. Nothing kept here outlives a call: outputs and tensors saved for
    backward are always fresh. A forward and a backward never run at once on one thread (the
    autograd engine runs CPU nodes one at a time, on the calling thread)."""

    def __init__(self):
        self.buffers: dict = {}

    def get(self, tag: str, shape: tuple[int, ...], like: torch.Tensor) -> torch.Tensor:
        numel = math.prod(shape)
        key = (tag, like.dtype, like.device)
        buf = self.buffers.get(key)
        if buf is None or buf.numel() < numel:
            buf = self.buffers[key] = like.new_empty(numel)
        return buf[:numel].view(shape)

    def clear(self) -> None:
        self.buffers.clear()


_work = _Workspace()


def clear_workspace() -> None:
    """Free this thread's kept work buffers (see ``_Workspace``)."""
    _work.clear()


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


def _swap_last_two(t: torch.Tensor, tag: str | None = None) -> torch.Tensor:
    """(b, x, y) -> contiguous (b, y, x): (b, d, L) to the time-major (b, L, d) and back. Into the
    work buffer ``tag`` if given, else a fresh tensor. One 2-D transpose per batch element (torch
    copies those with a cache-blocked kernel, much faster than a general permute)."""
    shape = (t.shape[0], t.shape[2], t.shape[1])
    out = t.new_empty(shape) if tag is None else _work.get(tag, shape, t)
    for i in range(t.shape[0]):
        out[i].copy_(t[i].t())
    return out


def _seq_block(t: torch.Tensor, l0: int, T: int, nc: int, tag: str) -> torch.Tensor:
    """(b, L, ...) -> the superblock starting at l0 as a contiguous (T, nc, b, ...) tensor in the
    work buffer ``tag``: [t, c] is step l0 + c*T + t. Steps past L are zero (delta = 0 there:
    a = 1, beta = 0, so the state passes through unchanged)."""
    b, L = t.shape[:2]
    rest = t.shape[2:]
    ls = T * nc
    out = _work.get(tag, (T, nc, b) + rest, t)
    valid = min(ls, L - l0)
    if valid == ls:
        out.copy_(t[:, l0:l0 + ls].view((b, nc, T) + rest).transpose(0, 2))
    else:
        m = torch.cat([t[:, l0:], t.new_zeros((b, ls - valid) + rest)], 1)
        out.copy_(m.view((b, nc, T) + rest).transpose(0, 2))
    return out


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


class _State:
    """A (nc, b, n, d) state buffer and the views the per-step operations take, each made once
    (a view is cheap, but a step does a few operations on ~10^5 numbers: per-call overheads
    count)."""

    __slots__ = ("h", "_views")

    def __init__(self, h: torch.Tensor):
        self.h = h
        self._views: dict = {}

    def grouped(self, g: int) -> torch.Tensor:
        """(nc, b, n, g, d // g): channels split into the groups of B/C."""
        v = self._views.get(g)
        if v is None:
            nc, b, n, d = self.h.shape
            v = self._views[g] = self.h.view(nc, b, n, g, d // g)
        return v

    def rows(self) -> torch.Tensor:
        """(nc * b, n, d), for batched matrix products."""
        v = self._views.get("rows")
        if v is None:
            nc, b, n, d = self.h.shape
            v = self._views["rows"] = self.h.view(nc * b, n, d)
        return v

    def rows_t(self) -> torch.Tensor:
        v = self._views.get("rows_t")
        if v is None:
            v = self._views["rows_t"] = self.rows().transpose(1, 2)
        return v


class _Mat:
    """B or C. Work layout puts d last: states are (..., n, d).
    const: (d, n), kept as (n, d). var: (b, L, g, n) (time-major), a superblock as
    (T, nc, b, n, g). The per-step operands of a superblock are views made once per superblock
    (``steps``, ``vec_steps``, ``out_steps``, ``grad_steps``); the three operations take them."""

    def __init__(self, M: torch.Tensor, const: bool, name: str):
        self.const, self.name = const, name
        if const:
            self.MT = M.t().contiguous()
            self.g = 1
        else:
            self.full = M
            self.g = M.shape[2]
        self.rows = not const and self.g == 1  # var, one group: batched matrix products

    def steps(self, l0: int, T: int, nc: int) -> list:
        """Per step: the matrix as add_outer and contract take it."""
        if self.const:
            return [self.MT] * T
        blk = _seq_block(self.full, l0, T, nc, self.name)  # (T, nc, b, g, n)
        out = _work.get(self.name + "T", blk.shape[:-2] + blk.shape[-2:][::-1], blk)
        out.copy_(blk.transpose(-1, -2))  # (T, nc, b, n, g)
        if self.rows:
            return list(zip(out.unsqueeze(-1).unbind(0), out.view(T, nc * out.shape[2], 1, -1).unbind(0)))
        return out.unsqueeze(-1).unbind(0)

    def vec_steps(self, v: torch.Tensor) -> list:
        """Per step, for a (T, nc, b, d) block of vectors: v as add_outer and reduce take it."""
        T, nc, b, d = v.shape
        if self.const:
            return v.unsqueeze(-2).unbind(0)
        grouped = v.view(T, nc, b, 1, self.g, d // self.g).unbind(0)
        return list(zip(grouped, v.view(T, nc * b, 1, d).unbind(0))) if self.rows else grouped

    def out_steps(self, out: torch.Tensor) -> list:
        """Per step, the (nc, b, d) outputs of contract in a (T, nc, b, d) block."""
        T, nc, b, d = out.shape
        return out.view(T, nc * b, 1, d).unbind(0) if self.rows else out.unbind(0)

    def grad_steps(self, grad: torch.Tensor, T: int) -> list:
        """Per step, where reduce writes: const, the one (nc, b, n, d) accumulator; var, a
        (T, nc, b, n, g) block."""
        if self.const:
            return [grad] * T
        if self.rows:
            T, nc, b, n, _ = grad.shape
            return grad.view(T, nc * b, 1, n).unbind(0)
        return grad.unbind(0)

    def add_outer(self, H: _State, v, m) -> None:
        """H (nc, b, n, d) += v (nc, b, d) (x) m."""
        if self.const:
            H.h.addcmul_(v, m)
        elif self.rows:
            H.grouped(1).addcmul_(v[0], m[0])
        else:
            H.grouped(self.g).addcmul_(v, m)

    def contract(self, H: _State, m, out, scratch: _State) -> None:
        """out (nc, b, d) = sum_n H * m."""
        if self.const:
            torch.sum(torch.mul(H.h, m, out=scratch.h), 2, out=out)
        elif self.rows:
            torch.bmm(m[1], H.rows(), out=out)
        else:
            torch.mul(H.grouped(self.g), m, out=scratch.grouped(self.g))
            torch.sum(scratch.h, 2, out=out)

    def reduce(self, X: _State, v, out, scratch: _State) -> None:
        """Gradient of m in add_outer(H, v, m) for upstream X: const accumulates X * v into
        out (nc, b, n, d); var writes the sum over the group's channels into out (nc, b, n, g)."""
        if self.const:
            out.addcmul_(X.h, v)
        elif self.rows:
            torch.bmm(v[1], X.rows_t(), out=out)
        else:
            torch.sum(torch.mul(X.grouped(self.g), v, out=scratch.grouped(self.g)), -1, out=out)

    def write_grad(self, full_grad, blk_grad, l0):
        _put_block(full_grad, blk_grad.transpose(-1, -2), l0)


def _time_major_inputs(u, dt, B, C, const_B, const_C):
    """u, dt (b, d, L) -> (b, L, d); input-dependent B, C (b, g, n, L) -> (b, L, g, n); all in
    work buffers (forward and backward each make them again from the saved inputs)."""
    def mat(M, const, tag):
        return M if const else _swap_last_two(M.flatten(1, 2), tag).unflatten(2, M.shape[1:3])

    return (_swap_last_two(u, "u_time"), _swap_last_two(dt, "dt_time"), mat(B, const_B, "B_time"),
            mat(C, const_C, "C_time"))


class _ChunkedScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, dt, A, B, C, const_B, const_C, plan):
        # u, dt: (b, d, L); A: (d, n); B, C: (d, n) or (b, g, n, L); S * nc * T >= L.
        # Internally time-major: (b, L, d) and (b, L, g, n).
        S, T, nc = plan
        b, d, L = u.shape
        n = A.shape[1]
        save = any(ctx.needs_input_grad[:5])
        if save:  # the inputs as given; backward makes its time-major copies again
            ctx.save_for_backward(u, dt, A, B, C)
        u, dt, B, C = _time_major_inputs(u, dt, B, C, const_B, const_C)
        AT2 = (A * LOG2E).t().contiguous()  # exp(dt * A) = exp2(dt * A * log2(e)): exp2 is faster
        Bm, Cm = _Mat(B, const_B, "B"), _Mat(C, const_C, "C")
        state = (nc, b, n, d)
        y = _work.get("y", (b, L, d), u)
        a = _work.get("a", (T,) + state, u)
        y_blk = _work.get("y_blk", (T, nc, b, d), u)
        x, hl, scratch = (_State(_work.get(k, state, u)) for k in ("x", "hl", "scratch"))
        starts = u.new_empty((S,) + state)  # kept for backward: not a work buffer
        a_t, y_t = a.unbind(0), Cm.out_steps(y_blk)
        h = u.new_zeros((b, n, d))
        for s in range(S):
            l0 = s * T * nc
            dts = _seq_block(dt, l0, T, nc, "dt")
            du = Bm.vec_steps(torch.mul(dts, _seq_block(u, l0, T, nc, "u"), out=_work.get("du", dts.shape, u)))
            Bb, Cb = Bm.steps(l0, T, nc), Cm.steps(l0, T, nc)
            # decays of the whole superblock; pass 1 (several chunks): each chunk's final state
            # from a zero start, then the carry over chunks
            torch.mul(dts.unsqueeze(-2), AT2, out=a).exp2_()
            if nc > 1:
                hl.h.zero_()
                for t in range(T):
                    if t:
                        hl.h.mul_(a_t[t])
                    Bm.add_outer(hl, du[t], Bb[t])
                decay = torch.exp2(dts.sum(0).unsqueeze(-2) * AT2)
                _scan_chunks(decay, hl.h, h, starts[s])
            else:
                starts[s, 0] = h
            # pass 2: the states from the true chunk starts, and y
            x.h.copy_(starts[s])
            for t in range(T):
                x.h.mul_(a_t[t])
                Bm.add_outer(x, du[t], Bb[t])
                Cm.contract(x, Cb[t], y_t[t], scratch)
            h = x.h[nc - 1].clone()
            _put_block(y, y_blk, l0)
        ctx.plan = plan
        ctx.const = (const_B, const_C)
        if save:
            ctx.starts = starts
        return _swap_last_two(y), h.transpose(-1, -2).contiguous()

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy, gh):
        S, T, nc = ctx.plan
        u, dt, A, B, C = ctx.saved_tensors
        starts = ctx.starts
        const_B, const_C = ctx.const
        u, dt, B, C = _time_major_inputs(u, dt, B, C, const_B, const_C)
        Bm, Cm = _Mat(B, const_B, "B"), _Mat(C, const_C, "C")
        need_u, need_dt, need_A, need_B, need_C = ctx.needs_input_grad[:5]
        b, L, d = u.shape
        n = A.shape[1]
        gy = _swap_last_two(gy.contiguous(), "gy_time")
        AT = A.t().contiguous()
        AT2 = (A * LOG2E).t().contiguous()
        state = (nc, b, n, d)
        # every buffer here is a work buffer: the returned gradients are fresh tensors made from
        # them at the end (transposes and sums)
        gu = _work.get("gu", u.shape, u) if need_u else None
        gdt = _work.get("gdt", dt.shape, u) if need_dt else None
        gAT = _work.get("gAT", state, u).zero_() if need_A else None
        gB = gC = gB_blk = gC_blk = None
        if need_B:
            gB = _work.get("gB", state, u).zero_() if const_B else _work.get("gB", B.shape, u)
            gB_blk = gB if const_B else _work.get("gB_blk", (T, nc, b, n, Bm.g), u)
        if need_C:
            gC = _work.get("gC", state, u).zero_() if const_C else _work.get("gC", C.shape, u)
            gC_blk = gC if const_C else _work.get("gC_blk", (T, nc, b, n, Cm.g), u)
        a = _work.get("a", (T,) + state, u)
        x = _work.get("xs", (T + 1,) + state, u)
        G, G2, hl, scratch = (_State(_work.get(k, state, u)) for k in ("g", "g2", "hl", "scratch"))
        scratch2 = _work.get("scratch2", state, u)
        gdu_blk = _work.get("gdu_blk", (T, nc, b, d), u)
        gdtA_blk = _work.get("gdtA_blk", (T, nc, b, d), u)
        a_t, gdu_t, gdtA_t = a.unbind(0), Bm.out_steps(gdu_blk), gdtA_blk.unbind(0)
        x_t = [_State(v) for v in x.unbind(0)]
        gB_t = Bm.grad_steps(gB_blk, T) if need_B else None
        gC_t = Cm.grad_steps(gC_blk, T) if need_C else None
        r = gh.transpose(-1, -2).contiguous() if gh is not None else u.new_zeros((b, n, d))
        for s in reversed(range(S)):
            l0 = s * T * nc
            dts, us, gys = (_seq_block(v, l0, T, nc, k) for v, k in ((dt, "dt"), (u, "u"), (gy, "gy")))
            du = Bm.vec_steps(torch.mul(dts, us, out=_work.get("du", dts.shape, u)))
            dtA = dts.unsqueeze(-2).unbind(0)
            gys = Cm.vec_steps(gys)
            Bb, Cb = Bm.steps(l0, T, nc), Cm.steps(l0, T, nc)
            # recompute decays and states from the saved chunk starts
            x[0] = starts[s]
            torch.mul(dts.unsqueeze(-2), AT2, out=a).exp2_()
            for t in range(T):
                torch.mul(a_t[t], x_t[t].h, out=x_t[t + 1].h)
                Bm.add_outer(x_t[t + 1], du[t], Bb[t])
            # adjoint g_t = C_t dy_t + a_{t+1} g_{t+1}. First the gradient reaching each chunk's
            # last state from the later chunks (local reverse pass, then a carry over chunks).
            if nc > 1:
                hl.h.zero_()
                for t in range(T - 1, -1, -1):
                    if t < T - 1:
                        hl.h.mul_(a_t[t + 1])
                    Cm.add_outer(hl, gys[t], Cb[t])
                hl.h.mul_(a_t[0])
                decay = torch.exp2(dts.sum(0).unsqueeze(-2) * AT2)
                _scan_chunks_reversed(decay, hl.h, r, G.h)
            else:
                G.h[0] = r
            Cm.add_outer(G, gys[T - 1], Cb[T - 1])
            for t in range(T - 1, -1, -1):
                # here G = g_t; AG = a_t g_t serves both dL/d(log a_t) and g_{t-1}
                if need_u or need_dt:
                    Bm.contract(G, Bb[t], gdu_t[t], scratch)
                if need_B:
                    Bm.reduce(G, du[t], gB_t[t], scratch)
                if need_C:
                    Cm.reduce(x_t[t + 1], gys[t], gC_t[t], scratch)
                AG = G2
                torch.mul(a_t[t], G.h, out=AG.h)
                if need_dt or need_A:
                    V = torch.mul(AG.h, x_t[t].h, out=scratch.h)  # dL/d(log a_t) = g_t a_t x_{t-1}
                    if need_dt:
                        torch.sum(torch.mul(V, AT, out=scratch2), 2, out=gdtA_t[t])
                    if need_A:
                        gAT.addcmul_(V, dtA[t])
                if t:
                    Cm.add_outer(AG, gys[t - 1], Cb[t - 1])
                    G, G2 = AG, G
            r = AG.h[0].clone()
            if need_dt:
                _put_block(gdt, gdtA_blk.addcmul_(gdu_blk, us), l0)
            if need_u:  # after gdt, which reads gdu_blk
                _put_block(gu, gdu_blk.mul_(dts), l0)
            if need_B and not const_B:
                Bm.write_grad(gB, gB_blk, l0)
            if need_C and not const_C:
                Cm.write_grad(gC, gC_blk, l0)
        gA = gAT.sum((0, 1)).t() if need_A else None
        gB, gC = ((None if G is None else G.sum((0, 1)).t() if const
                   else _swap_last_two(G.flatten(2)).unflatten(1, G.shape[2:]))
                  for G, const in ((gB, const_B), (gC, const_C)))
        return (None if gu is None else _swap_last_two(gu),
                None if gdt is None else _swap_last_two(gdt), gA, gB, gC, None, None, None)


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
