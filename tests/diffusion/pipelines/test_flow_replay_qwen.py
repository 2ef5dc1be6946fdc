"""Qwen-Image's transformer steps replayed from a capture its pipeline keeps
(diffusion.pipelines.flow.flow_replay), on a tiny random Qwen-Image folder: over several
steps with true CFG (the prompt's and the negative's passes, a recording each) and over two
prompts on those recordings, the pictures are the eager ones bit for bit; a LoRA is replayed
and leaves with its prompt; decoded pictures keep the recordings (the VAE borrows their
scratch); a step cache, ControlNets and a memory mode run the steps eagerly."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="builds the tiny test model (extra: reference)")
safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="writes the test LoRA")

import gpucore  # noqa: E402

# two prompts of as many tokens (the tiny tokenizer's): one input signature each pass
PROMPTS = ("a red circle on a blue square, " * 6, "a red square on a blue circle, " * 6)
CFG: dict[str, Any] = dict(num_inference_steps=3, true_cfg_scale=4.0, negative_prompt="blurry",
                           height=24, width=40, seed=7, output_type="latent")


def _counts(pipe: Any) -> tuple[int, int]:
    captured = pipe.step_replay.captured
    return captured.recordings, captured.replays


def _eager(pipe: Any, call: Any) -> Any:
    """`call()` with the pipeline's steps run eagerly, then replaying again."""
    pipe.step_replay.use_eager(True)
    try:
        return call()
    finally:
        pipe.step_replay.use_eager(False)


def test_qwenimage_replays_its_steps_across_prompts(first_device: gpucore.Device,
                                                    tiny_qwenimage: tuple[Path, Any]) -> None:
    """Three Euler steps with true CFG: the prompt's and the negative's passes recorded once
    each, replayed at the later steps and for a second prompt of as many tokens; every
    picture is the eager one, and the prompt visibly matters."""
    from diffusion.pipelines.flow.qwen_image import QwenImagePipeline

    pipe = QwenImagePipeline.from_pretrained(tiny_qwenimage[0], device=first_device)
    first = pipe(PROMPTS[0], **CFG)
    assert _counts(pipe) == (2, 4)
    second = pipe(PROMPTS[1], **CFG)
    assert _counts(pipe) == (2, 10)
    np.testing.assert_array_equal(first, _eager(pipe, lambda: pipe(PROMPTS[0], **CFG)))
    np.testing.assert_array_equal(second, _eager(pipe, lambda: pipe(PROMPTS[1], **CFG)))
    assert np.abs(first - second).mean() > 0.01, "the prompt barely matters"
