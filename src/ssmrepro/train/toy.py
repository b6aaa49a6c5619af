"""Tiny models and synthetic in-memory datasets that exercise the real training loop in seconds.

Used by the tests and by ``python -m ssmrepro.train.loop --toy {deblurring,inpainting}``. They
follow the model and dataset contracts (0 and 2) so that the loop sees nothing special; the
datasets draw their crops, flips and masks from all three global generators (python ``random``,
numpy, torch) on purpose, to check that the loop seeds and restores every one of them.
"""

from __future__ import annotations

import random

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.data import Dataset

TOY_CARDS = {
    "deblurring": {
        "name": "toy_deblur", "family": "toy", "task": "deblurring",
        "description": "two-conv residual deblurring toy",
        "switches": {"width": 8}, "scales": {"smoke": {}},
        "input": {"multiple": 1, "pads": False},
        "train": {"recipe": "deblur_l1_fft"},
    },
    "inpainting": {
        "name": "toy_inpaint", "family": "toy", "task": "inpainting",
        "description": "three-conv inpainting toy",
        "switches": {"width": 8}, "scales": {"smoke": {}},
        "input": {"multiple": 1, "pads": False},
        "train": {"recipe": "semnet_inpainting"},
    },
}


class TinyDeblur(nn.Module):
    task = "deblurring"
    input_multiple = 1

    def __init__(self, width: int = 8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, 3, 3, padding=1))

    def forward(self, x):
        return x + self.body(x)


class TinyInpaint(nn.Module):
    task = "inpainting"
    input_multiple = 1

    def __init__(self, width: int = 8):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(4, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, width, 3, padding=1), nn.ReLU(),
                                  nn.Conv2d(width, 3, 3, padding=1))

    def forward(self, masked, mask):
        return (torch.tanh(self.body(torch.cat([masked, mask], 1))) + 1) / 2


class TinyDiscriminator(nn.Module):
    """Spectral-norm PatchGAN in miniature; returns logits and features like the reference D."""

    use_sigmoid = False

    def __init__(self, width: int = 8):
        super().__init__()
        sn = nn.utils.spectral_norm
        self.conv1 = nn.Sequential(sn(nn.Conv2d(3, width, 4, 2, 1)), nn.LeakyReLU(0.2))
        self.conv2 = sn(nn.Conv2d(width, 1, 4, 1, 1))

    def forward(self, x):
        f = self.conv1(x)
        return self.conv2(f), [f]


def build_toy(task: str, width: int = 8) -> nn.Module:
    return {"deblurring": TinyDeblur, "inpainting": TinyInpaint}[task](width)


def _smooth_images(n: int, size: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, size // 8, size // 8, generator=g)
    img = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return img.clamp(0, 1)


class _Synthetic(Dataset):
    def __init__(self, n: int, size: int, patch: int, seed: int):
        if patch > size:
            raise ValueError(f"patch {patch} is larger than the synthetic images ({size})")
        self.images = _smooth_images(n, size, seed)
        self.size, self.patch = size, patch
        self.name = "toy"

    def __len__(self):
        return len(self.images)

    def _crop(self, i):
        top = int(torch.randint(0, self.size - self.patch + 1, (1,)))  # torch generator
        left = int(np.random.randint(0, self.size - self.patch + 1))  # numpy generator
        img = self.images[i, :, top:top + self.patch, left:left + self.patch]
        if random.random() < 0.5:  # python generator
            img = img.flip(-1)
        return img.contiguous()


class SyntheticDeblur(_Synthetic):
    """Smooth random images, box-blurred; random crop and flip."""

    def __getitem__(self, i):
        sharp = self._crop(i)
        k = torch.ones(3, 1, 5, 5) / 25
        blurred = F.conv2d(F.pad(sharp[None], (2, 2, 2, 2), mode="replicate"), k, groups=3)[0]
        return {"input": blurred, "target": sharp, "name": f"toy{i:03d}"}


class SyntheticInpainting(_Synthetic):
    """Smooth random images with one random rectangular hole (mask 1 = hole)."""

    def __getitem__(self, i):
        img = self._crop(i)
        p = self.patch
        h, w = int(np.random.randint(p // 4, p // 2 + 1)), random.randint(p // 4, p // 2)
        y, x = int(torch.randint(0, p - h + 1, (1,))), random.randint(0, p - w)
        mask = torch.zeros(1, p, p)
        mask[:, y:y + h, x:x + w] = 1
        return {"image": img, "mask": mask, "name": f"toy{i:03d}"}


def toy_dataset(task: str, n: int = 16, size: int = 48, data_seed: int = 1234):
    """A factory ``(patch, seed) -> dataset`` as :func:`ssmrepro.train.loop.train` accepts."""
    cls = {"deblurring": SyntheticDeblur, "inpainting": SyntheticInpainting}[task]

    def make(patch: int, seed: int):  # noqa: ARG001 - the images are fixed; the loop seeds the draws
        return cls(n, size, patch, data_seed)

    return make
