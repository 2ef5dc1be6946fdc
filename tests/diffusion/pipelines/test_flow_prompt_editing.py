"""The WebUI's prompt editing on FLUX with a WebUI sampler, as Forge runs it, against a
reference written out on torch CPU: k-diffusion's Euler with diffusers' FLUX transformer as the
denoiser (test_flow_hires's), whose prompt states switch where the WebUI's
`reconstruct_cond_batch` switches them: evaluation i (0-based) reads the first entry whose end
step is at or after i."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from kdiffusion_ref import K
from test_flow_hires import _mu, _sigmas, flux_denoiser, flux_picture

import gpucore
from diffusion.pipelines.load import load_pipeline
from diffusion.pipelines.request import GenerationRequest

SEED, STEPS, GUIDANCE = 11, 4, 3.5
FIRST, SECOND = "a red circle", "a blue square"


def _reference(pipe: Any, height: int, width: int, switch_after: int) -> np.ndarray:
    """Euler over the schedule, FIRST's states for evaluations 0..switch_after, SECOND's
    after."""
    scale = pipe.vae_scale_factor
    h, w = height // scale, width // scale
    with torch.no_grad():
        texts = {t: pipe.encode_prompt([t], None, max_sequence_length=512)
                 for t in (FIRST, SECOND)}
    denoisers = {t: flux_denoiser(pipe, states, h, w, GUIDANCE) for t, states in texts.items()}
    calls = []

    def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        text = FIRST if len(calls) <= switch_after else SECOND
        calls.append(text)
        return denoisers[text](x, sigma)

    noise = torch.randn((pipe.transformer.config.in_channels // 4, h, w),
                        generator=torch.Generator().manual_seed(SEED))
    with torch.no_grad():
        sigmas = _sigmas(_mu(h, w), STEPS)
        x = K.sampling.sample_euler(denoise, noise[None].double() * sigmas[0], sigmas,
                                    disable=True)
    assert calls == [FIRST] * (switch_after + 1) + [SECOND] * (STEPS - switch_after - 1)
    return flux_picture(pipe, x)


def test_prompt_editing_matches_the_webui(first_device: gpucore.Device,
                                          tiny_flux_dev: tuple[Path, Any]) -> None:
    """[FIRST:SECOND:2] over 4 steps: FIRST through the third evaluation (steps 0, 1, 2 <= 2),
    SECOND for the last; the same as a fraction ([...:0.5] is step 2 of 4); the plain
    prompts' pictures differ from it."""
    root, reference = tiny_flux_dev
    model = load_pipeline(root / "flux", device=first_device)
    scale = reference.vae_scale_factor
    width, height = 8 * scale, 8 * scale

    def picture(prompt: str) -> np.ndarray:
        return model.generate(GenerationRequest(
            prompt=prompt, width=width, height=height, steps=STEPS, sampler="Euler", seed=SEED,
            rng="torch", cfg_scale=1.0, distilled_cfg_scale=GUIDANCE)).images[0].astype(
                np.float64)

    edited = picture(f"[{FIRST}:{SECOND}:2]")
    assert np.abs(edited - _reference(reference, height, width, switch_after=2)).max() <= 2
    np.testing.assert_array_equal(picture(f"[{FIRST}:{SECOND}:0.5]"), edited)
    for plain in (FIRST, SECOND):
        assert np.abs(picture(plain) - edited).mean() > 1  # the switch visibly acted


@pytest.mark.nodevice
def test_scheduled_flows_pair_the_prompt_and_negative_prompt_schedules() -> None:
    """Each distinct (prompt, negative prompt) pair gets one guided flow, each evaluation the
    pair of its step; a hires pass counts on from the first pass's steps; without editing
    syntax the model's own flow, unchanged."""
    from diffusion.pipelines.flow.flow_schedule import scheduled_flow

    made: list[tuple[str, str]] = []

    class Model:
        def guided_flow(self, request: Any, prompts: list[str], width: int, height: int,
                        cache: Any = None) -> tuple[Any, tuple[int, ...], float]:
            pair = (prompts[0], request.negative_prompt)
            made.append(pair)
            return (lambda x, t: pair), (1, 4, 2, 2), 0.5

    def order(prompt: str, negative: str, steps: int, **hires: Any) -> list[Any]:
        made.clear()
        request = GenerationRequest(prompt=prompt, negative_prompt=negative)
        flow, shape, mu = scheduled_flow(Model(), request, [prompt, prompt], 16, 16, None,
                                         steps=steps, **hires)
        assert (shape, mu) == ((1, 4, 2, 2), 0.5)
        return [flow(None, 0.0) for _ in range(steps if not hires else hires["hires_steps"])]

    got = order("[a:b:1]", "[x:y:2]", 4)
    assert got == [("a", "x"), ("a", "x"), ("b", "x"), ("b", "y")]
    assert made == [("a", "x"), ("b", "x"), ("b", "y")]  # one flow a pair
    # the hires pass: [a:b:6] of a 4-step first pass switches after 2 of its 4 steps
    assert order("[a:b:6]", "n", 4, hires_steps=4) == [("a", "n")] * 3 + [("b", "n")]
    plain = order("a [red] car", "n", 3)
    assert plain == [("a [red] car", "n")] * 3 and len(made) == 1
