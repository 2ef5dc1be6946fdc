"""Wan 2.2 A14B: two experts, the high-noise one for timesteps at or above boundary_ratio x
1000, the low-noise one (transformer_2, its own guidance scale) after. A tiny A14B-shaped
folder saved by diffusers gives WanPipeline's frames (and WanImageToVideoPipeline's for
image-to-video), both experts matter, and the experts as two files (`--model HIGH --model-2
LOW --base FOLDER`, offloaded) give the folder's frames."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_ok, png_frames
from PIL import Image
from wan_tiny import comfyui_file, tiny_wan_a14b_pipeline

import gpucore

RED = "a red cube on a wooden table"
# two UniPC steps at flow_shift 3: timestep 999 for the high-noise expert (boundary 0.8: 800),
# 750 for the low-noise one
STEPS = 2
SIZE = dict(height=32, width=48, num_frames=5)


@pytest.fixture(scope="module")
def tiny_a14b(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    root = tmp_path_factory.mktemp("tiny-wan-a14b")
    return root / "wan-a14b", tiny_wan_a14b_pipeline(root)


def test_a14b_equals_diffusers(first_device: gpucore.Device, tiny_a14b: tuple[Path, Any],
                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from diffusion.pipelines.video import WanPipeline

    folder, reference = tiny_a14b
    timesteps = reference.scheduler
    timesteps.set_timesteps(STEPS)
    assert (timesteps.timesteps >= 800).tolist() == [True, False]  # both experts step
    common = ("txt2vid", "--prompt", RED, "--width", "48", "--height", "32", "--frames", "5",
              "--steps", str(STEPS), "--cfg-scale", "4", "--cfg-scale-2", "2", "--seed", "3",
              "--dtype", "float32")
    ours = png_frames(cli_ok(capsys, *common, "--model", str(folder),
                             "-o", str(tmp_path / "a"))[0])
    expected = reference(RED, num_inference_steps=STEPS, guidance_scale=4.0,
                         guidance_scale_2=2.0, output_type="np",
                         generator=torch.Generator().manual_seed(3), **SIZE).frames[0]
    assert np.abs(ours - expected).mean() < 0.01
    # the experts as two ComfyUI files beside a --base folder without their weights, one
    # network on the GPU at a time
    base = tmp_path / "base"
    shutil.copytree(folder, base)
    for part in ("transformer", "transformer_2"):
        for weights in (base / part).glob("*.safetensors"):
            weights.unlink()
    high, low = tmp_path / "high_noise.safetensors", tmp_path / "low_noise.safetensors"
    comfyui_file(reference.transformer, high)
    comfyui_file(reference.transformer_2, low)
    out = cli_ok(capsys, *common, "--model", str(high), "--model-2", str(low), "--base",
                 str(base), "--offload", "-o", str(tmp_path / "files"))[0]
    np.testing.assert_array_equal(png_frames(out), ours)
    # swapping the experts changes the video
    pipe = WanPipeline.from_pretrained(folder, device=first_device)
    pipe.transformer, pipe.transformer_2 = pipe.transformer_2, pipe.transformer
    swapped = pipe(RED, num_inference_steps=STEPS, guidance_scale=4.0, guidance_scale_2=2.0,
                   seed=3, **SIZE)[0]
    assert np.abs(swapped - ours).mean() > 0.02


def test_a14b_lowvram_gives_the_plain_frames(first_device: gpucore.Device,
                                             tiny_a14b: tuple[Path, Any]) -> None:
    """The two experts under --lowvram: the running expert alone on the GPU at each step (the
    other's blocks and parts leave at the boundary step), the plain mode's frames (here: the
    offloaded plain mode's, the same) bit for bit."""
    from diffusion.pipelines.sd.memory import MemoryMode
    from diffusion.pipelines.video import WanPipeline
    from gpustd.nn.offload import device_bytes

    folder, _ = tiny_a14b
    settings = dict(num_inference_steps=STEPS, guidance_scale=4.0, guidance_scale_2=2.0,
                    seed=3, **{**SIZE, "num_frames": 1})
    pipe = WanPipeline.from_pretrained(folder, device=first_device, offload=True)
    plain = pipe(RED, **settings)
    experts = (pipe.transformer, pipe.transformer_2)
    assert pipe.denoisers.networks == experts  # what --fp16-accumulation sets
    on_gpu: list[tuple[bool, ...]] = []  # after each step: which expert has weights there
    pipe.set_memory_mode(MemoryMode(lowvram=True))
    try:
        frames = pipe(RED, callback=lambda *_: on_gpu.append(
            tuple(device_bytes(expert) > 0 for expert in experts)), **settings)
    finally:
        pipe.set_memory_mode(MemoryMode())
    np.testing.assert_array_equal(frames, plain)
    assert on_gpu == [(True, False), (False, True)]


def test_a14b_image_to_video(first_device: gpucore.Device, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """Wan 2.2 A14B I2V (no CLIP: the mask and the first frame's latents as input channels):
    WanImageToVideoPipeline's video through `img2vid`."""
    from diffusers.pipelines.wan import pipeline_wan, pipeline_wan_i2v

    # the image-to-video module calls ftfy unconditionally; WanPipeline's cleaning skips it
    monkeypatch.setattr(pipeline_wan_i2v, "prompt_clean", pipeline_wan.prompt_clean)
    reference = tiny_wan_a14b_pipeline(tmp_path, i2v=True)
    picture = (np.random.default_rng(2).random((24, 40, 3)) * 255).astype(np.uint8)
    Image.fromarray(picture).save(tmp_path / "in.png")
    out = cli_ok(capsys, "img2vid", "--model", str(tmp_path / "wan-a14b-i2v"), "--image",
                 str(tmp_path / "in.png"), "--prompt", RED, "--width", "48", "--height", "32",
                 "--frames", "5", "--steps", str(STEPS), "--cfg-scale", "3", "--seed", "4",
                 "--dtype", "float32", "-o", str(tmp_path / "out"))[0]
    expected = reference(image=Image.fromarray(picture), prompt=RED, num_inference_steps=STEPS,
                         guidance_scale=3.0, output_type="np",
                         generator=torch.Generator().manual_seed(4), **SIZE).frames[0]
    assert np.abs(png_frames(out) - expected).mean() < 0.01


def _comfy_lora(path: Path) -> Path:
    """A ComfyUI-keyed LoRA (`diffusion_model.blocks.N.self_attn.q.lora_down.weight`, its
    alpha) over the tiny experts' attention and feed-forward, large enough to show."""
    from safetensors.numpy import save_file
    from wan_tiny import WAN_TINY

    rng = np.random.default_rng(21)
    dim = WAN_TINY["num_attention_heads"] * WAN_TINY["attention_head_dim"]
    tensors = {}
    for i in range(WAN_TINY["num_layers"]):
        for name, (rows, columns) in (("self_attn.q", (dim, dim)), ("cross_attn.v", (dim, dim)),
                                      ("ffn.0", (WAN_TINY["ffn_dim"], dim))):
            key = f"diffusion_model.blocks.{i}.{name}"
            tensors[f"{key}.lora_down.weight"] = rng.normal(0, 1, (4, columns)).astype(
                np.float32)
            tensors[f"{key}.lora_up.weight"] = rng.normal(0, 0.5, (rows, 4)).astype(np.float32)
            tensors[f"{key}.alpha"] = np.array(2.0, np.float32)
    save_file(tensors, str(path))
    return path


def test_low_noise_lora(first_device: gpucore.Device, tiny_a14b: tuple[Path, Any],
                        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--lora-2`: a LoRA patched into the low-noise expert, as diffusers'
    `load_lora_weights(..., load_into_transformer_2=True)`; it visibly changes the video."""
    pytest.importorskip("peft", reason="diffusers loads LoRAs through PEFT")
    folder, reference = tiny_a14b
    lora = _comfy_lora(tmp_path / "low_noise_lora.safetensors")
    common = ("txt2vid", "--model", str(folder), "--prompt", RED, "--width", "48", "--height",
              "32", "--frames", "5", "--steps", str(STEPS), "--cfg-scale", "4", "--seed", "3",
              "--dtype", "float32")
    plain = png_frames(cli_ok(capsys, *common, "-o", str(tmp_path / "plain"))[0])
    ours = png_frames(cli_ok(capsys, *common, "--lora-2", str(lora),
                             "-o", str(tmp_path / "lora"))[0])
    reference.load_lora_weights(str(lora), adapter_name="low", load_into_transformer_2=True)
    try:
        expected = reference(RED, num_inference_steps=STEPS, guidance_scale=4.0,
                             output_type="np", generator=torch.Generator().manual_seed(3),
                             **SIZE).frames[0]
    finally:
        reference.unload_lora_weights()
    assert np.abs(ours - plain).mean() > 0.02  # the LoRA matters
    assert np.abs(ours - expected).mean() < 0.01
