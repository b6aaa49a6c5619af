"""Synthetic degradations for the embedded deblurring sets.

- Camera-shake motion blur: a random-walk camera trajectory in the spirit of Boracchi & Foi
  (2012, "Modeling the performance of image restoration from motion blur") as used by DeblurGAN:
  a particle with inertia, a centripetal pull back to the start, Gaussian jitter and occasional
  impulsive "big shakes"; the kernel is the time the trajectory spends over each kernel pixel
  (bilinear splatting of finely sampled positions), normalised to sum 1.
- Defocus blur: a uniform disk (pillbox) of a given radius, anti-aliased by supersampling.
- `blur_image`: per-channel 2-D correlation with edge replication, optional Gaussian noise,
  rounding to uint8. Everything is numpy/scipy with a seeded `numpy.random.Generator`:
  deterministic for a given seed on a given platform.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage


def motion_trajectory(
    rng: np.random.Generator,
    n_steps: int = 2000,
    max_length: float = 60.0,
) -> np.ndarray:
    """A random camera-shake trajectory: complex positions (n_steps,), starting at 0.

    Per trajectory: exploration ``e`` log-uniform in [0.003, 0.01] (DeblurGAN's range), centripetal pull ``c ~ 0.7 U(0,1)``, big-shake
    probability ``p ~ 0.2 U(0,1)``, Gaussian shake ``g ~ 10 U(0,1)``, initial direction uniform.
    Per step the velocity gets an impulsive turn with probability ``p * e``, Gaussian jitter
    ``e * g * N(0,1)`` and a pull ``-e * c * x`` to the origin, then is renormalised to the step length
    ``max_length / (n_steps - 1)``.
    """
    expl = 10 ** rng.uniform(math.log10(0.003), math.log10(0.01))
    centripetal = 0.7 * rng.random()
    prob_big = 0.2 * rng.random()
    gauss = 10.0 * rng.random()
    step = max_length / (n_steps - 1)
    angle = 2 * math.pi * rng.random()
    v = complex(math.cos(angle), math.sin(angle)) * step
    x = np.zeros(n_steps, dtype=np.complex128)
    # draw all random numbers up front (one stream, fixed order)
    u_big = rng.random(n_steps - 1)
    u_turn = rng.random(n_steps - 1)
    g_re = rng.standard_normal(n_steps - 1)
    g_im = rng.standard_normal(n_steps - 1)
    for t in range(n_steps - 1):
        dv = 0j
        if u_big[t] < prob_big * expl:
            turn = complex(math.cos(math.pi + (u_turn[t] - 0.5)), math.sin(math.pi + (u_turn[t] - 0.5)))
            dv += 2.0 * v * turn * expl
        dv += expl * (gauss * complex(g_re[t], g_im[t]) - centripetal * x[t]) * step
        v = v + dv
        mag = abs(v)
        v = v / mag * step if mag > 0 else complex(step, 0.0)
        x[t + 1] = x[t] + v
    return x


def trajectory_kernel(traj: np.ndarray, size: int, exposure: float = 1.0) -> np.ndarray:
    """Kernel (size, size) float64 summing to 1: bilinear splat of the first ``exposure`` fraction
    of the trajectory, scaled to fit and centred on the kernel's centre of mass."""
    n = max(2, int(round(len(traj) * exposure)))
    pts = traj[:n]
    pts = pts - (pts.real.min() + 1j * pts.imag.min())
    extent = max(pts.real.max(), pts.imag.max(), 1e-9)
    scale = min(1.0, (size - 2) / extent)
    pts = pts * scale
    # centre
    off = (size - 1) / 2.0 * (1 + 1j) - (pts.real.mean() + 1j * pts.imag.mean())
    pts = pts + off
    xs = np.clip(pts.real, 0, size - 1 - 1e-9)
    ys = np.clip(pts.imag, 0, size - 1 - 1e-9)
    x0 = np.floor(xs).astype(np.int64)
    y0 = np.floor(ys).astype(np.int64)
    fx = xs - x0
    fy = ys - y0
    k = np.zeros(size * size)
    for dy, dx, w in ((0, 0, (1 - fx) * (1 - fy)), (0, 1, fx * (1 - fy)), (1, 0, (1 - fx) * fy), (1, 1, fx * fy)):
        yy = np.minimum(y0 + dy, size - 1)
        xx = np.minimum(x0 + dx, size - 1)
        k += np.bincount(yy * size + xx, weights=w, minlength=size * size)
    k = k.reshape(size, size)
    return k / k.sum()


def motion_kernel(rng: np.random.Generator, size: int = 15, max_length: float | None = None) -> np.ndarray:
    """A random camera-shake kernel (size, size), float64, sum 1."""
    if max_length is None:
        max_length = size * (0.5 + 0.5 * rng.random())
    traj = motion_trajectory(rng, n_steps=1000, max_length=max_length)
    exposure = 0.5 + 0.5 * rng.random()
    return trajectory_kernel(traj, size, exposure)


def disk_kernel(radius: float, supersample: int = 8) -> np.ndarray:
    """Uniform disk (pillbox) kernel of the given radius in pixels, anti-aliased, sum 1."""
    if radius <= 0:
        return np.ones((1, 1))
    half = int(math.ceil(radius))
    size = 2 * half + 1
    s = supersample
    coords = (np.arange(size * s) + 0.5) / s - size / 2.0
    yy, xx = np.meshgrid(coords, coords, indexing="ij")
    inside = (xx * xx + yy * yy) <= radius * radius
    k = inside.reshape(size, s, size, s).mean(axis=(1, 3))
    return k / k.sum()


def blur_image(
    image: np.ndarray,
    kernel: np.ndarray,
    rng: np.random.Generator | None = None,
    noise_sigma: float = 0.0,
) -> np.ndarray:
    """Blur a (H, W, 3) uint8 image with ``kernel`` (correlation, edges replicated), add
    Gaussian noise of ``noise_sigma`` (in 0..255 units), round and clip to uint8."""
    img = image.astype(np.float64)
    out = np.empty_like(img)
    for c in range(img.shape[2]):
        out[..., c] = ndimage.correlate(img[..., c], kernel, mode="nearest")
    if noise_sigma > 0:
        if rng is None:
            raise ValueError("noise needs a random generator")
        out = out + rng.normal(0.0, noise_sigma, size=out.shape)
    return np.clip(np.floor(out + 0.5), 0, 255).astype(np.uint8)
