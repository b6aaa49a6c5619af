"""Make ``import torchvision`` work on a CPU build of torch.

The only torchvision wheel that accepts torch 2.13.0 is a CUDA build. On CPU torch its compiled
``_C`` extension does not load, and ``torchvision/_meta_registrations.py`` then fails at import
with ``operator torchvision::nms does not exist``, which also breaks lpips and pytorch-fid.

The fix registers the schemas of torchvision's custom operators (nms, roi_align, ...) before the
first ``import torchvision``. The operators then exist without a kernel: the models this project
uses (VGG, AlexNet, Inception) never call them. Calling one raises torch's usual "no kernel" error.
On a machine where torchvision's extension loads (a matching CUDA or CPU build), nothing is done.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import torch

# Schemas as declared in torchvision/csrc/ops/*.cpp (torchvision 0.2x).
_SCHEMAS = [
    "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor",
    "qroi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, int sampling_ratio, bool aligned) -> Tensor",
    "_roi_align_backward(Tensor grad, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, SymInt batch_size, SymInt channels, SymInt height, SymInt width, "
    "int sampling_ratio, bool aligned) -> Tensor",
    "ps_roi_align(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width, int sampling_ratio) -> (Tensor, Tensor)",
    "_ps_roi_align_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
    "SymInt pooled_height, SymInt pooled_width, int sampling_ratio, SymInt batch_size, "
    "SymInt channels, SymInt height, SymInt width) -> Tensor",
    "roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width) -> (Tensor, Tensor)",
    "_roi_pool_backward(Tensor grad, Tensor rois, Tensor argmax, float spatial_scale, "
    "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, "
    "SymInt height, SymInt width) -> Tensor",
    "ps_roi_pool(Tensor input, Tensor rois, float spatial_scale, SymInt pooled_height, "
    "SymInt pooled_width) -> (Tensor, Tensor)",
    "_ps_roi_pool_backward(Tensor grad, Tensor rois, Tensor channel_mapping, float spatial_scale, "
    "SymInt pooled_height, SymInt pooled_width, SymInt batch_size, SymInt channels, "
    "SymInt height, SymInt width) -> Tensor",
    "deform_conv2d(Tensor input, Tensor weight, Tensor offset, Tensor mask, Tensor bias, "
    "SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, SymInt dilation_h, "
    "SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask) -> Tensor",
    "_deform_conv2d_backward(Tensor grad, Tensor input, Tensor weight, Tensor offset, Tensor mask, "
    "Tensor bias, SymInt stride_h, SymInt stride_w, SymInt pad_h, SymInt pad_w, "
    "SymInt dilation_h, SymInt dilation_w, SymInt groups, SymInt offset_groups, bool use_mask) "
    "-> (Tensor, Tensor, Tensor, Tensor, Tensor)",
]

_library = None  # keep the Library object alive: dropping it unregisters the schemas
_state: str | None = None


def _ops_registered() -> bool:
    try:
        torch.ops.torchvision.nms  # noqa: B018
        return True
    except (AttributeError, RuntimeError):
        return False


def ensure_torchvision_importable() -> str:
    """Prepare torch so that ``import torchvision`` succeeds. Returns what was done.

    One of: ``"already imported"``, ``"native"`` (torchvision's extension loads),
    ``"shim"`` (schemas registered by this module), ``"absent"`` (torchvision not installed).
    """
    global _library, _state
    if _state is not None:
        return _state
    if "torchvision" in sys.modules:
        _state = "already imported"
        return _state
    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        _state = "absent"
        return _state
    if not _ops_registered():
        ext = sorted(Path(spec.origin).parent.glob("_C*.so"))
        if ext:
            try:
                torch.ops.load_library(str(ext[0]))
            except (OSError, RuntimeError):
                pass
    if _ops_registered():
        _state = "native"
        return _state
    _library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS:
        _library.define(schema)
    _state = "shim"
    return _state


def import_torchvision():
    """Import and return torchvision, applying the shim first where needed."""
    ensure_torchvision_importable()
    import torchvision

    return torchvision
