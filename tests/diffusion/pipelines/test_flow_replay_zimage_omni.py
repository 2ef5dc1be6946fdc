"""Z-Image Omni's transformer step replayed from the capture its pipeline keeps
(diffusion.pipelines.flow.flow_replay; the timesteps a float32 Tensor, every caption piece's
states and the condition picture's latents and SigLIP2 features inputs; the clean timestep's
modulations made inside the call), on a tiny random folder with a condition picture: with CFG
(one call a step) over two steps and two prompts of one token count the latents are the eager
ones bit for bit; a weight written in place is replayed, a replaced one recorded afresh
(replay_checks); a step cache runs eagerly; the decode borrows the capture's scratch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="builds the tiny test models (extra: reference)")
from replay_checks import check_cache_and_picture, check_replays, read_once
from zimage_tiny import tiny_zimage_omni_pipeline

import gpucore

# as many tokens in Qwen3's chat template (the tiny tokenizer's): one input signature
PROMPTS = ("a red circle", "a cat on a mat")


@pytest.fixture(scope="module")
def tiny_omni(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny-z-image-omni-replay")
    tiny_zimage_omni_pipeline(root)
    return root / "z-image-omni"


def test_zimage_omni_replays_its_steps(first_device: gpucore.Device, tiny_omni: Path) -> None:
    from diffusion.models.step_cache import CacheSpec, StepCache
    from diffusion.pipelines.flow.z_image_omni import ZImageOmniPipeline

    pipe = ZImageOmniPipeline.from_pretrained(tiny_omni, device=first_device)
    read_once(pipe, "encode_texts")
    read_once(pipe, "conditions")
    picture = np.random.default_rng(3).integers(0, 256, (64, 64, 3), np.uint8)
    run = dict(image=[picture], height=32, width=48, num_inference_steps=2, seed=7,
               guidance_scale=2.0, negative_prompt="blurry")
    check_replays(pipe, lambda p: pipe(p, output_type="latent", **run), PROMPTS, 1, 1,
                  getattr(pipe.transformer.all_final_layer, "2-1").linear)
    check_cache_and_picture(
        pipe, lambda: pipe(PROMPTS[0], output_type="latent",
                           cache=StepCache(CacheSpec("fbc", 0.5), 2), **run),
        lambda: pipe(PROMPTS[0], **run))
