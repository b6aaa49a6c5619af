"""Training losses: L1, FFT L1, VGG perceptual and style (Gram), adversarial.

All losses are computed in float32 (they are called outside autocast by the loop).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------------
# pixel and frequency losses


def l1_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
            norm: str = "mean") -> torch.Tensor:
    """Mean absolute error over the whole image.

    ``norm="mask_mean"`` divides it by ``mean(mask)`` (the SEM-Net reference code), which weights
    images with small holes more; ``"mean"`` is the paper's Eq. 1.
    """
    loss = F.l1_loss(pred, target)
    if norm == "mask_mean":
        if mask is None:
            raise ValueError("l1_norm 'mask_mean' needs the mask")
        loss = loss / mask.mean()
    elif norm != "mean":
        raise ValueError(f"unknown l1 norm {norm!r}")
    return loss


def fft_l1_loss(pred: torch.Tensor, target: torch.Tensor, kind: str = "fft2") -> torch.Tensor:
    """L1 between the real and imaginary parts of the 2-D spectra (mean reduction).

    ``fft2`` is the EVSSM reference ``FFTLoss`` (full spectrum); ``rfft2`` the one-sided one.
    """
    fn = {"fft2": torch.fft.fft2, "rfft2": torch.fft.rfft2}[kind]
    p = fn(pred.float(), dim=(-2, -1))
    t = fn(target.float(), dim=(-2, -1))
    return F.l1_loss(torch.stack([p.real, p.imag], -1), torch.stack([t.real, t.imag], -1))


# ----------------------------------------------------------------------------------------------
# VGG feature extractor (torchvision layout, so pretrained state dicts load as they are)

_VGG_CFG = {
    "vgg16": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    "vgg19": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
              512, 512, 512, 512, "M"],
}


def _layer_names(cfg: Sequence) -> list[str]:
    """Names of the modules of torchvision's ``vgg.features`` (conv1_1, relu1_1, ..., pool5)."""
    names, block, i = [], 1, 0
    for v in cfg:
        if v == "M":
            names.append(f"pool{block}")
            block, i = block + 1, 0
        else:
            i += 1
            names += [f"conv{block}_{i}", f"relu{block}_{i}"]
    return names


VGG_ARCH_LAYERS = {arch: _layer_names(cfg) for arch, cfg in _VGG_CFG.items()}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg_features(arch: str, upto: int | None = None, generator: torch.Generator | None = None
                 ) -> nn.Sequential:
    """torchvision's ``vgg{16,19}().features`` (same module indices), cut after ``upto``.

    Weights are initialised as torchvision does (Kaiming normal, fan_out, zero bias), drawn from
    ``generator`` so that a random-init network is a function of its seed.
    """
    layers: list[nn.Module] = []
    c = 3
    for v in _VGG_CFG[arch]:
        if v == "M":
            layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
        else:
            conv = nn.Conv2d(c, v, kernel_size=3, padding=1)
            fan_out = v * 9
            with torch.no_grad():
                conv.weight.normal_(0.0, (2.0 / fan_out) ** 0.5, generator=generator)
                conv.bias.zero_()
            layers += [conv, nn.ReLU(inplace=False)]
            c = v
    if upto is not None:
        layers = layers[: upto + 1]
    return nn.Sequential(*layers)


class MissingBackbone(RuntimeError):
    """The pretrained-weights module is not available (one-line message)."""


def pretrained_vgg_state(arch: str) -> dict[str, torch.Tensor]:
    """State dict of the pretrained ``arch`` features from :mod:`ssmrepro.pretrained`.

    Raises that module's ``MissingPretrainedWeights`` (one line naming the file and folder)
    when the weights are absent.
    """
    try:
        from ssmrepro.pretrained import torchvision_backbone
    except ImportError as e:  # pragma: no cover - depends on another module being present
        raise MissingBackbone(
            f"pretrained {arch} weights are needed (perceptual/style losses at mini/paper scale) "
            f"but ssmrepro.pretrained cannot be imported: {e}"
        ) from None
    net = torchvision_backbone(arch)
    feats = getattr(net, "features", net)
    return {k: v.detach().clone() for k, v in feats.state_dict().items()}


class VGGFeatures(nn.Module):
    """Frozen VGG returning the named activations (``relu3_4``, ``pool2``, ...)."""

    def __init__(self, arch: str, layers: Iterable[str], *, pretrained: bool, seed: int = 0,
                 input_norm: str = "raw"):
        super().__init__()
        names = VGG_ARCH_LAYERS[arch]
        self.layers = sorted(set(layers), key=names.index)
        upto = max(names.index(n) for n in self.layers)
        self.names = names[: upto + 1]
        g = torch.Generator().manual_seed(int(seed))
        self.features = vgg_features(arch, upto, generator=g)
        if pretrained:
            state = pretrained_vgg_state(arch)
            own = self.features.state_dict()
            self.features.load_state_dict({k: state[k] for k in own})
        self.features.requires_grad_(False)
        self.features.eval()
        self.input_norm = input_norm
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True):  # always frozen
        super().train(False)
        return self

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.input_norm == "imagenet":
            x = (x - self.mean) / self.std
        out = {}
        want = set(self.layers)
        for name, layer in zip(self.names, self.features):
            x = layer(x)
            if name in want:
                out[name] = x
        return out


def gram(x: torch.Tensor) -> torch.Tensor:
    """Gram matrix normalised by C*H*W (as the SEM-Net reference and PConv)."""
    b, c, h, w = x.shape
    f = x.reshape(b, c, h * w)
    return f.bmm(f.transpose(1, 2)) / (c * h * w)


class PerceptualStyle(nn.Module):
    """Perceptual (L1 of features) and style (L1 of Gram matrices) losses on one frozen VGG."""

    def __init__(self, vgg: VGGFeatures, perceptual_layers: Sequence[str], style_layers: Sequence[str]):
        super().__init__()
        self.vgg = vgg
        self.perceptual_layers = list(perceptual_layers)
        self.style_layers = list(style_layers)

    def perceptual(self, fx: dict, fy: dict) -> torch.Tensor:
        return sum(F.l1_loss(fx[n], fy[n]) for n in self.perceptual_layers)

    def style(self, fx: dict, fy: dict) -> torch.Tensor:
        return sum(F.l1_loss(gram(fx[n]), gram(fy[n])) for n in self.style_layers)


# ----------------------------------------------------------------------------------------------
# adversarial


def d_output(out) -> torch.Tensor:
    """The score map of a discriminator that may also return intermediate features."""
    return out[0] if isinstance(out, (tuple, list)) else out


def adversarial_loss(score: torch.Tensor, real: bool, kind: str, probabilities: bool) -> torch.Tensor:
    """``nsgan``: binary cross-entropy (log-loss); ``lsgan``: squared error on sigmoid outputs.

    ``probabilities`` says the discriminator already applied a sigmoid (the reference D does for
    both kinds); otherwise ``score`` are logits.
    """
    score = score.float()
    target = torch.ones_like(score) if real else torch.zeros_like(score)
    if kind == "nsgan":
        if probabilities:
            return F.binary_cross_entropy(score, target)
        return F.binary_cross_entropy_with_logits(score, target)
    if kind == "lsgan":
        p = score if probabilities else torch.sigmoid(score)
        return F.mse_loss(p, target)
    raise ValueError(f"unknown adversarial loss {kind!r}")
