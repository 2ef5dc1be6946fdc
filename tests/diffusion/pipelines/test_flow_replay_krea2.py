"""Krea 2's transformer step replayed from the capture its pipeline keeps
(diffusion.pipelines.flow.flow_replay; each prompt unpadded, a recording per text length; the
flow time a float32 Tensor input rounded as host numbers are, the grid static), on a tiny
random folder: with CFG (the prompt's and the negative's texts differ in length: a recording
each) over two steps and two prompts of one token count the latents are the eager ones bit
for bit; a weight written in place is replayed, a replaced one recorded afresh
(replay_checks); a step cache runs eagerly; the decode borrows the capture's scratch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="builds the tiny test models (extra: reference)")
from replay_checks import check_cache_and_picture, check_replays, read_once

import gpucore

PROMPTS = ("a red circle on a blue square", "a red square on a blue circle")
RUN: dict[str, Any] = dict(height=24, width=40, num_inference_steps=2, seed=7,
                           negative_prompt="blurry", guidance_scale=3.0)


def test_krea2_replays_its_steps(first_device: gpucore.Device,
                                 tiny_krea2: tuple[Path, Any]) -> None:
    from diffusion.models.step_cache import CacheSpec, StepCache
    from diffusion.pipelines.flow.krea2 import Krea2Pipeline

    pipe = Krea2Pipeline.from_pretrained(tiny_krea2[0], device=first_device)
    read_once(pipe, "encode_prompt")
    check_replays(pipe, lambda p: pipe(p, output_type="latent", **RUN), PROMPTS, 2, 2,
                  pipe.transformer.final_layer.linear)
    check_cache_and_picture(
        pipe, lambda: pipe(PROMPTS[0], output_type="latent",
                           cache=StepCache(CacheSpec("fbc", 0.5), 2), **RUN),
        lambda: pipe(PROMPTS[0], **RUN))


def test_krea2_tensor_timestep_rounds_as_host_numbers(first_device: gpucore.Device,
                                                      tiny_krea2: tuple[Path, Any]) -> None:
    """In float16 a replayed step's float32 Tensor flow time is rounded as a host number is
    (to float16, back to float32, then x1000): the same velocity, bit for bit, and the time
    visibly matters."""
    from diffusion.pipelines.flow.krea2 import Krea2Pipeline
    from gpustd import Tensor, asarray

    if not first_device.has_f16:
        pytest.skip("the device has no float16")
    model = Krea2Pipeline.from_pretrained(tiny_krea2[0], device=first_device,
                                          dtype=np.float16).transformer
    rng = np.random.default_rng(3)
    dim, channels = model.img_in.weight.shape[0], model.config["in_channels"]
    tokens = asarray(rng.standard_normal((1, 6, channels)), dtype=np.float16, device=first_device)
    text = asarray(rng.standard_normal((1, 5, dim)), dtype=np.float16, device=first_device)

    def velocity(t: Any) -> np.ndarray:
        return model(tokens, t, 2, 3, text).numpy()

    t = np.float32(0.7137)  # not exact in float16
    host = velocity(t)
    np.testing.assert_array_equal(velocity(Tensor.from_numpy(np.full(1, t),
                                                             device=first_device)), host)
    assert np.abs(velocity(np.float32(0.3)) - host).mean() > 1e-3
