"""Metric protocol objects and their registration in ``ssmrepro.registry.METRICS``.

A protocol id (``psnr[rgb,uint8]``) names everything that moves the number; the object carries
the computation and, as its docstring, the list of what changes its value.

Two kinds:

- ``per_image``: ``fn(pred, gt, mask=None, ctx=None) -> float`` on HxWx3 uint8 arrays (mask HxW
  bool, True = hole); the protocol's value is the mean over images. ``ctx`` is a dict shared by
  all protocols for one pair (lets the RealBlur protocols align once).
- ``set``: ``fn(preds, gts, masks=None, **options) -> float`` over the whole set (FID), with an
  optional streaming ``accumulator``.
"""

from __future__ import annotations

from typing import Callable

from ..errors import UserError
from ..registry import METRICS


class MetricInputError(UserError, ValueError):
    """Images, masks or folders that a metric cannot score; the message is one line."""


class Protocol:
    """One named, versioned way of computing a metric."""

    def __init__(self, id: str, name: str, better: str, kind: str, fn: Callable, *,
                 needs_mask: bool = False, backend: str = "numpy", doc: str | None = None,
                 accumulator: Callable | None = None, prepare: Callable | None = None):
        if better not in ("higher", "lower"):
            raise ValueError(f"better must be 'higher' or 'lower', not {better!r}")
        if kind not in ("per_image", "set"):
            raise ValueError(f"kind must be 'per_image' or 'set', not {kind!r}")
        self.id = id
        self.name = name
        self.better = better
        self.kind = kind
        self.fn = fn
        self.needs_mask = needs_mask
        # "numpy": plain CPU code, safe to run in worker processes; "torch": a network, run once
        # in the calling process (cached model).
        self.backend = backend
        # set protocols: ``accumulator(model=...)`` -> object with update(pred, gt, mask) and
        # result(), to stream a folder instead of holding it in memory
        self.accumulator = accumulator
        # called once before scoring (loads a network, so missing weights fail before any work)
        self.prepare = prepare
        self.__doc__ = doc or fn.__doc__

    def __call__(self, *args, **kwargs):
        """Per-image: ``(pred, gt, mask=None)`` after the shared conversion; set: ``fn``."""
        if self.kind != "per_image":
            return self.fn(*args, **kwargs)
        return self._per_image(*args, **kwargs)

    def _per_image(self, pred, gt, mask=None, ctx=None) -> float:
        from .evaluate import check_pair

        return self.fn(*check_pair(pred, gt, mask, self.id), ctx=ctx)

    def __repr__(self) -> str:
        return f"Protocol({self.id!r}, {self.kind}, better={self.better})"

    def describe(self) -> dict:
        return {"id": self.id, "name": self.name, "better": self.better, "kind": self.kind,
                "needs_mask": self.needs_mask, "doc": (self.__doc__ or "").strip()}


def protocol(id: str, name: str, better: str, kind: str = "per_image", **options):
    """Decorator: wrap ``fn`` in a :class:`Protocol` and register it under ``id``."""

    def wrap(fn: Callable) -> Protocol:
        p = Protocol(id, name, better, kind, fn, **options)
        METRICS.register(id)(p)
        return p

    return wrap


def get_protocol(pid: str) -> Protocol:
    """The protocol registered as ``pid``; an unknown id lists the known ones."""
    from . import _register_all  # noqa: F401 - make sure every protocol module is imported

    return METRICS.get(pid)


def protocol_ids() -> list[str]:
    from . import _register_all  # noqa: F401

    return METRICS.names()
