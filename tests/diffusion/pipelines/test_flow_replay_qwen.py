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


def test_qwenimage_lora_cache_and_memory_mode(first_device: gpucore.Device,
                                              tiny_qwenimage: tuple[Path, Any],
                                              tmp_path: Path) -> None:
    """Decoded pictures through the model: a prompt's LoRA (merged into the weights) is
    replayed, the eager picture, unlike the plain one, and the plain picture comes back
    without it, all on one recording; a step cache and --medvram run the steps eagerly (no
    replay), the latter the same picture."""
    from diffusion import load_pipeline
    from diffusion.pipelines.sd.memory import MemoryMode

    rng = np.random.default_rng(0)
    model = load_pipeline(tiny_qwenimage[0], device=first_device)
    config = model.pipe.transformer.config
    dim = int(config["num_attention_heads"] * config["attention_head_dim"])
    layer = "transformer.transformer_blocks.1.img_mlp.net.2"
    safetensors_numpy.save_file({
        f"{layer}.lora_A.weight": rng.standard_normal((2, 4 * dim)).astype(np.float32),
        f"{layer}.lora_B.weight": 2 * rng.standard_normal((dim, 2)).astype(np.float32)},
        str(tmp_path / "style.safetensors"))
    model.lora_dir = tmp_path
    request = dict(sampler="diffusers", rng="torch", seed=7, steps=2, width=40, height=24,
                   cfg_scale=1.0)

    def picture(prompt: str, **more: Any) -> np.ndarray:
        return model.generate(prompt, **request, **more).images[0].astype(int)

    plain = picture(PROMPTS[0])
    styled = picture(f"<lora:style:1>{PROMPTS[0]}")
    assert np.abs(styled - plain).mean() > 2, "the LoRA barely changes the picture"
    np.testing.assert_array_equal(picture(PROMPTS[0]), plain)
    assert _counts(model.pipe) == (1, 5)  # three pictures, two steps each
    np.testing.assert_array_equal(
        styled, _eager(model.pipe, lambda: picture(f"<lora:style:1>{PROMPTS[0]}")))
    replays = _counts(model.pipe)[1]
    summary = model.generate(PROMPTS[0], **{**request, "steps": 3},
                             cache="fbc:1.3").settings["cache"]
    assert _counts(model.pipe)[1] == replays
    assert int(summary.split("/")[0].split()[-1]) < 3, summary  # a step skipped
    model.set_memory_mode(MemoryMode(medvram=True))
    try:
        np.testing.assert_array_equal(picture(PROMPTS[0]), plain)
        assert _counts(model.pipe)[1] == replays
    finally:
        model.set_memory_mode(MemoryMode())


def test_qwenimage_tensor_timestep_rounds_as_host_numbers(
        first_device: gpucore.Device, tiny_qwenimage: tuple[Path, Any]) -> None:
    """In float16 a replayed step's float32 Tensor timestep is rounded as host numbers are (to
    float16, back to float32, then x1000, as diffusers casts it): the same embedding, bit for
    bit."""
    from diffusion.pipelines.flow.qwen_image import QwenImagePipeline
    from gpustd import Tensor

    if not first_device.has_f16:
        pytest.skip("the device has no float16")
    pipe = QwenImagePipeline.from_pretrained(tiny_qwenimage[0], device=first_device,
                                             dtype=np.float16)
    embed = pipe.transformer.time_text_embed
    t = np.array([0.7137, 0.0123], np.float32)  # neither exact in float16
    host = embed(t, first_device).numpy()
    given = embed(Tensor.from_numpy(t, device=first_device), first_device).numpy()
    np.testing.assert_array_equal(given, host)


def test_qwenimage_hires_with_cfg_keeps_four_recordings(first_device: gpucore.Device,
                                                        tiny_qwenimage: tuple[Path, Any]
                                                        ) -> None:
    """A hires fix with true CFG: the prompt's and the negative's passes at both sizes, four
    recordings the pipeline keeps (StepReplay's max_signatures), so a second picture only
    replays (two kept would have recorded all four again); it is the eager picture."""
    from diffusion import load_pipeline
    from diffusion.pipelines.request import GenerationRequest
    from diffusion.upscalers.interpolation import HiresFix

    model = load_pipeline(tiny_qwenimage[0], device=first_device)
    request = GenerationRequest(
        prompt=PROMPTS[0], negative_prompt="blurry", width=24, height=16, steps=2,
        sampler="Euler", seed=11, rng="torch", cfg_scale=4.0,
        hires=HiresFix(scale=2.0, upscaler="Latent", steps=2, denoise=0.6))
    model.generate(request)
    assert _counts(model.pipe) == (4, 4)
    second = model.generate(request).images[0]
    assert _counts(model.pipe) == (4, 12)
    np.testing.assert_array_equal(second, _eager(model.pipe,
                                                 lambda: model.generate(request).images[0]))
