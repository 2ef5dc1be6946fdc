"""HunyuanImage 2.1's transformer step replayed from the capture its pipeline keeps
(diffusion.pipelines.flow.flow_replay; the timesteps, meanflow's next ones and the distilled
guidance float32 Tensors rounded as host numbers are; the prepared prompt's Tensors inputs,
its host flags and join plan static), on tiny random folders: the base checkpoint with a
quoted text (the ByT5 glyph tokens joined before the prompt's; the OCR guider's CFG then APG:
the prompt's and the negative's passes a recording each) and the distilled one (the embedded
guidance, meanflow): over two steps and two prompts of one token count the latents are the
eager ones bit for bit; a weight written in place is replayed, a replaced one recorded
afresh (replay_checks); a step cache runs eagerly; the decode borrows the capture's
scratch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="builds the tiny test models (extra: reference)")
from hunyuanimage_parts_tiny import tiny_hunyuanimage_pipeline
from replay_checks import check_cache_and_picture, check_replays, read_once

import gpucore

PROMPTS = ('a shop sign that says "OPEN" in red', 'a shop sign that says "SHUT" in red')


@pytest.fixture(scope="module")
def tiny_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The base and the distilled tiny folders."""
    base, distilled = (tmp_path_factory.mktemp(name) for name in ("hy-base", "hy-distilled"))
    tiny_hunyuanimage_pipeline(base)
    tiny_hunyuanimage_pipeline(distilled, distilled=True)
    return base / "hunyuanimage", distilled / "hunyuanimage"


def _check(pipe: Any, recordings: int, replays: int, **settings: Any) -> None:
    from diffusion.models.step_cache import CacheSpec, StepCache

    read_once(pipe, "encode_prompt")
    run = dict(height=32, width=24, num_inference_steps=2, seed=7, **settings)
    check_replays(pipe, lambda p: pipe(p, output_type="latent", **run), PROMPTS, recordings,
                  replays, pipe.transformer.proj_out)
    check_cache_and_picture(
        pipe, lambda: pipe(PROMPTS[0], output_type="latent",
                           cache=StepCache(CacheSpec("fbc", 0.5), 2), **run),
        lambda: pipe(PROMPTS[0], **run))


def test_hunyuanimage_base_replays_its_steps(first_device: gpucore.Device,
                                             tiny_folders: tuple[Path, Path]) -> None:
    from diffusion.pipelines.flow.hunyuanimage import HunyuanImagePipeline

    _check(HunyuanImagePipeline.from_pretrained(tiny_folders[0], device=first_device), 2, 2)


def test_hunyuanimage_distilled_replays_its_steps(first_device: gpucore.Device,
                                                  tiny_folders: tuple[Path, Path]) -> None:
    from diffusion.pipelines.flow.hunyuanimage import HunyuanImagePipeline

    pipe = HunyuanImagePipeline.from_pretrained(tiny_folders[1], device=first_device)
    _check(pipe, 1, 1, distilled_guidance_scale=4.0)


def test_hunyuanimage_tensor_timesteps_round_as_host_numbers(
        first_device: gpucore.Device, tiny_folders: tuple[Path, Path]) -> None:
    """In float16 a replayed step's float32 Tensors (the timestep, meanflow's next one, the
    distilled guidance) are rounded as host numbers are: the same conditioning vector, bit
    for bit, and the same refined prompt tokens' timestep."""
    from diffusion.pipelines.flow.hunyuanimage import HunyuanImagePipeline
    from gpustd import Tensor

    if not first_device.has_f16:
        pytest.skip("the device has no float16")
    model = HunyuanImagePipeline.from_pretrained(tiny_folders[1], device=first_device,
                                                 dtype=np.float16).transformer
    values = [np.array([713.7, 2.9], np.float32), np.array([0.4321, 1.3], np.float32),
              np.array([3217.3, 3217.3], np.float32)]  # none exact in float16
    t, temb = model._conditioning(2, *values)
    given, given_temb = model._conditioning(
        2, *(Tensor.from_numpy(v, device=first_device) for v in values))
    np.testing.assert_array_equal(given.numpy(), t.astype(np.float32))
    np.testing.assert_array_equal(given_temb.numpy(), temb.numpy())
