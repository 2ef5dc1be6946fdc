"""Bria 3.2's and AuraFlow's transformer steps replayed from the capture their pipeline keeps
(diffusion.pipelines.flow.flow_replay; Bria on FLUX.1's trunk through `timestep_step`, its
rotary tables inputs; AuraFlow's sigma a float32 Tensor), on tiny random folders: with CFG
both passes replay one recording (each prompt padded to one length), over two steps and two
prompts the latents are the eager ones bit for bit; a weight written in place is replayed, a
replaced one recorded afresh (replay_checks); a step cache runs eagerly; the decode borrows
the capture's scratch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("diffusers", reason="builds the tiny test models (extra: reference)")
from replay_checks import check_cache_and_picture, check_replays, read_once

import gpucore

PROMPTS = ("a red circle on a blue square", "an astronaut riding a horse")


def _check(pipe: Any, run: dict[str, Any]) -> None:
    """check_replays with CFG over 2 steps (one recording: 4 calls), then a step cache
    eagerly and a decoded picture on the same recording."""
    from diffusion.models.step_cache import CacheSpec, StepCache

    read_once(pipe, "encode_prompt")
    run = dict(run, num_inference_steps=2, seed=7, negative_prompt="blurry")
    check_replays(pipe, lambda p: pipe(p, output_type="latent", **run), PROMPTS, 1, 3,
                  pipe.transformer.proj_out)
    check_cache_and_picture(
        pipe, lambda: pipe(PROMPTS[0], output_type="latent",
                           cache=StepCache(CacheSpec("fbc", 0.5), 2), **run),
        lambda: pipe(PROMPTS[0], **run))


def test_bria_replays_its_steps(first_device: gpucore.Device,
                                tiny_bria: tuple[Path, Any]) -> None:
    from diffusion.pipelines.flow.bria import BriaPipeline

    _check(BriaPipeline.from_pretrained(tiny_bria[0], device=first_device),
           dict(height=32, width=48))


def test_auraflow_replays_its_steps(first_device: gpucore.Device,
                                    tiny_auraflow: tuple[Path, Any]) -> None:
    from diffusion.pipelines.flow.auraflow import AuraFlowPipeline

    _check(AuraFlowPipeline.from_pretrained(tiny_auraflow[0], device=first_device),
           dict(height=32, width=24))
