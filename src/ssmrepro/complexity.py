"""Model complexity: parameters, multiply-accumulates, the scan's own FLOPs, peak memory.

MACs are counted by fvcore's ``FlopCountAnalysis`` (one per multiply-add; torch's own
``FlopCountMode`` counts two). fvcore counts convolutions, linear layers, matmul/bmm/einsum and
normalisations' affine parts it knows; it leaves out element-wise ops, FFTs and, here, the selective
scan: during counting the scan is replaced by the ``skip`` backend, which returns a tensor of the
right shape without counted ops. The scan's own FLOPs are given separately by ``scan_flops``.
"""

from __future__ import annotations

import logging

import torch
import torch.nn as nn

COUNTER = "fvcore.FlopCountAnalysis (1 MAC per multiply-add; excludes selective scan, FFT, element-wise ops)"


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, *inputs: torch.Tensor) -> int:
    """Multiply-accumulates of one forward pass, selective scan excluded (see module doc)."""
    from fvcore.nn import FlopCountAnalysis

    from .ssm.scan import scan_backend

    logging.getLogger("fvcore").setLevel(logging.ERROR)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), scan_backend("skip"):
            analysis = FlopCountAnalysis(model, inputs)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return int(analysis.total())
    finally:
        model.train(was_training)
