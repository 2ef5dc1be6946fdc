"""Qwen-Image 2.1's transformer steps replayed from the capture its pipeline keeps
(diffusion.pipelines.flow.flow_replay; each prompt's prefix keys and values of every block
inputs, its padding and layout static), on a tiny random folder: with true CFG (a recording
each pass) over several steps and two prompts of one token count the latents are the eager
ones bit for bit; a weight written in place is replayed, a replaced one recorded afresh
(replay_checks); an edit's condition picture (in the prefix) replays and visibly matters; a
step cache runs eagerly; a decoded picture is the eager one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="builds the tiny test models (extra: reference)")
from replay_checks import check_cache_and_picture, check_replays, counts, eager, read_once

import gpucore

PROMPTS = ("a red circle on a blue square, " * 3, "a red square on a blue circle, " * 3)
RUN: dict[str, Any] = dict(height=64, width=96, num_inference_steps=2, true_cfg_scale=4.0,
                           negative_prompt="a photo of a cat", seed=7)


def test_qwenimage21_replays_its_steps(first_device: gpucore.Device,
                                       tiny_qwenimage21: tuple[Path, Any]) -> None:
    from diffusion.models.step_cache import CacheSpec, StepCache
    from diffusion.pipelines.flow.qwen_image21 import QwenImage21Pipeline

    pipe = QwenImage21Pipeline.from_pretrained(tiny_qwenimage21[0], device=first_device)
    read_once(pipe, "_prefixes")
    check_replays(pipe, lambda p: pipe(p, output_type="latent", **RUN), PROMPTS, 2, 2,
                  pipe.transformer.proj_out)
    check_cache_and_picture(
        pipe, lambda: pipe(PROMPTS[0], output_type="latent",
                           cache=StepCache(CacheSpec("fbc", 0.5), 2), **RUN),
        lambda: pipe(PROMPTS[0], **RUN))
    pipe.condition_area = 64 * 64  # the pictures read small: the test's time on a CPU
    rng = np.random.default_rng(1)
    pictures = [rng.integers(0, 256, (48, 80, 3), dtype=np.uint8) for _ in range(2)]
    plain = dict(RUN, true_cfg_scale=1.0, output_type="latent")
    before = counts(pipe)
    edits = [pipe(PROMPTS[0], image=[p], **plain) for p in pictures]
    assert counts(pipe) == (before[0] + 1, before[1] + 3)  # one pass, 2 steps, 2 pictures
    assert np.abs(edits[0] - edits[1]).mean() > 0.01, "the condition picture barely matters"
    np.testing.assert_array_equal(
        edits[1], eager(pipe, lambda: pipe(PROMPTS[0], image=[pictures[1]], **plain)))
