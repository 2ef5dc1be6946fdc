"""The WebUI's noise: one generator per image, variation seeds, and the eta noise seed delta.

The WebUI (`modules/rng.py`, `ImageRNG`) gives image k of a batch its own generator seeded with
that image's seed. The generator's first draw is the image's initial noise; ancestral samplers
then draw their per-step noise from the same generator, one image at a time, or — when the eta
noise seed delta (ENSD) is set — from a fresh generator seeded with `seed + ENSD`. A variation
seed (`subseed`, `subseed_strength`) blends the seed's noise with the subseed's by the WebUI's
slerp. Drawn with `rng="torch"`, every value equals the WebUI's with "RNG: CPU".
"""

from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np

from .rng import RNG_SOURCES, make_generator

__all__ = ["ImageNoise", "slerp"]

# Draws the next per-step noise while the sampler waits for the GPU (ImageNoise.next).
_AHEAD = ThreadPoolExecutor(max_workers=1, thread_name_prefix="image-noise")


def slerp(t: float, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The WebUI's spherical interpolation of two (C, H, W) noises at `t` (0 = `low`).

    As the WebUI's `rng.slerp`, norms and angles are taken along axis 1 (the image's rows), one
    angle per (channel, column), and nearly parallel noises are blended linearly."""
    low_unit = low / np.linalg.norm(low, axis=1, keepdims=True)
    high_unit = high / np.linalg.norm(high, axis=1, keepdims=True)
    dot = (low_unit * high_unit).sum(axis=1)
    if dot.mean() > 0.9995:
        return low * t + high * (1 - t)
    omega = np.arccos(dot)
    sine = np.sin(omega)
    return ((np.sin((1.0 - t) * omega) / sine)[:, None, :] * low
            + (np.sin(t * omega) / sine)[:, None, :] * high)


def _centred(noise: np.ndarray, canvas: np.ndarray) -> np.ndarray:
    """`noise` (C, h, w) placed at the centre of `canvas` (C, H, W), cropped where it is larger:
    the WebUI's "Resize seed from", which keeps a seed's composition at another size."""
    canvas = canvas.copy()
    dy, dx = (canvas.shape[1] - noise.shape[1]) // 2, (canvas.shape[2] - noise.shape[2]) // 2
    h = noise.shape[1] if dy >= 0 else noise.shape[1] + 2 * dy
    w = noise.shape[2] if dx >= 0 else noise.shape[2] + 2 * dx
    ty, tx, sy, sx = max(dy, 0), max(dx, 0), max(-dy, 0), max(-dx, 0)
    canvas[:, ty:ty + h, tx:tx + w] = noise[:, sy:sy + h, sx:sx + w]
    return canvas


class ImageNoise:
    """Per-image noise for a batch with `seeds` (one per image), latents of `shape` (C, H, W).

    `first()` is the batch's initial noise (B, C, H, W); each later `next()` is one draw of
    per-step noise for the whole batch (what the WebUI's ancestral samplers get from
    `randn_like`). `rng` is "torch" (torch's CPU generator: the WebUI's "RNG: CPU") or "numpy".
    """

    def __init__(self, rng: str, seeds: Sequence[int], shape: tuple[int, int, int], *,
                 subseeds: Sequence[int] | None = None, subseed_strength: float = 0.0,
                 eta_noise_seed_delta: int = 0,
                 resize_from: tuple[int, int] | None = None) -> None:
        if rng not in RNG_SOURCES:
            raise ValueError(f"rng must be one of {list(RNG_SOURCES)}, got {rng!r}")
        if not 0.0 <= subseed_strength <= 1.0:
            raise ValueError(f"subseed strength must be in [0, 1], got {subseed_strength}")
        if eta_noise_seed_delta < 0:
            raise ValueError(f"eta noise seed delta must be >= 0, got {eta_noise_seed_delta}")
        self.rng = rng
        self.seeds = [int(seed) for seed in seeds]
        self.shape = tuple(shape)
        self.subseeds = None if subseeds is None else [int(s) for s in subseeds]
        self.subseed_strength = float(subseed_strength)
        self.eta_noise_seed_delta = int(eta_noise_seed_delta)
        # "Resize seed from": the seed's noise drawn at this latent (height, width), centred
        self.resize_from = None if resize_from is None or tuple(resize_from) == shape[1:] \
            else (int(resize_from[0]), int(resize_from[1]))
        self._generators = [make_generator(rng, seed) for seed in self.seeds]
        self._started = False
        self._ahead: Future[np.ndarray] | None = None

    def first(self) -> np.ndarray:
        """The initial noise, image k from seed k (blended with its subseed's noise)."""
        if self._started:
            raise RuntimeError("first() was already drawn; make a new ImageNoise per batch")
        self._started = True
        shape = self.shape if self.resize_from is None else (self.shape[0], *self.resize_from)
        images = []
        for k, (seed, generator) in enumerate(zip(self.seeds, self._generators, strict=True)):
            if self.resize_from is None:
                noise = generator.standard_normal(shape)
            else:  # the WebUI seeds a fresh generator for the other size
                noise = make_generator(self.rng, seed).standard_normal(shape)
            if self.subseeds is not None and self.subseed_strength != 0:
                subseed = self.subseeds[k] if k < len(self.subseeds) else 0
                sub = make_generator(self.rng, subseed).standard_normal(shape)
                noise = slerp(self.subseed_strength, noise, sub)
            if self.resize_from is not None:
                noise = _centred(noise, generator.standard_normal(self.shape))
            images.append(noise)
        if self.eta_noise_seed_delta:
            self._generators = [make_generator(self.rng, seed + self.eta_noise_seed_delta)
                                for seed in self.seeds]
        return np.stack(images).astype(np.float64)

    def next(self) -> np.ndarray:
        """One per-step draw for the batch (B, C, H, W); the first call is `first()`.

        From the first per-step draw on, the one after it is drawn ahead on a worker thread
        (the same values, in the same order): torch's generator takes ~2 ms of host time for
        a 64 x 64 latent, time in which the GPU would otherwise wait between two steps."""
        if not self._started:
            return self.first()
        ahead, self._ahead = self._ahead, None
        noise = self._draw() if ahead is None else ahead.result()
        self._ahead = _AHEAD.submit(self._draw)
        return noise

    def _draw(self) -> np.ndarray:
        return np.stack([g.standard_normal(self.shape) for g in self._generators]).astype(
            np.float64)

    def sampler(self, sigma: float, sigma_next: float) -> np.ndarray:
        """`next()` as a sampler's noise source (the step's sigmas are not needed)."""
        return self.next()
