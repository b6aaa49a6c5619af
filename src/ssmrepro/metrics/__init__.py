"""Metric protocols (ids in docs/architecture.md), LPIPS, FID and RealBlur alignment.

Every protocol is registered in ``ssmrepro.registry.METRICS`` under its id; ``METRICS.get(id)``
returns a :class:`Protocol` (``id``, ``name``, ``better``, ``kind``, a docstring listing what
moves its value, and the function). Importing this package imports no network code: lpips,
pytorch-fid and torchvision are imported when an LPIPS or FID value is first asked for.
"""

from . import _register_all  # noqa: F401 - registers the protocols
from .evaluate import (
    IMAGE_EXTENSIONS,
    check_pair,
    default_workers,
    evaluate_pairs,
    metrics_for_dirs,
    pair_files,
    read_image,
    resolve_protocols,
)
from .fid import fid_features, fid_from_features, fid_from_images, fid_inception
from .fullref import ssim_3d
from .image import composite, rgb_to_y, to_mask, to_uint8
from .perceptual import lpips_distance, lpips_model
from .protocol import MetricInputError, Protocol, get_protocol, protocol_ids
from .realblur import ecc_align

__all__ = [
    "IMAGE_EXTENSIONS", "MetricInputError", "Protocol", "check_pair", "composite",
    "default_workers", "ecc_align", "evaluate_pairs", "fid_features", "fid_from_features",
    "fid_from_images", "fid_inception", "get_protocol", "lpips_distance", "lpips_model",
    "metrics_for_dirs", "pair_files", "protocol_ids", "read_image", "resolve_protocols",
    "rgb_to_y", "ssim_3d", "to_mask", "to_uint8",
]
