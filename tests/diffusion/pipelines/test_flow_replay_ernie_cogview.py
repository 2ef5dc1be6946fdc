"""ERNIE-Image's and CogView4's transformer steps replayed from the capture their pipeline
keeps (diffusion.pipelines.flow.flow_replay; the timestep a float32 Tensor input, CogView4's
sizes static arguments, the rotary tables of each caption length kept constants), on tiny
random folders: with CFG (the prompt's and the negative's captions differ in length: a
recording each) over several steps and two prompts of one token count the latents are the
eager ones bit for bit; a weight written in place is replayed, a replaced one recorded
afresh (replay_checks); a step cache runs eagerly; the decode borrows the capture's
scratch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("diffusers", reason="builds the tiny test models (extra: reference)")
from replay_checks import check_cache_and_picture, check_replays, read_once

import gpucore

PROMPTS = ("a red circle on a blue square", "a red square on a blue circle")


def _check(pipe: Any, weight: Any, run: dict[str, Any]) -> None:
    """check_replays with CFG over 3 steps (two recordings, four replays), then a step cache
    eagerly and a decoded picture on the same recordings."""
    from diffusion.models.step_cache import CacheSpec, StepCache

    read_once(pipe, "encode_prompt")
    run = dict(run, num_inference_steps=3, seed=7, negative_prompt="blurry")
    check_replays(pipe, lambda p: pipe(p, output_type="latent", **run), PROMPTS, 2, 4, weight)
    check_cache_and_picture(
        pipe, lambda: pipe(PROMPTS[0], output_type="latent",
                           cache=StepCache(CacheSpec("fbc", 0.5), 3), **run),
        lambda: pipe(PROMPTS[0], **run))


def test_ernie_image_replays_its_steps(first_device: gpucore.Device,
                                       tiny_ernie: tuple[Path, Any]) -> None:
    from diffusion.pipelines.flow.ernie_image import ErnieImagePipeline

    pipe = ErnieImagePipeline.from_pretrained(tiny_ernie[0], device=first_device)
    _check(pipe, pipe.transformer.final_linear, dict(height=24, width=40))


def test_cogview4_replays_its_steps(first_device: gpucore.Device,
                                    tiny_cogview4: tuple[Path, Any]) -> None:
    from diffusion.pipelines.flow.cogview4 import CogView4Pipeline

    pipe = CogView4Pipeline.from_pretrained(tiny_cogview4[0], device=first_device)
    _check(pipe, pipe.transformer.proj_out, dict(height=32, width=48))
