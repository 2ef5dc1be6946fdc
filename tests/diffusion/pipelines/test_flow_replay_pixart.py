"""PixArt's transformer step replayed from the capture its pipeline keeps (diffusion.pipelines.
flow.flow_replay), on tiny random PixArt-Σ and PixArt-α 1024 folders: over several steps and
two prompts in a row on one recording (the prompt's states and the timestep are inputs, the
caption mask and α's picture size static arguments), with its own sampler and with a WebUI
sampler, the latents are the eager ones bit for bit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="builds the tiny test models (extra: reference)")

import gpucore

SIZE = {"height": 24, "width": 40}
# two prompts of as many tokens: one caption mask, so one input signature
PROMPTS = ("a red circle", "a blue cat")
RUN: dict[str, Any] = dict(num_inference_steps=4, guidance_scale=4.5, seed=7,
                           negative_prompt="a photo of a cat", output_type="latent",
                           use_resolution_binning=False, **SIZE)


def _counts(pipe: Any) -> tuple[int, int]:
    captured = pipe.step_replay.captured
    return captured.recordings, captured.replays


def _eager(pipe: Any, *runs: dict[str, Any]) -> list[np.ndarray]:
    """The latents of `runs` (keywords of pipe) with the steps eager, then replaying again."""
    pipe.step_replay.use_eager(True)
    try:
        return [pipe(**run) for run in runs]
    finally:
        pipe.step_replay.use_eager(False)


def test_pixart_replays_its_steps_across_prompts(first_device: gpucore.Device,
                                                 tiny_pixart: tuple[Path, Any]) -> None:
    """Four DPM-Solver++ steps with CFG: one recording, three replays; a second prompt of as
    many tokens only replays; both are the eager latents, and they differ."""
    from diffusion.pipelines.flow.pixart import PixArtPipeline

    pipe = PixArtPipeline.from_pretrained(tiny_pixart[0], device=first_device)
    runs = [dict(prompt=p, **RUN) for p in PROMPTS]
    first = pipe(**runs[0])
    assert _counts(pipe) == (1, 3)
    second = pipe(**runs[1])
    assert _counts(pipe) == (1, 7)
    eager = _eager(pipe, *runs)
    np.testing.assert_array_equal(first, eager[0])
    np.testing.assert_array_equal(second, eager[1])
    assert np.abs(first - second).mean() > 0.01 * np.abs(first).mean(), "the prompt barely matters"


def test_pixart_alpha_replays_with_its_size(first_device: gpucore.Device,
                                            tmp_path: Path) -> None:
    """PixArt-α 1024 (the picture's size embedded beside the timestep), three steps at two
    sizes: each size its own recording, every picture the eager one."""
    from pixart_tiny import tiny_pixart_pipeline

    from diffusion.pipelines.flow.pixart import PixArtPipeline

    tiny_pixart_pipeline(tmp_path, alpha=True, sample_size=128)
    pipe = PixArtPipeline.from_pretrained(tmp_path / "pixart", device=first_device)
    runs = [dict(RUN, prompt=PROMPTS[0], num_inference_steps=3),
            dict(RUN, prompt=PROMPTS[0], num_inference_steps=3, height=40, width=24)]
    got = [pipe(**run) for run in runs]
    assert _counts(pipe) == (2, 4)
    for replayed, eager in zip(got, _eager(pipe, *runs), strict=True):
        np.testing.assert_array_equal(replayed, eager)


def test_pixart_webui_sampler_replays(first_device: gpucore.Device,
                                      tiny_pixart: tuple[Path, Any]) -> None:
    """A WebUI sampler's steps (DPM++ 2M, fractional timesteps) replay too: the picture is
    the eager one."""
    from diffusion.pipelines.load import load_pipeline
    from diffusion.pipelines.request import GenerationRequest

    model = load_pipeline(tiny_pixart[0], device=first_device)
    request = GenerationRequest(prompt=PROMPTS[0], negative_prompt="a photo of a cat",
                                steps=3, sampler="DPM++ 2M", seed=7, cfg_scale=4.5, **SIZE)
    replayed = model.generate(request).images[0]
    assert _counts(model.pipe) == (1, 2)
    model.pipe.step_replay.use_eager(True)
    np.testing.assert_array_equal(model.generate(request).images[0], replayed)
