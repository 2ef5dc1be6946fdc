"""Ideogram 4's two transformers' steps replayed from the captures its pipeline keeps, one a
transformer (diffusion.pipelines.flow.flow_replay; the timestep's sinusoid, made on the host,
a Tensor input; the grid static), on a tiny random folder: over two steps of a guidance
schedule (the second at 1: no unconditional pass) and two prompts of one token count the
latents are the eager ones bit for bit; a weight of either transformer written in place is
replayed, a replaced one recorded afresh (replay_checks); the decode borrows the captures'
scratch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="builds the tiny test models (extra: reference)")
from replay_checks import check_replays, counts, eager, read_once

import gpucore
from gpustd import Tensor

PROMPTS = ("a red circle on a blue square", "a red square on a blue circle")
RUN: dict[str, Any] = dict(height=24, width=40, num_inference_steps=2, seed=7,
                           guidance_schedule=[3.0, 1.0])


def test_ideogram4_replays_its_steps(first_device: gpucore.Device,
                                     tiny_ideogram4: tuple[Path, Any]) -> None:
    """check_replays on the conditional transformer's weight (two recordings: a
    transformer each; one replay, the conditional one's second step), then the
    unconditional transformer's weight replaced (recorded afresh, the eager picture) and a
    decoded picture (replayed, the eager one)."""
    from diffusion.pipelines.flow.ideogram4 import Ideogram4Pipeline

    pipe = Ideogram4Pipeline.from_pretrained(tiny_ideogram4[0], device=first_device)
    read_once(pipe, "encode_prompt")

    def draw(prompt: str) -> np.ndarray:
        return pipe(prompt, output_type="latent", **RUN)

    check_replays(pipe, draw, PROMPTS, 2, 1, pipe.transformer.final_layer.linear)
    first = draw(PROMPTS[0])
    layer = pipe.unconditional_transformer.final_layer.linear
    old = layer.weight
    layer.weight = Tensor.from_numpy(old.numpy() * 0.5, device=old.device, read_only=True)
    before = counts(pipe)[0]
    replaced = draw(PROMPTS[0])
    assert counts(pipe)[0] == before + 1, "a replaced weight replayed the old one"
    np.testing.assert_array_equal(replaced, eager(pipe, lambda: draw(PROMPTS[0])))
    assert np.abs(replaced - first).mean() > 0.01, "the unconditional model barely matters"
    layer.weight = old
    replays = counts(pipe)[1]
    picture = pipe(PROMPTS[0], **RUN)
    assert counts(pipe)[1] > replays
    np.testing.assert_array_equal(picture, eager(pipe, lambda: pipe(PROMPTS[0], **RUN)))


def test_ideogram4_memory_mode_runs_both_eagerly(first_device: gpucore.Device,
                                                 tiny_ideogram4: tuple[Path, Any]) -> None:
    """Through the model (the diffusers sampler): the plain mode replays both transformers;
    --medvram runs both eagerly (no replay, no recording) and gives the same picture."""
    from diffusion import load_pipeline
    from diffusion.pipelines.sd.memory import MemoryMode

    model = load_pipeline(tiny_ideogram4[0], device=first_device)
    request = dict(sampler="diffusers", rng="torch", seed=7, steps=2, width=40, height=24,
                   cfg_scale=3.0)
    plain = model.generate(PROMPTS[0], **request).images[0]
    assert [r.captured.recordings for r in (model.pipe.step_replay,
                                            model.pipe.unconditional_replay)] == [1, 1]
    before = counts(model.pipe)
    model.set_memory_mode(MemoryMode(medvram=True))
    try:
        np.testing.assert_array_equal(model.generate(PROMPTS[0], **request).images[0], plain)
        assert counts(model.pipe) == before and before[1] > 0
    finally:
        model.set_memory_mode(MemoryMode())
