"""Selective state-space scans, Mamba blocks and scan orders.

- ``selective_scan`` (backends ``reference``, ``chunked``, ``cuda``, ``skip``; ``scan_backend``,
  ``available_backends``): see ``ssmrepro.ssm.scan``.
- ``Mamba`` (Mamba-1, mamba-ssm parameter names): ``ssmrepro.ssm.mamba1``.
- ``Mamba2`` (SSD, mamba-ssm parameter names): ``ssmrepro.ssm.mamba2``.
- scan orders (raster, snake, cross-scan, ... with exact inverses): ``ssmrepro.ssm.orders``.
"""

from .scan import BACKENDS, available_backends, scan_backend, selective_scan

__all__ = ["BACKENDS", "available_backends", "scan_backend", "selective_scan", "Mamba", "Mamba2"]


def __getattr__(name):  # the blocks are imported on first use
    if name == "Mamba":
        from .mamba1 import Mamba

        return Mamba
    if name == "Mamba2":
        from .mamba2 import Mamba2

        return Mamba2
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
