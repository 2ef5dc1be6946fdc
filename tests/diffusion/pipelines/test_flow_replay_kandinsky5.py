"""Kandinsky 5's (image) transformer steps replayed from the capture its pipeline keeps
(diffusion.pipelines.flow.flow_replay; the timestep a float32 Tensor input rounded as host
numbers, the prompt's text tokens and pooled vector inputs), on a tiny random folder: with
CFG (the prompt's and the negative's caption lengths differ: a recording each) over several
steps and two prompts of one token count the latents are the eager ones bit for bit; a
weight written in place is replayed, a replaced one recorded afresh (replay_checks); a step
cache runs eagerly; a decoded picture (the VAE borrowing the scratch) is the eager one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("diffusers", reason="builds the tiny test models (extra: reference)")
from replay_checks import check_cache_and_picture, check_replays, read_once

import gpucore

PROMPTS = ("a red circle on a blue square", "a red square on a blue circle")
RUN: dict[str, Any] = dict(height=24, width=40, num_inference_steps=2, guidance_scale=3.5,
                           negative_prompt="blurry", seed=7)


def test_kandinsky5_replays_its_steps(first_device: gpucore.Device,
                                      tiny_kandinsky5: tuple[Path, Any]) -> None:
    from diffusion.models.step_cache import CacheSpec, StepCache
    from diffusion.pipelines.flow.kandinsky5 import Kandinsky5Pipeline

    pipe = Kandinsky5Pipeline.from_pretrained(tiny_kandinsky5[0], device=first_device)
    read_once(pipe, "encode_prompt")
    check_replays(pipe, lambda p: pipe(p, output_type="latent", **RUN), PROMPTS, 2, 2,
                  pipe.transformer.out_layer.out_layer)
    check_cache_and_picture(
        pipe, lambda: pipe(PROMPTS[0], output_type="latent",
                           cache=StepCache(CacheSpec("fbc", 0.5), 2), **RUN),
        lambda: pipe(PROMPTS[0], **RUN))
