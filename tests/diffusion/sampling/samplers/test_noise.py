"""diffusion.noise.image_noise against the WebUI's ImageRNG procedure, in torch (CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from webui_ref import webui_slerp

from diffusion.noise.image_noise import ImageNoise, slerp

pytestmark = pytest.mark.nodevice  # host logic: `pytest -m nodevice`

SHAPE = (4, 5, 7)  # not a multiple of 16 elements: exercises torch's tail redraw


def _webui_draws(seeds: list[int], steps: int, *, subseeds: list[int] | None = None,
                 strength: float = 0.0, ensd: int = 0) -> list[torch.Tensor]:
    """ImageRNG.first() then `steps` calls of next(), with torch's CPU generators."""
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    first = []
    for k, g in enumerate(generators):
        noise = torch.randn(SHAPE, generator=g)
        if subseeds is not None and strength != 0:
            torch.manual_seed(subseeds[k])
            noise = webui_slerp(strength, noise, torch.randn(SHAPE))
        first.append(noise)
    if ensd:
        generators = [torch.Generator().manual_seed(s + ensd) for s in seeds]
    draws = [torch.stack(first)]
    for _ in range(steps):
        draws.append(torch.stack([torch.randn(SHAPE, generator=g) for g in generators]))
    return draws


@pytest.mark.parametrize("ensd", [0, 31337])
def test_torch_draws_equal_the_webuis(ensd: int) -> None:
    noise = ImageNoise("torch", [12, 13, 40], SHAPE, eta_noise_seed_delta=ensd)
    ours = [noise.first()] + [noise.sampler(1.0, 0.5) for _ in range(3)]
    for a, b in zip(ours, _webui_draws([12, 13, 40], 3, ensd=ensd), strict=True):
        np.testing.assert_array_equal(a, b.numpy().astype(np.float64))


def test_variation_seed_is_the_webuis_slerp() -> None:
    noise = ImageNoise("torch", [5, 6], SHAPE, subseeds=[100, 101], subseed_strength=0.3)
    expected = _webui_draws([5, 6], 1, subseeds=[100, 101], strength=0.3)
    np.testing.assert_allclose(noise.first(), expected[0].numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(noise.next(), expected[1].numpy())


def test_slerp_endpoints_and_parallel_case() -> None:
    rng = np.random.default_rng(0)
    low, high = rng.standard_normal((2, *SHAPE))
    np.testing.assert_allclose(slerp(0.0, low, high), low, atol=1e-12)
    np.testing.assert_allclose(slerp(1.0, low, high), high, atol=1e-12)
    np.testing.assert_allclose(slerp(0.25, low, low), low, atol=1e-12)  # linear branch


def test_bad_settings_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="rng must be one of"):
        ImageNoise("cuda", [1], SHAPE)
    with pytest.raises(ValueError, match="subseed strength"):
        ImageNoise("torch", [1], SHAPE, subseed_strength=1.5)
    noise = ImageNoise("numpy", [1], SHAPE)
    noise.first()
    with pytest.raises(RuntimeError, match="already drawn"):
        noise.first()


@pytest.mark.parametrize("resize_from", [(3, 4), (7, 9)])  # smaller and larger than (5, 7)
def test_seed_resize_is_the_webuis(resize_from: tuple[int, int]) -> None:
    """The WebUI's first() with seed_resize_from: the seed's noise at the other size (a
    freshly seeded generator), centred into the image generator's own first draw."""
    seeds, noise_shape = [21, 22], (SHAPE[0], *resize_from)
    expected = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        noise = torch.randn(noise_shape)
        x = torch.randn(SHAPE, generator=generator)
        dx, dy = (SHAPE[2] - noise_shape[2]) // 2, (SHAPE[1] - noise_shape[1]) // 2
        w = noise_shape[2] if dx >= 0 else noise_shape[2] + 2 * dx
        h = noise_shape[1] if dy >= 0 else noise_shape[1] + 2 * dy
        tx, ty = (0 if dx < 0 else dx), (0 if dy < 0 else dy)
        dx, dy = max(-dx, 0), max(-dy, 0)
        x[:, ty:ty + h, tx:tx + w] = noise[:, dy:dy + h, dx:dx + w]
        expected.append(x)
    ours = ImageNoise("torch", seeds, SHAPE, resize_from=resize_from)
    np.testing.assert_array_equal(ours.first(), torch.stack(expected).numpy())
