"""Ovis-Image's and LongCat-Image's transformer steps (FLUX.1's trunk, conditioned on the
timestep alone) replayed from the capture their pipeline keeps
(diffusion.pipelines.flow.flow_replay.timestep_step), on tiny random folders: with CFG both
passes replay one recording (the prompts are padded to one length), over two steps and
two prompts the latents are the eager ones bit for bit; a weight written in place is
replayed, a replaced one recorded afresh (replay_checks); a step cache runs eagerly; the
decode borrows the capture's scratch; a memory mode runs the steps eagerly, the same picture."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="builds the tiny test models (extra: reference)")
from replay_checks import check_cache_and_picture, check_replays, counts, read_once

import gpucore

PROMPTS = ("a red circle on a blue square", "an astronaut riding a horse")
RUN: dict[str, Any] = dict(height=24, width=40, num_inference_steps=2, seed=7,
                           negative_prompt="blurry")


def _check(pipe: Any) -> None:
    """check_replays with CFG (one recording: 4 calls), then a step cache eagerly and a
    decoded picture on the same recording."""
    from diffusion.models.step_cache import CacheSpec, StepCache

    read_once(pipe, "encode_prompt")
    check_replays(pipe, lambda p: pipe(p, output_type="latent", **RUN), PROMPTS, 1, 3,
                  pipe.transformer.proj_out)
    check_cache_and_picture(
        pipe, lambda: pipe(PROMPTS[0], output_type="latent",
                           cache=StepCache(CacheSpec("fbc", 0.5), 2), **RUN),
        lambda: pipe(PROMPTS[0], **RUN))


def test_ovis_image_replays_its_steps(first_device: gpucore.Device,
                                      tiny_ovis: tuple[Path, Any]) -> None:
    from diffusion.pipelines.flow.ovis_image import OvisImagePipeline

    _check(OvisImagePipeline.from_pretrained(tiny_ovis[0], device=first_device))


def test_longcat_image_replays_its_steps(first_device: gpucore.Device,
                                         tiny_longcat: tuple[Path, Any]) -> None:
    from diffusion.pipelines.flow.longcat_image import LongCatImagePipeline

    _check(LongCatImagePipeline.from_pretrained(tiny_longcat[0], device=first_device))


def test_ovis_image_memory_mode_runs_eagerly(first_device: gpucore.Device,
                                             tiny_ovis: tuple[Path, Any]) -> None:
    """Through the model (FlowModel's own sampler): the plain mode replays; --medvram runs
    the steps eagerly (no replay) and gives the same picture."""
    from diffusion import load_pipeline
    from diffusion.pipelines.sd.memory import MemoryMode

    model = load_pipeline(tiny_ovis[0], device=first_device)
    request = dict(sampler="diffusers", rng="torch", seed=7, steps=2, width=40, height=24,
                   cfg_scale=4.0, negative_prompt="blurry")
    plain = model.generate(PROMPTS[0], **request).images[0]
    replays = counts(model.pipe)[1]
    assert replays > 0
    model.set_memory_mode(MemoryMode(medvram=True))
    try:
        np.testing.assert_array_equal(model.generate(PROMPTS[0], **request).images[0], plain)
        assert counts(model.pipe)[1] == replays
    finally:
        model.set_memory_mode(MemoryMode())
