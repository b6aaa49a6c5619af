"""SEM-Net's discriminator: the spectral-norm PatchGAN of the reference code (ChrisChen1023/SEM-Net
@ 1a5dcd0, ``src/networks.py`` class ``Discriminator``, built in ``src/models.py`` with
``in_channels=3, use_sigmoid = GAN_LOSS != 'hinge'`` (True for the shipped lsgan config)).

Five 4x4 convolutions without bias, each wrapped in ``torch.nn.utils.spectral_norm``:
3 -> 64 (stride 2), 64 -> 128 (2), 128 -> 256 (2), 256 -> 512 (1), 512 -> 1 (1), padding 1,
LeakyReLU(0.2) after the first four; optional sigmoid. 2,763,776 parameters. Forward returns
``(output, [conv1, conv2, conv3, conv4, conv5])`` like the reference (features for feature matching).
Initialisation as the reference ``BaseNetwork.init_weights('normal', 0.02)``: weights N(0, 0.02).

Parameter names: ``conv{1..5}.0.weight_orig`` plus the spectral-norm buffers ``weight_u``/``weight_v``
(as the reference). The reference also registers ``conv1`` under a second name, ``features``
(``self.conv1 = self.features = nn.Sequential(...)``), so its state dict repeats every ``conv1.*``
entry as ``features.*``. Here each parameter has one name; ``from_reference_state_dict`` drops the
``features.*`` copies (checking they equal ``conv1.*``) and a DataParallel ``module.`` prefix.
"""

from __future__ import annotations

import torch
import torch.nn as nn

CHANNELS = (64, 128, 256, 512, 1)
STRIDES = (2, 2, 2, 1, 1)


class PatchDiscriminator(nn.Module):
    def __init__(self, in_channels: int = 3, use_sigmoid: bool = True, use_spectral_norm: bool = True,
                 init_weights: bool = True):
        super().__init__()
        self.use_sigmoid = use_sigmoid
        c_in = in_channels
        for i, (c_out, stride) in enumerate(zip(CHANNELS, STRIDES), start=1):
            conv = nn.Conv2d(c_in, c_out, kernel_size=4, stride=stride, padding=1,
                             bias=not use_spectral_norm)
            if init_weights:
                nn.init.normal_(conv.weight, 0.0, 0.02)
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)
            if use_spectral_norm:
                conv = nn.utils.spectral_norm(conv)
            layers = [conv] + ([nn.LeakyReLU(0.2)] if i < len(CHANNELS) else [])
            self.add_module(f"conv{i}", nn.Sequential(*layers))
            c_in = c_out

    def forward(self, x: torch.Tensor):
        feats = []
        for i in range(1, len(CHANNELS) + 1):
            x = getattr(self, f"conv{i}")(x)
            feats.append(x)
        out = torch.sigmoid(x) if self.use_sigmoid else x
        return out, feats


def from_reference_state_dict(state_dict: dict) -> dict:
    """Reference ``ckpt['discriminator']`` -> ours: drop ``module.`` and the ``features.*`` alias."""
    sd = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state_dict.items()}
    out = {}
    for key, value in sd.items():
        if key.startswith("features."):
            twin = "conv1." + key[len("features."):]
            if twin not in sd or not torch.equal(sd[twin], value):
                raise ValueError(f"reference discriminator: {key} is not a copy of {twin}")
            continue
        out[key] = value
    return out
