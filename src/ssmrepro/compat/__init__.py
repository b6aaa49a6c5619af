"""Compatibility shims for the CPU machines this project runs on."""

from .torchvision_shim import ensure_torchvision_importable

__all__ = ["ensure_torchvision_importable"]
