"""Cosmos Predict2 text-to-image's transformer steps replayed from the capture its pipeline
keeps (diffusion.pipelines.flow.flow_replay; the timestep a float32 Tensor input, one
segment: a picture's one frame), on a tiny random folder: CFG's batch of two one recording;
over two steps and two prompts the latents are the eager ones bit for bit; a weight
written in place is replayed, a replaced one recorded afresh (replay_checks); a decoded
picture replays (the VAE borrowing the scratch) and is the eager one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="builds the tiny test models (extra: reference)")
from replay_checks import check_replays, counts, eager, read_once

import gpucore

PROMPTS = ("a red circle on a blue background", "a green square on a white wall")
RUN: dict[str, Any] = dict(height=32, width=48, num_inference_steps=2, guidance_scale=3.0,
                           max_sequence_length=16,  # T5 over 512 tokens: the time of it all
                           seed=7)


def test_cosmos2_t2i_replays_its_steps(first_device: gpucore.Device,
                                       tiny_cosmos2_t2i: tuple[Path, Any]) -> None:
    from diffusion.pipelines.flow.cosmos import Cosmos2TextToImagePipeline

    pipe = Cosmos2TextToImagePipeline.from_pretrained(tiny_cosmos2_t2i[0], device=first_device)
    read_once(pipe, "encode_prompt")
    check_replays(pipe, lambda p: pipe(p, output_type="latent", **RUN), PROMPTS, 1, 1,
                  pipe.transformer.proj_out)
    before = counts(pipe)
    picture = pipe(PROMPTS[0], **RUN)
    assert counts(pipe) == (before[0] + 1, before[1] + 1)
    np.testing.assert_array_equal(picture, eager(pipe, lambda: pipe(PROMPTS[0], **RUN)))
