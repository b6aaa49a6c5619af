"""``selective_scan``: one entry point, several backends.

Backends (``BACKENDS``):
- ``reference``: the plain loop over the sequence (``reference.py``), the truth every other backend
  is tested against. Slow.
- ``chunked``: chunked parallel scan in pure PyTorch (``chunked.py``); differentiable, memory
  bounded, for the CPU and for GPUs without mamba-ssm.
- ``cuda``: mamba-ssm's fused kernel ``selective_scan_fn``, imported lazily; only where mamba-ssm and
  its compiled extension import, on CUDA tensors, in float32/float16/bfloat16 (no float64 kernel).
- ``skip``: zeros of the right shape; used only to count a model's MACs without the scan.

``backend="auto"`` resolves to: the backend set by ``scan_backend(...)`` if any; else ``cuda`` for
CUDA tensors that are not float64 when mamba-ssm imports; else ``chunked``.
``available_backends()`` says which backends this machine can run, and why not (``ssmrepro env``).

Shapes (b batch, d channels, n state size, l length, g groups):
    u, delta, z: (b, d, l); A: (d, n) real; D, delta_bias: (d,)
    B, C: (d, n) constant, (b, n, l) input-dependent, or (b, g, n, l) grouped (g divides d).
Inputs are validated before dispatch: a wrong shape, a non-float dtype or a tensor on another
device raises ``ValueError`` naming the argument and the expected shape.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools

import torch

from .chunked import selective_scan_chunked
from .reference import compute_dtype, selective_scan_reference

_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("scan_backend", default=None)

CUDA_IMPORT = "mamba_ssm.ops.selective_scan_interface"


def _skip(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
          return_last_state=False):
    out = torch.zeros_like(u)
    if return_last_state:
        return out, u.new_zeros((u.shape[0], u.shape[1], A.shape[1]), dtype=compute_dtype(u, A))
    return out


@functools.lru_cache(maxsize=1)
def _mamba_ssm() -> tuple[object | None, str]:
    """(selective_scan_fn or None, reason). Imported once, lazily."""
    try:
        import importlib

        mod = importlib.import_module(CUDA_IMPORT)
        fn = mod.selective_scan_fn
    except Exception as exc:  # ImportError, or OSError/RuntimeError from the compiled extension
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return None, f"mamba-ssm not importable ({CUDA_IMPORT}): {type(exc).__name__}: {first}"
    if not torch.cuda.is_available():
        return fn, "mamba-ssm imports, but torch sees no CUDA device"
    try:
        from importlib.metadata import version

        ver = version("mamba-ssm")
    except Exception:
        ver = "?"
    return fn, f"mamba-ssm {ver} selective_scan_fn"


def _cuda(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
          return_last_state=False):
    fn, why = _mamba_ssm()
    if fn is None:
        raise RuntimeError(f"selective_scan backend 'cuda' is unavailable: {why}. "
                           "Use backend='chunked' (or 'auto').")
    if not u.is_cuda:
        raise RuntimeError("selective_scan backend 'cuda' needs CUDA tensors; got u on "
                           f"{u.device}. Use backend='chunked' (or 'auto').")
    if compute_dtype(u, delta, A, B, C) == torch.float64:
        raise RuntimeError("selective_scan backend 'cuda' (mamba-ssm) has no float64 kernel; "
                           "use backend='chunked' or 'reference' for float64.")
    return fn(u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
              return_last_state=return_last_state)


BACKENDS = {
    "reference": selective_scan_reference,
    "chunked": selective_scan_chunked,
    "cuda": _cuda,
    "skip": _skip,
}


def available_backends() -> dict[str, tuple[bool, str]]:
    """name -> (usable on this machine, why / what)."""
    fn, why = _mamba_ssm()
    out = {
        "reference": (True, "pure PyTorch loop over the sequence (slow; the ground truth)"),
        "chunked": (True, "pure PyTorch chunked parallel scan, custom backward (CPU and GPU)"),
        "cuda": (fn is not None and torch.cuda.is_available(), why),
        "skip": (True, "zeros of the right shape (MAC counting only)"),
    }
    for name in BACKENDS:  # backends registered by others (e.g. the MAC counter's "count")
        out.setdefault(name, (True, "registered at runtime"))
    return out


@contextlib.contextmanager
def scan_backend(name: str):
    """Within this block, ``backend="auto"`` means ``name`` (``"auto"`` restores the default)."""
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"unknown scan backend {name!r}; known: {', '.join(sorted(BACKENDS))}")
    token = _override.set(None if name == "auto" else name)
    try:
        yield
    finally:
        _override.reset(token)


def scan_override() -> str | None:
    """The backend set by an enclosing ``scan_backend(...)``, or None."""
    return _override.get()


def resolve_backend(backend: str, u: torch.Tensor) -> str:
    """The backend ``selective_scan`` would use for ``u`` (see module doc)."""
    if backend != "auto":
        return backend
    chosen = _override.get()
    if chosen is not None:
        return chosen
    if u.is_cuda and u.dtype != torch.float64 and _mamba_ssm()[0] is not None:
        return "cuda"
    return "chunked"


# ---- validation ----------------------------------------------------------------------------

def _shape(t) -> str:
    return str(tuple(t.shape))


def _fail(name: str, expected: str, t) -> ValueError:
    return ValueError(f"selective_scan: {name} must be {expected}; got {_shape(t)}")


def validate(u, delta, A, B, C, D=None, z=None, delta_bias=None) -> None:
    """Raise ``ValueError`` naming the first bad argument (shape, dtype or device)."""
    named = {"u": u, "delta": delta, "A": A, "B": B, "C": C, "D": D, "z": z, "delta_bias": delta_bias}
    for name, t in named.items():
        if t is None:
            if name in ("u", "delta", "A", "B", "C"):
                raise ValueError(f"selective_scan: {name} is required, got None")
            continue
        if not isinstance(t, torch.Tensor):
            raise ValueError(f"selective_scan: {name} must be a torch.Tensor; got {type(t).__name__}")
        if not t.is_floating_point():
            raise ValueError(f"selective_scan: {name} must be a real floating-point tensor "
                             f"(float16, bfloat16, float32 or float64); got dtype {t.dtype}")
    if u.dim() != 3:
        raise _fail("u", "(batch, d, length)", u)
    b, d, length = u.shape
    for name, t in named.items():
        if t is not None and t.device != u.device:
            raise ValueError(f"selective_scan: {name} is on {t.device} but u is on {u.device}; "
                             "all tensors must be on one device")
    if tuple(delta.shape) != (b, d, length):
        raise _fail("delta", f"(batch, d, length) = {(b, d, length)} like u", delta)
    if A.dim() != 2 or A.shape[0] != d:
        raise _fail("A", f"(d, n) with d={d}", A)
    n = A.shape[1]
    for name, M in (("B", B), ("C", C)):
        ok = ((M.dim() == 2 and tuple(M.shape) == (d, n))
              or (M.dim() == 3 and tuple(M.shape) == (b, n, length))
              or (M.dim() == 4 and M.shape[0] == b and M.shape[1] >= 1 and d % M.shape[1] == 0
                  and tuple(M.shape[2:]) == (n, length)))
        if not ok:
            raise _fail(name, f"(d, n), (batch, n, length) or (batch, groups, n, length) with "
                              f"groups dividing d={d}, i.e. {(d, n)}, {(b, n, length)} or "
                              f"({b}, g, {n}, {length})", M)
    if z is not None and tuple(z.shape) != (b, d, length):
        raise _fail("z", f"(batch, d, length) = {(b, d, length)} like u", z)
    for name, t in (("D", D), ("delta_bias", delta_bias)):
        if t is not None and tuple(t.shape) != (d,):
            raise _fail(name, f"(d,) = ({d},)", t)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend="auto"):
    """Selective scan y = SSM(u) (mamba-ssm's ``selective_scan_fn`` semantics), see module doc.
    Returns ``out`` (b, d, l) in u's dtype, and with ``return_last_state`` also the final state
    (b, d, n) in the compute dtype (float64 for float64 inputs, else float32)."""
    validate(u, delta, A, B, C, D, z, delta_bias)
    name = resolve_backend(backend, u)
    if name not in BACKENDS:
        raise ValueError(f"unknown scan backend {name!r}; known: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name](u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                          delta_softplus=delta_softplus, return_last_state=return_last_state)
