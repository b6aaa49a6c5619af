"""``selective_scan``: one entry point, several backends.

Backends: ``reference`` (plain loop, the truth), ``skip`` (returns zeros of the right shape: used
only to count a model's MACs without the scan). ``chunked`` and ``cuda`` are being added.
``backend="auto"`` uses the backend set by ``scan_backend(...)`` if any, else the best available.
"""

from __future__ import annotations

import contextlib
import contextvars

import torch

from .reference import compute_dtype, selective_scan_reference

_override: contextvars.ContextVar[str | None] = contextvars.ContextVar("scan_backend", default=None)


def _skip(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
          return_last_state=False):
    out = torch.zeros_like(u)
    if return_last_state:
        return out, u.new_zeros((u.shape[0], u.shape[1], A.shape[1]), dtype=compute_dtype(u, A))
    return out


BACKENDS = {"reference": selective_scan_reference, "skip": _skip}


@contextlib.contextmanager
def scan_backend(name: str):
    """Within this block, ``backend="auto"`` means ``name``."""
    if name not in BACKENDS:
        raise ValueError(f"unknown scan backend {name!r}; known: {', '.join(sorted(BACKENDS))}")
    token = _override.set(name)
    try:
        yield
    finally:
        _override.reset(token)


def resolve_backend(backend: str, u: torch.Tensor) -> str:
    if backend != "auto":
        return backend
    chosen = _override.get()
    return chosen if chosen is not None else "reference"


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, backend="auto"):
    name = resolve_backend(backend, u)
    if name not in BACKENDS:
        raise ValueError(f"unknown scan backend {name!r}; known: {', '.join(sorted(BACKENDS))}")
    return BACKENDS[name](u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                          delta_softplus=delta_softplus, return_last_state=return_last_state)
