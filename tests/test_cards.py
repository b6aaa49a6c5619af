"""Every card builds at smoke scale and runs forward and backward at its smallest legal size on
every scan backend available here, with the right output shape and range."""

from __future__ import annotations

import pytest
import torch

from ssmrepro.cards import all_cards
from ssmrepro.complexity import example_inputs
from ssmrepro.ssm.scan import available_backends, scan_backend

CARDS = sorted(all_cards())
BACKENDS = [b for b, (ok, _) in available_backends().items() if ok and b in ("reference", "chunked", "cuda")]


def smallest_size(card, model) -> int:
    multiple = getattr(model, "input_multiple", 1)
    size = max(16, int(card.input.get("min_size", 1)), multiple)
    return -(-size // multiple) * multiple


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", CARDS)
def test_card_forward_backward(name, backend):
    card = all_cards()[name]
    torch.manual_seed(0)
    model = card.build("smoke")
    size = smallest_size(card, model)
    inputs = example_inputs(card.task, (size, size), batch=1)
    with scan_backend(backend):
        out = model(*inputs)
        assert out.shape == (1, 3, size, size)
        assert torch.isfinite(out).all()
        if card.task == "inpainting":
            assert out.min() >= 0 and out.max() <= 1
        out.mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_both_cpu_backends_are_covered():
    assert {"reference", "chunked"} <= set(BACKENDS)
