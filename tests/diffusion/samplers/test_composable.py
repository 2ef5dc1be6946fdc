"""Composable diffusion (the WebUI's `AND`): the guidance of a prompt's parts.

The WebUI (`sd_samplers_cfg_denoiser.CFGDenoiser`) runs the UNet once per part of each image's
prompt and once on the negative prompt, all in one batch, and combines the predictions with
`combine_denoised`:

    denoised[i] = uncond[i]; for each part (row, weight) of image i:
        denoised[i] += (out[row] - uncond[i]) * (weight * cfg_scale)

The expected values here are that loop written out in numpy over the model outputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import gpucore
from diffusion.pipelines.sampling import CFGDenoiser, GuidedUNet, combine
from diffusion.samplers.denoiser import DiscreteSchedule
from gpustd import asarray


def _webui_combine(out_cond: np.ndarray, out_uncond: np.ndarray,
                   conds_list: list[list[tuple[int, float]]], cfg_scale: float) -> np.ndarray:
    """`combine_denoised` with the WebUI's explicit row indexes."""
    denoised = out_uncond.copy()
    for i, conds in enumerate(conds_list):
        for row, weight in conds:
            denoised[i] += (out_cond[row] - out_uncond[i]) * (weight * cfg_scale)
    return denoised


@pytest.mark.nodevice
def test_combine_is_the_webuis_combine_denoised() -> None:
    rng = np.random.default_rng(0)
    uncond = rng.standard_normal((2, 4, 3, 3))
    cond = rng.standard_normal((3, 4, 3, 3))
    weights = ((1.0, -0.5), (1.3,))
    expected = _webui_combine(cond, uncond, [[(0, 1.0), (1, -0.5)], [(2, 1.3)]], 7.0)
    assert np.array_equal(combine(uncond, cond, weights, 7.0), expected)
    closed = uncond.copy()
    closed[0] += 7.0 * ((cond[0] - uncond[0]) - 0.5 * (cond[1] - uncond[0]))
    closed[1] += 7.0 * 1.3 * (cond[2] - uncond[1])
    assert np.allclose(combine(uncond, cond, weights, 7.0), closed, rtol=0, atol=1e-12)
    # one part at weight 1 a picture is plain CFG, to the bit
    plain = uncond + (cond[:2] - uncond) * 7.0
    assert np.array_equal(combine(uncond, cond[:2], None, 7.0), plain)
    assert np.array_equal(combine(uncond, cond[:2], ((1.0,), (1.0,)), 7.0), plain)
    with pytest.raises(ValueError, match="do not fit 2 uncond and 3 cond rows"):
        combine(uncond, cond, ((1.0,), (1.0,)), 7.0)


def _fake_unet(calls: list[tuple[int, int]]) -> Any:
    """A stand-in UNet whose output tells its rows apart: 2 x + the row's mean context."""

    def step(x: Any, timesteps: Any, hidden: Any) -> Any:
        calls.append((x.shape[0], hidden.shape[1]))
        mean = hidden.numpy().astype(np.float64).mean(axis=(1, 2))
        out = 2 * x.numpy().astype(np.float64) + mean[:, None, None, None]
        return asarray(out.astype(np.float32), device=x.device)

    return step


@pytest.mark.parametrize("uncond_length", [4, 8], ids=["one batch", "two batches"])
def test_each_part_runs_on_its_image_and_is_combined(first_device: gpucore.Device,
                                                     uncond_length: int) -> None:
    """Image 0 has two parts (weights 1, -0.5), image 1 one (1.3): cond rows 0, 1 see image
    0's latents and row 2 image 1's; uncond and cond share a batch when their lengths agree
    (the WebUI's batch_cond_uncond), else run one after the other."""
    rng = np.random.default_rng(1)
    uncond = rng.standard_normal((2, uncond_length, 8)).astype(np.float32)
    cond = rng.standard_normal((3, 4, 8)).astype(np.float32)
    contexts = (asarray(uncond, device=first_device), asarray(cond, device=first_device))
    calls: list[tuple[int, int]] = []
    weights = ((1.0, -0.5), (1.3,))
    unet = GuidedUNet(_fake_unet(calls), lambda step: contexts, dtype=contexts[1].dtype,
                      weights=weights)
    discrete = DiscreteSchedule.from_config({})
    model = CFGDenoiser(unet, discrete, 5.0)
    x = rng.standard_normal((2, 4, 2, 2))
    sigma = 3.0
    denoised = model(x, sigma)

    assert calls == ([(5, 4)] if uncond_length == 4 else [(2, uncond_length), (3, 4)])
    x_in = (x / np.sqrt(sigma**2 + 1)).astype(np.float32).astype(np.float64)
    rows = x_in[[0, 0, 1]]
    out_cond = 2 * rows + cond.astype(np.float64).mean(axis=(1, 2))[:, None, None, None]
    out_uncond = 2 * x_in + uncond.astype(np.float64).mean(axis=(1, 2))[:, None, None, None]
    # epsilon prediction: x0 = x - sigma * eps, of each row's own image
    x0_cond, x0_uncond = x[[0, 0, 1]] - sigma * out_cond, x - sigma * out_uncond
    expected = _webui_combine(x0_cond, x0_uncond, [[(0, 1.0), (1, -0.5)], [(2, 1.3)]], 5.0)
    np.testing.assert_allclose(denoised, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.uncond, x0_uncond, rtol=1e-5, atol=1e-5)  # for CFG++


def test_parts_need_the_uncond(first_device: gpucore.Device) -> None:
    cond = asarray(np.zeros((2, 4, 8), np.float32), device=first_device)
    unet = GuidedUNet(_fake_unet([]), lambda step: (None, cond), dtype=cond.dtype,
                      weights=((1.0, 1.0),))
    with pytest.raises(ValueError, match="guides against the negative prompt"):
        unet(np.zeros((1, 4, 2, 2)), 500.0, 0)
