"""The receptive-field baselines (Restormer, NAFNet, FFTformer): parameter counts of the published
configurations, the size rule, forward/backward at the smallest legal size, reference parameter
names, the NAFNet test-time local pooling, and the cards."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from ssmrepro.complexity import count_parameters
from ssmrepro.nn.fftformer import FFTformer
from ssmrepro.nn.nafnet import LocalAvgPool2d, NAFNet
from ssmrepro.nn.restormer import Restormer
from ssmrepro.registry import MODELS

# Tiny widths for running; the published sizes are only built on the meta device (no memory).
TINY = {
    "restormer": dict(dim=8, num_blocks=[1, 1, 1, 1], num_refinement_blocks=1, heads=[1, 1, 2, 2]),
    "nafnet": dict(width=8, enc_blk_nums=[1, 1, 1, 1], middle_blk_num=1, dec_blk_nums=[1, 1, 1, 1]),
    "fftformer": dict(dim=8, num_blocks=[1, 1, 1], num_refinement_blocks=1),
}
MULTIPLE = {"restormer": 8, "nafnet": 16, "fftformer": 32}


def build(name: str, **kw):
    return MODELS.get(name)(**{**TINY[name], **kw})


def _meta_count(cls, **kw) -> int:
    with torch.device("meta"):
        return count_parameters(cls(**kw))


@pytest.mark.parametrize("cls, kw, expected", [
    (Restormer, {}, 26_126_644),
    (NAFNet, {}, 67_888_835),  # NAFNet-GoPro-width64: width 64, enc [1,1,1,28], middle 1, dec [1,1,1,1]
    (NAFNet, {"width": 32}, 17_111_907),  # NAFNet-GoPro-width32
    (FFTformer, {}, 16_560_474),  # GoPro.yml: dim 48, [6,6,12], refinement 4, ffn 3 (paper: 16.6M)
    (FFTformer, {"keep_unused": False}, 16_560_474 - 192 * 96),  # without the unused 1x1 conv
], ids=["restormer", "nafnet-w64", "nafnet-w32", "fftformer", "fftformer-used"])
def test_published_parameter_counts(cls, kw, expected):
    assert _meta_count(cls, **kw) == expected


def test_reference_parameter_names():
    with torch.device("meta"):
        keys = {
            "restormer": set(Restormer().state_dict()),
            "nafnet": set(NAFNet().state_dict()),
            "fftformer": set(FFTformer().state_dict()),
        }
    assert {"patch_embed.proj.weight", "encoder_level1.0.norm1.body.weight",
            "encoder_level1.0.attn.temperature", "latent.7.ffn.project_out.weight",
            "reduce_chan_level3.weight", "refinement.3.attn.qkv_dwconv.weight",
            "output.weight"} <= keys["restormer"]
    assert {"intro.weight", "encoders.3.27.sca.1.weight", "encoders.0.0.beta", "downs.3.bias",
            "ups.0.0.weight", "middle_blks.0.norm1.weight", "ending.bias"} <= keys["nafnet"]
    assert {"encoder_level3.11.ffn.fft", "decoder_level1.0.attn.to_hidden_dw.weight",
            "decoder_level1.0.attn.norm.body.bias", "fuse2.att_channel.ffn.fft", "fuse1.conv2.bias",
            "reduce_chan_level2.weight", "down1_2.body.1.weight"} <= keys["fftformer"]
    assert not any(k.startswith("encoder_level1.0.attn") for k in keys["fftformer"])  # no FSAS in encoders


@pytest.mark.parametrize("name", ["restormer", "nafnet", "fftformer"])
def test_contract_attributes(name):
    m = build(name)
    assert m.task == "deblurring"
    assert m.input_multiple == MULTIPLE[name]
    assert m.pads_input is True
    assert build(name, pad_input=False).pads_input is False


@pytest.mark.parametrize("name", ["restormer", "nafnet", "fftformer"])
def test_forward_backward_smallest_size(name):
    torch.manual_seed(0)
    m = build(name, pad_input=False)
    k = MULTIPLE[name]
    x = torch.rand(2, 3, k, k, requires_grad=True)
    y = m(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    unused = {"reduce_chan_level2.weight"} if name == "fftformer" else set()
    for n, p in m.named_parameters():
        if n not in unused:
            assert p.grad is not None, f"{name}: no gradient for {n}"
            assert torch.isfinite(p.grad).all(), n


@pytest.mark.parametrize("name", ["restormer", "nafnet", "fftformer"])
def test_bad_size_raises_naming_the_multiple(name):
    k = MULTIPLE[name]
    m = build(name, pad_input=False)
    with pytest.raises(ValueError, match=rf"multiples of {k}\b"):
        m(torch.rand(1, 3, k + k // 2, 2 * k))
    with pytest.raises(ValueError, match="channels"):
        m(torch.rand(1, 4, k, k))


@pytest.mark.parametrize("name", ["restormer", "fftformer"])
def test_reflect_padding_below_min_size_raises(name):
    k = MULTIPLE[name]
    m = build(name)
    assert m.min_size == k // 2 + 1
    with pytest.raises(ValueError, match=rf"multiples of {k}\b"):
        m(torch.rand(1, 3, k // 2, k))


@pytest.mark.parametrize("name, mode", [("restormer", "reflect"), ("nafnet", "constant"),
                                        ("fftformer", "reflect")])
def test_padding_matches_reference_test_procedure(name, mode):
    """pad_input=True = pad bottom/right (reflect: the reference test scripts; zeros: NAFNet's own
    check_image_size), run, crop."""
    torch.manual_seed(1)
    padded = build(name).eval()
    strict = build(name, pad_input=False).eval()
    strict.load_state_dict(padded.state_dict())
    k = MULTIPLE[name]
    h, w = k + 3, 2 * k - 5
    x = torch.rand(1, 3, h, w)
    with torch.no_grad():
        y = padded(x)
        ref = strict(F.pad(x, (0, 2 * k - w, 0, 2 * k - h), mode=mode))[..., :h, :w]
    assert y.shape == x.shape
    torch.testing.assert_close(y, ref)


def test_nafnet_local_pool_windows_and_values():
    m = NAFNet(width=8, enc_blk_nums=[1, 1], middle_blk_num=1, dec_blk_nums=[1, 1], tlc_train_size=256)
    assert [e[0].sca[0].kernel for e in m.encoders] == [384, 192]
    assert m.middle_blks[0].sca[0].kernel == 96
    assert [d[0].sca[0].kernel for d in m.decoders] == [192, 384]
    assert isinstance(NAFNet(width=8, tlc_train_size=None).encoders[0][0].sca[0], torch.nn.AdaptiveAvgPool2d)

    x = torch.rand(1, 2, 7, 9, dtype=torch.float64)
    torch.testing.assert_close(LocalAvgPool2d(9)(x), x.mean((-2, -1), keepdim=True))
    out = LocalAvgPool2d(3)(x)
    assert out.shape == x.shape
    # interior: the mean of the 3x3 window whose top-left is (i-1, j-1); borders replicate
    for i in range(1, 6):
        for j in range(1, 8):
            torch.testing.assert_close(out[..., i, j], x[..., i - 1:i + 2, j - 1:j + 2].mean((-2, -1)))
    torch.testing.assert_close(out[..., 0, :], out[..., 1, :])
    torch.testing.assert_close(out[..., :, -1], out[..., :, -2])


def test_nafnet_tlc_is_global_pooling_up_to_the_window():
    torch.manual_seed(2)
    kw = dict(width=8, enc_blk_nums=[1, 1], middle_blk_num=1, dec_blk_nums=[1, 1])
    local, plain = NAFNet(**kw, tlc_train_size=16), NAFNet(**kw, tlc_train_size=None)
    for p in local.parameters():  # beta, gamma start at zero: make the blocks do something
        torch.nn.init.normal_(p, std=0.3)
    plain.load_state_dict(local.state_dict())
    with torch.no_grad():
        x = torch.rand(1, 3, 24, 20)  # window 24 at full resolution covers the map
        torch.testing.assert_close(local(x), plain(x))
        x = torch.rand(1, 3, 40, 40)  # window smaller than the map: local statistics
        assert not torch.allclose(local(x), plain(x))


@pytest.mark.parametrize("card", ["restormer", "nafnet", "fftformer"])
def test_cards_build_at_smoke_scale(card):
    from ssmrepro.cards import load_card

    c = load_card(card)
    assert c.family == card and c.task == "deblurring"
    m = c.build("smoke")
    assert m.input_multiple == c.input["multiple"] and m.pads_input == c.input["pads"]
    k = c.input["multiple"]
    with torch.no_grad():
        assert m(torch.rand(1, 3, k, k)).shape == (1, 3, k, k)
    panels = {str(s.get("figure")): s.get("panel") for s in c.serves if s.get("paper") == "evssm"}
    assert panels["4"] == {"nafnet": "a", "restormer": "b", "fftformer": "c"}[card]  # EVSSM Fig. 4
    paper = c.build("paper") if card == "restormer" else None
    if paper is not None:
        assert count_parameters(paper) == 26_126_644
