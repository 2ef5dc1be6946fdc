"""HiDream-I1's pipeline against diffusers' HiDreamImagePipeline on PyTorch CPU float32 (tiny
random folders of hidream_pipe_tiny): Full's UniPC with CFG and a negative prompt, a
flow-matching Euler folder without guidance (Dev's and Fast's kind), the same seed giving
the same picture; Llama from a folder of its own; bad input in one line."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from hidream_pipe_tiny import SIDE, tiny_hidream_pipeline
from support import assert_close

import gpucore
from diffusion.loaders.errors import WeightsError
from diffusion.models.step_cache import CacheSpec, StepCache
from diffusion.pipelines.flow.hidream import HiDreamImagePipeline

# the prompts here are cut at 12 tokens on purpose (test_hidream_prompt checks the warning)
pytestmark = pytest.mark.filterwarnings("ignore:a prompt is .* past HiDream")
PROMPT, NEGATIVE = "a red circle on a blue background", "a cat"
TOL = 6e-5  # of the pictures in [0, 1]: float32, Full's measured 2.2e-5 (CFG 5 scales the error)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("hidream")
    return {"root": root, "full": tiny_hidream_pipeline(root),
            "euler": tiny_hidream_pipeline(root, "hidream-euler", euler_shift=6.0)}


def _theirs(pipe: Any, seed: int, steps: int, guidance: float, **extra: Any) -> np.ndarray:
    with torch.no_grad():
        return pipe(PROMPT, height=SIDE, width=SIDE, num_inference_steps=steps,
                    guidance_scale=guidance, generator=torch.Generator().manual_seed(seed),
                    output_type="np", max_sequence_length=12, **extra).images


def test_full_with_cfg_equals_diffusers(folders: dict[str, Any],
                                        first_device: gpucore.Device) -> None:
    """UniPC (flow_shift 3), CFG 5 against a negative prompt: diffusers' picture; the
    negative prompt and prompt_4 (Llama's alone) each move it."""
    expected = _theirs(folders["full"], 7, 2, 5.0, negative_prompt=NEGATIVE)
    pipe = HiDreamImagePipeline.from_pretrained(folders["root"] / "hidream", device=first_device)

    def ours(**extra: Any) -> np.ndarray:
        return pipe(PROMPT, height=SIDE, width=SIDE, num_inference_steps=2,
                    guidance_scale=5.0, max_sequence_length=12,
                    **{"seed": 7, "negative_prompt": NEGATIVE, **extra})

    got = ours()
    assert got.shape == expected.shape == (1, SIDE, SIDE, 3)
    assert_close(got, expected, tol=TOL, atol=TOL)
    for moved in (ours(negative_prompt=""), ours(prompt_4="a cat")):
        assert np.abs(moved - got).max() > 100 * TOL


def test_euler_without_guidance_and_llama_apart(folders: dict[str, Any],
                                                first_device: gpucore.Device,
                                                tmp_path: Path) -> None:
    """A FlowMatchEulerDiscreteScheduler folder (shift 6, as Dev) at guidance 0: diffusers'
    picture, with Llama and its tokenizer loaded from a folder of their own (the folder's
    text_encoder_4/ and tokenizer_4/ removed), and the same from a single-file transformer;
    First Block Cache runs."""
    expected = _theirs(folders["euler"], 3, 2, 0.0)
    folder = tmp_path / "hidream-euler"
    shutil.copytree(folders["root"] / "hidream-euler", folder)
    llama = tmp_path / "llama"
    shutil.move(folder / "text_encoder_4", llama)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(folder / "tokenizer_4" / name, llama / name)
    shutil.rmtree(folder / "tokenizer_4")
    with pytest.raises(WeightsError, match=r"has no text_encoder_4 .* give its folder"):
        HiDreamImagePipeline.from_pretrained(folder, device=first_device)
    pipe = HiDreamImagePipeline.from_pretrained(folder, device=first_device, llama=llama)
    got = pipe(PROMPT, height=SIDE, width=SIDE, num_inference_steps=2, guidance_scale=0.0,
               seed=3, max_sequence_length=12)
    assert_close(got, expected, tol=TOL, atol=TOL)
    # the transformer as one file in the original layout (ComfyUI's prefix), the folder
    # without its weights (its config.json gives the tiny head width the shapes cannot): the
    # same picture; First Block Cache (a loose threshold) runs
    from safetensors.torch import save_file

    file = tmp_path / "hidream_i1_tiny.safetensors"
    save_file({f"model.diffusion_model.{k}": v.contiguous() for k, v in
               folders["euler"].transformer.state_dict().items()}, str(file))
    for weights in (folder / "transformer").glob("*.safetensors"):
        weights.unlink()
    single = HiDreamImagePipeline.from_pretrained(folder, device=first_device, llama=llama,
                                                  transformer_file=file)
    call = dict(height=SIDE, width=SIDE, num_inference_steps=2, guidance_scale=0.0, seed=3,
                max_sequence_length=12)
    np.testing.assert_array_equal(single(PROMPT, **call), got)
    cache = StepCache(CacheSpec("fbc", 0.5), 2)
    cached = single(PROMPT, cache=cache, **call)
    assert np.isfinite(cached).all() and "fbc" in cache.summary()
    with pytest.raises(ValueError, match="multiples of 4 for HiDream-I1"):
        pipe(PROMPT, height=SIDE + 2, width=SIDE, num_inference_steps=1)
    with pytest.raises(TypeError, match="unexpected keyword 'prompt_5'"):
        pipe(PROMPT, prompt_5="x")


def test_lcm_scheduler_equals_diffusers(folders: dict[str, Any],
                                       first_device: gpucore.Device) -> None:
    """Dev's FlowMatchLCMScheduler (shift 6), guidance 0: each step's x0 noised afresh. Ours
    draws that noise after the start's from the seed's generator; diffusers from torch's
    global one, which is seeded alike and moved past the start's draw so that both streams
    are one: then diffusers' picture. The step noise matters (another stream moves it)."""
    reference = tiny_hidream_pipeline(folders["root"], "hidream-lcm", euler_shift=6.0,
                                      lcm=True)
    shape = (1, 4, SIDE // 2, SIDE // 2)
    start = torch.randn(shape, generator=torch.Generator().manual_seed(5))
    torch.manual_seed(5)
    torch.randn(shape)  # the global stream past the start's draw

    expected = _theirs(reference, 5, 3, 0.0, latents=start)
    pipe = HiDreamImagePipeline.from_pretrained(folders["root"] / "hidream-lcm",
                                                device=first_device)
    call = dict(height=SIDE, width=SIDE, num_inference_steps=3, guidance_scale=0.0,
                max_sequence_length=12)
    got = pipe(PROMPT, seed=5, **call)
    assert_close(got, expected, tol=TOL, atol=TOL)
    moved = pipe(PROMPT, seed=5, latents=start.numpy(), rng="numpy", **call)
    assert np.abs(moved - got).max() > 100 * TOL
