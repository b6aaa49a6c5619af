"""Selective state-space scans, Mamba blocks and scan orders."""

from .scan import selective_scan

__all__ = ["selective_scan"]
