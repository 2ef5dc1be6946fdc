"""Lucy Edit from the command line: `txt2vid --model LUCY --init-video DIR --lora FILE:W`
gives diffusers' LucyEditPipeline's frames with the LoRA loaded (`load_lora_weights` +
`set_adapters`), the video's frame count and size the run's; the LoRA visibly changes them;
what a Lucy Edit folder does not take (no video, img2vid, a denoising strength, txt2img) is
refused in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("peft", reason="diffusers loads LoRAs through PEFT")
import torch
from cli_support import cli_error, cli_ok, png_frames
from lucy_tiny import tiny_lucy_pipeline
from safetensors.numpy import save_file
from wan_tiny import WAN_TINY, wave_video

import gpucore

PROMPT = "make the cube red"
HEIGHT, WIDTH = 32, 64
RANK, WEIGHT = 4, 0.7


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from diffusers.pipelines.lucy import pipeline_lucy_edit
    from diffusers.pipelines.wan import pipeline_wan

    root = tmp_path_factory.mktemp("tiny-lucy-cli")
    reference = tiny_lucy_pipeline(root)
    with pytest.MonkeyPatch.context() as patch:  # (ftfy is not installed: Wan's cleaning)
        patch.setattr(pipeline_lucy_edit, "prompt_clean", pipeline_wan.prompt_clean)
        yield root / "lucy", reference


def _peft_lora(path: Path) -> Path:
    """diffusers/PEFT keys on both attentions of every block, large enough to show."""
    rng = np.random.default_rng(12)
    dim = WAN_TINY["num_attention_heads"] * WAN_TINY["attention_head_dim"]
    tensors = {}
    for i in range(WAN_TINY["num_layers"]):
        for name in ("attn1.to_q", "attn1.to_v", "attn2.to_k", "attn2.to_out.0"):
            tensors[f"transformer.blocks.{i}.{name}.lora_A.weight"] = rng.normal(
                0, 1.0, (RANK, dim)).astype(np.float32)
            tensors[f"transformer.blocks.{i}.{name}.lora_B.weight"] = rng.normal(
                0, 0.5, (dim, RANK)).astype(np.float32)
    save_file(tensors, str(path))
    return path


def test_cli_edit_with_lora_equals_diffusers(first_device: gpucore.Device,
                                             tiny: tuple[Path, Any], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    folder, reference = tiny
    video = wave_video(4, HEIGHT, WIDTH)
    (tmp_path / "in").mkdir()
    for i, frame in enumerate(video):
        frame.save(tmp_path / "in" / f"{i:05d}.png")
    lora = _peft_lora(tmp_path / "style.safetensors")

    def theirs() -> np.ndarray:
        return reference(video=video, prompt=PROMPT, negative_prompt="blurry", height=HEIGHT,
                         width=WIDTH, num_frames=len(video), num_inference_steps=2,
                         guidance_scale=4.0, output_type="np",
                         generator=torch.Generator().manual_seed(3)).frames[0]

    plain = theirs()
    reference.load_lora_weights(str(lora), adapter_name="style")
    try:
        reference.set_adapters(["style"], [WEIGHT])
        expected = theirs()
    finally:
        reference.unload_lora_weights()
    assert np.abs(expected - plain).mean() > 0.1  # the LoRA visibly matters (0.27)
    out, _ = cli_ok(capsys, "txt2vid", "--model", str(folder), "--prompt", PROMPT,
                    "--negative-prompt", "blurry", "--init-video", str(tmp_path / "in"),
                    "--steps", "2", "--cfg-scale", "4", "--seed", "3", "--dtype", "float32",
                    "--lora", f"{lora}:{WEIGHT}", "-o", str(tmp_path / "out"))
    made = png_frames(out)
    assert made.shape == expected.shape == (5, HEIGHT, WIDTH, 3)
    assert np.abs(made - expected).max() < 1.01 / 255  # the PNGs' 8-bit rounding


@pytest.mark.nodevice
def test_cli_refusals(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "lucy"  # its model_index.json tells the family
    folder.mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "LucyEditPipeline"}))
    (tmp_path / "in").mkdir()
    for i, frame in enumerate(wave_video(0, 32, 32)):
        frame.save(tmp_path / "in" / f"{i:05d}.png")
    (tmp_path / "in.png").write_bytes((tmp_path / "in" / "00000.png").read_bytes())
    edit = f"is Lucy Edit, which edits a video: use `txt2vid --model {folder} --init-video"
    for argv, says in (
            (("txt2vid", "--prompt", "x"), edit),
            (("img2vid", "--image", str(tmp_path / "in.png"), "--prompt", "x"), edit),
            (("txt2vid", "--prompt", "x", "--init-video", str(tmp_path / "in"),
              "--denoising-strength", "0.5"),
             "--denoising-strength: Lucy Edit runs the whole schedule from noise"),
            (("txt2img", "--prompt", "x"), f"{folder} is Lucy Edit, which edits a video")):
        assert says in cli_error(capsys, argv[0], "--model", str(folder), *argv[1:])
