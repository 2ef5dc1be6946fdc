"""Lumina 2's transformer steps replayed from the capture its pipeline keeps
(diffusion.pipelines.flow.flow_replay; the timestep a float32 Tensor input, the captions'
mask a static argument), on a tiny random folder: CFG's batch of two and, past the
truncation, the prompt's alone, a recording each; over several steps and two prompts of one
token count the latents are the eager ones bit for bit; a weight written in place is
replayed, a replaced one recorded afresh (replay_checks); a decoded picture replays (the
VAE borrows the capture's scratch) and is the eager one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("diffusers", reason="builds the tiny test models (extra: reference)")
from replay_checks import check_replays, counts, eager

import gpucore

PROMPTS = ("a red circle on a blue square", "a red square on a blue circle")
RUN: dict[str, Any] = dict(height=32, width=48, num_inference_steps=4, guidance_scale=4.0,
                           negative_prompt="a photo of a cat", cfg_trunc_ratio=0.5,
                           max_sequence_length=64, seed=7)


def test_lumina2_replays_its_steps(first_device: gpucore.Device,
                                   tiny_lumina2: tuple[Path, Any]) -> None:
    from diffusion.pipelines.flow.lumina2 import Lumina2Pipeline

    pipe = Lumina2Pipeline.from_pretrained(tiny_lumina2[0], device=first_device)
    check_replays(pipe, lambda p: pipe(p, output_type="latent", **RUN), PROMPTS, 2, 2,
                  pipe.transformer.norm_out.linear_2)
    before = counts(pipe)
    picture = pipe(PROMPTS[0], **RUN)
    assert counts(pipe)[1] == before[1] + 2
    assert (picture == eager(pipe, lambda: pipe(PROMPTS[0], **RUN))).all()
