"""Bria FIBO's transformer step replayed from the capture its pipeline keeps
(diffusion.pipelines.flow.flow_replay; each prompt unpadded, a recording per caption length;
the per-block text layers, the sigma and the rotary tables inputs), on a tiny random folder:
with CFG (the negative "" one token: a second recording) over two steps and two prompts of
one token count the latents are the eager ones bit for bit; a weight written in place is
replayed, a replaced one recorded afresh (replay_checks); the decode borrows the capture's
scratch and the picture is the eager one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="builds the tiny test models (extra: reference)")
from replay_checks import check_replays, counts, eager, read_once

import gpucore

PROMPTS = ("a red circle on a blue square", "a red square on a blue circle")
RUN: dict[str, Any] = dict(height=48, width=80, num_inference_steps=2, seed=7)


@pytest.fixture(scope="module")
def tiny_fibo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from bria_fibo_tiny import tiny_fibo_pipeline

    root = tmp_path_factory.mktemp("tiny-fibo")
    return root / "fibo", tiny_fibo_pipeline(root)


def test_bria_fibo_replays_its_steps(first_device: gpucore.Device,
                                     tiny_fibo: tuple[Path, Any]) -> None:
    from diffusion.pipelines.flow.bria_fibo import BriaFiboPipeline

    pipe = BriaFiboPipeline.from_pretrained(tiny_fibo[0], device=first_device)
    read_once(pipe, "encode_prompt")
    check_replays(pipe, lambda p: pipe(p, output_type="latent", **RUN), PROMPTS, 2, 2,
                  pipe.transformer.proj_out)
    replays = counts(pipe)[1]
    picture = pipe(PROMPTS[0], **RUN)
    assert counts(pipe)[1] > replays
    np.testing.assert_array_equal(picture, eager(pipe, lambda: pipe(PROMPTS[0], **RUN)))
