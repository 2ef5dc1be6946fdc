"""Z-Image's transformer steps replayed from a capture its pipeline keeps
(diffusion.pipelines.flow.flow_replay), on a tiny random Z-Image Turbo folder: over several
steps with CFG and over two prompts on one recording, the pictures are the eager ones bit for
bit; a prompt's LoRA is replayed and leaves with the prompt; a step cache runs the steps
eagerly (its decisions are the host's)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="builds the tiny test model (extra: reference)")
safetensors_numpy = pytest.importorskip("safetensors.numpy", reason="writes the test LoRA")
from zimage_tiny import tiny_zimage_pipeline  # noqa: E402

import gpucore  # noqa: E402

# two prompts of as many tokens (24 in Qwen3's chat template, the tiny tokenizer's): one
# input signature
PROMPTS = ("a red circle", "a cat on a mat")
CFG: dict[str, Any] = dict(num_inference_steps=3, guidance_scale=2.0, negative_prompt="blurry",
                           height=16, width=24, seed=7, output_type="latent")


@pytest.fixture(scope="module")
def tiny_zimage(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("tiny-z-image-replay")
    tiny_zimage_pipeline(root)
    return root / "z-image-turbo"


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


def test_zimage_replays_its_steps_across_prompts(first_device: gpucore.Device,
                                                 tiny_zimage: Path) -> None:
    """Three Euler steps with CFG (the prompt's and the negative's captions, two rows): one
    recording, two replays; a second prompt of as many tokens only replays; both pictures
    are the eager ones, and they differ."""
    from diffusion.pipelines.flow.z_image import ZImagePipeline

    pipe = ZImagePipeline.from_pretrained(tiny_zimage, device=first_device)
    first = pipe(PROMPTS[0], **CFG)
    assert _counts(pipe) == (1, 2)
    second = pipe(PROMPTS[1], **CFG)
    assert _counts(pipe) == (1, 5)
    np.testing.assert_array_equal(first, _eager(pipe, lambda: pipe(PROMPTS[0], **CFG)))
    np.testing.assert_array_equal(second, _eager(pipe, lambda: pipe(PROMPTS[1], **CFG)))
    assert np.abs(first - second).mean() > 0.01, "the prompt barely matters"


def test_zimage_lora_and_step_cache(first_device: gpucore.Device, tiny_zimage: Path,
                                    tmp_path: Path) -> None:
    """A prompt's LoRA (merged into the weights) is replayed: the eager picture, unlike the
    plain one; without it the plain picture comes back. A step cache (First Block Cache
    skipping steps) runs eagerly: no replay."""
    from diffusion import load_pipeline

    rng = np.random.default_rng(0)
    model = load_pipeline(tiny_zimage, device=first_device)
    dim = int(model.pipe.transformer.config["dim"])
    layer = "transformer.layers.0.attention.to_k"
    safetensors_numpy.save_file({
        f"{layer}.lora_A.weight": rng.standard_normal((2, dim)).astype(np.float32),
        f"{layer}.lora_B.weight": rng.standard_normal((dim, 2)).astype(np.float32)},
        str(tmp_path / "style.safetensors"))
    model.lora_dir = tmp_path
    request = dict(sampler="diffusers", rng="torch", seed=7, steps=3, width=24, height=16,
                   cfg_scale=1.0)

    def picture(prompt: str, **more: Any) -> np.ndarray:
        return model.generate(prompt, **request, **more).images[0].astype(int)

    plain = picture(PROMPTS[0])
    styled = picture(f"<lora:style:1>{PROMPTS[0]}")
    np.testing.assert_array_equal(
        styled, _eager(model.pipe, lambda: picture(f"<lora:style:1>{PROMPTS[0]}")))
    assert np.abs(styled - plain).mean() > 2, "the LoRA barely changes the picture"
    np.testing.assert_array_equal(picture(PROMPTS[0]), plain)
    replays = _counts(model.pipe)[1]
    # 1.3 over 4 steps: a random tiny model moves far more than a trained one
    summary = model.generate(PROMPTS[0], **{**request, "steps": 4},
                             cache="fbc:1.3").settings["cache"]
    assert _counts(model.pipe)[1] == replays
    assert int(summary.split("/")[0].split()[-1]) < 4, summary  # a step skipped
