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

COUNTER = ("fvcore.FlopCountAnalysis (1 MAC per multiply-add; excludes the selective scan and the "
           "projections that only feed its delta/B/C, FFTs and element-wise ops)")
COUNTER_FULL = ("fvcore.FlopCountAnalysis (1 MAC per multiply-add; excludes the selective scan, FFTs "
                "and element-wise ops; includes the delta/B/C projections)")


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def count_macs(model: nn.Module, *inputs: torch.Tensor, ssm_projections: bool = False) -> int:
    """Multiply-accumulates of one forward pass, selective scan excluded (see module doc).

    ``ssm_projections=False`` (the convention of the published reference counts: EVSSM 121.99 G
    by thop, SEM-Net 240.46 G by fvcore, both at 256x256): the scan is replaced by a stand-in that
    reads only ``u``, so the layers that only compute delta, B and C (``x_proj``, ``dt_proj``, the
    sequence conv of EVSSM) drop out of the trace, as they did in those measurements (thop misses
    EVSSM's raw-parameter einsums; the fused mamba kernel hides SEM-Net's). ``True``: the stand-in
    reads every input, so those layers count (EVSSM: 126.3 G, the supplement's "126 GFLOPs").
    """
    from fvcore.nn import FlopCountAnalysis

    from .ssm.scan import scan_backend

    _register_keep_alive_backend()
    logging.getLogger("fvcore").setLevel(logging.ERROR)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), scan_backend("skip_all_inputs" if ssm_projections else "skip"):
            analysis = FlopCountAnalysis(model, inputs)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            return int(analysis.total())
    finally:
        model.train(was_training)


def _register_keep_alive_backend() -> None:
    """A scan stand-in whose zero output depends on every input (no counted op)."""
    from .ssm import scan as scan_mod

    def skip_all_inputs(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                        return_last_state=False):
        keep = sum(t.sum() for t in (delta, A, B, C, D, z, delta_bias) if t is not None)
        out = torch.zeros_like(u) + 0 * keep
        if return_last_state:
            return out, u.new_zeros((u.shape[0], u.shape[1], A.shape[1]))
        return out

    scan_mod.BACKENDS.setdefault("skip_all_inputs", skip_all_inputs)


# --- the scan's own FLOPs ------------------------------------------------------------------
SCAN_FLOPS_RULE = ("selective scan FLOPs = 9*B*L*D*N (+ B*D*L with D, + B*D*L with z), "
                   "VMamba's flops_selective_scan_ref")


def _register_counting_backend():
    import contextvars

    from .ssm import scan as scan_mod

    calls: contextvars.ContextVar[list | None] = contextvars.ContextVar("scan_calls", default=None)

    def counting(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                 return_last_state=False):
        log = calls.get()
        if log is not None:
            b, d, l = u.shape
            n = A.shape[1]
            log.append(9 * b * l * d * n + (b * d * l if D is not None else 0)
                       + (b * d * l if z is not None else 0))
        return scan_mod.BACKENDS["skip"](u, delta, A, B, C, D=D, z=z, delta_bias=delta_bias,
                                         delta_softplus=delta_softplus,
                                         return_last_state=return_last_state)

    scan_mod.BACKENDS.setdefault("count", counting)
    return calls


def scan_flops(model: nn.Module, *inputs: torch.Tensor) -> int:
    """FLOPs of every selective scan in one forward pass (see ``SCAN_FLOPS_RULE``)."""
    from .ssm.scan import scan_backend

    calls = _register_counting_backend()
    token = calls.set([])
    try:
        with torch.no_grad(), scan_backend("count"):
            model(*inputs)
        return int(sum(calls.get()))
    finally:
        calls.reset(token)


def example_inputs(task: str, size: tuple[int, int], batch: int = 1) -> tuple[torch.Tensor, ...]:
    h, w = size
    g = torch.Generator().manual_seed(0)
    if task == "inpainting":
        mask = (torch.rand(batch, 1, h, w, generator=g) > 0.7).float()
        image = torch.rand(batch, 3, h, w, generator=g)
        return image * (1 - mask) + mask, mask
    return (torch.rand(batch, 3, h, w, generator=g),)


def _peak_memory_child(card_name: str, scale: str, size, root: str, queue) -> None:
    import resource

    import psutil

    from .cards import load_card
    from .paths import project_root

    torch.set_num_threads(1)
    card = load_card(card_name, project_root(root))
    model = card.build(scale).eval()
    inputs = example_inputs(card.task, size)
    before = psutil.Process().memory_info().rss
    with torch.no_grad():
        model(*inputs)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    queue.put(max(0, peak - before))


def peak_forward_memory(card, scale: str, size) -> int:
    """Peak resident memory added by one forward pass on CPU (bytes), measured in a fresh process
    (ru_maxrss after the pass minus the resident size before it)."""
    import multiprocessing as mp

    from .paths import project_root

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_memory_child,
                       args=(card.name, scale, tuple(size), str(project_root()), queue))
    proc.start()
    proc.join(timeout=900)
    if proc.is_alive():
        proc.kill()
        proc.join()
        raise RuntimeError(f"peak-memory measurement of {card.name} did not end within 900 s")
    if proc.exitcode != 0:
        raise RuntimeError(f"peak-memory measurement of {card.name} failed (exit {proc.exitcode})")
    return int(queue.get())


def model_info(card, scale: str = "paper", size=(256, 256), memory: bool = True) -> dict:
    """What ``ssmrepro info`` prints."""
    model = card.build(scale).eval()
    multiple = getattr(model, "input_multiple", 1)
    if not getattr(model, "pads_input", False) and (size[0] % multiple or size[1] % multiple):
        raise ValueError(f"{card.name}: input size {size[0]}x{size[1]} must be a multiple of {multiple}")
    inputs = example_inputs(card.task, size)
    info = {
        "card": card.name, "family": card.family, "scale": scale,
        "input": [1, inputs[0].shape[1] + (1 if card.task == "inpainting" else 0), *size],
        "parameters": count_parameters(model),
        "macs": count_macs(model, *inputs),
        "macs_counter": COUNTER,
        "macs_incl_ssm_projections": count_macs(model, *inputs, ssm_projections=True),
        "macs_incl_ssm_projections_counter": COUNTER_FULL,
        "scan_flops": scan_flops(model, *inputs),
        "scan_flops_rule": SCAN_FLOPS_RULE,
    }
    info["macs_g"] = round(info["macs"] / 1e9, 3)
    info["macs_incl_ssm_projections_g"] = round(info["macs_incl_ssm_projections"] / 1e9, 3)
    if memory:
        info["peak_forward_memory_mib"] = round(peak_forward_memory(card, scale, size) / 2**20, 1)
        info["peak_memory_method"] = "ru_maxrss after one forward minus RSS before, fresh process, CPU"
    return info
