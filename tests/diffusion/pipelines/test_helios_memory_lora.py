"""Helios' memory modes and LoRAs, as Wan's: loaded to host memory, --medvram, --lowvram and a
--max-vram budget give the plain frames bit for bit (the steps and each chunk's decode taking
turns); a LoRA made with peft on diffusers' HeliosTransformer3DModel and saved by
`HeliosPipeline.save_lora_weights` gives, through `txt2vid --lora FILE:0.8` (plain and
--lowvram), diffusers' video after its `load_lora_weights` + `set_adapters`."""

from __future__ import annotations

import gc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("peft", reason="diffusers' LoRA loading needs peft")
import diffusers
import torch
from cli_support import cli_ok, png_frames
from helios_tiny import tiny_helios_pipeline, tiny_helios_transformer
from lora_tiny import peft_lora

import gpucore
from diffusion.pipelines.video.helios import HeliosPipeline

PROMPT = "a red fox runs through the snow"
TARGETS = r".+\.(to_q|to_k|to_v|to_out\.0|net\.0\.proj|net\.2)"


@pytest.fixture(autouse=True)
def _no_ftfy(monkeypatch: pytest.MonkeyPatch) -> None:
    """HeliosPipeline calls ftfy unconditionally (not installed here); Wan's cleaning is the
    same for these ASCII prompts."""
    from diffusers.pipelines.helios import pipeline_helios
    from diffusers.pipelines.wan import pipeline_wan

    monkeypatch.setattr(pipeline_helios, "prompt_clean", pipeline_wan.prompt_clean)


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    root = tmp_path_factory.mktemp("helios-memory")
    return tiny_helios_pipeline(root), root / "helios"


def test_memory_modes_give_the_plain_frames(first_device: gpucore.Device,
                                            built: tuple[Any, Path]) -> None:
    """Two chunks under each mode (units uploaded: the mode is in effect), the pool within
    the --max-vram budget; a budget below the largest unit refused in one line."""
    from diffusion.pipelines.sd.memory import MemoryMode

    pipe = HeliosPipeline.from_pretrained(built[1], device=first_device, offload=True)
    settings = {"height": 32, "width": 48, "num_frames": 10, "num_inference_steps": 1,
                "guidance_scale": 4.0, "num_latent_frames_per_chunk": 2,
                "max_sequence_length": 16, "seed": 7}
    plain = pipe(PROMPT, **settings)
    with pytest.raises(ValueError, match=r"--max-vram 0\.000 GiB .* at least .* MiB"):
        pipe.set_memory_mode(MemoryMode(max_vram=4096))
    gc.collect()  # the budget is the device's: what earlier tests left on it counts too
    first_device.empty_pool()
    budget = first_device.memory_stats().allocated + (16 << 20)  # and the activations'
    try:
        for mode in (MemoryMode(medvram=True), MemoryMode(lowvram=True),
                     MemoryMode(max_vram=budget)):
            pipe.set_memory_mode(mode)
            assert pipe._memory is not None
            start = pipe._memory.residency.uploaded
            first_device.reset_peak_memory()
            np.testing.assert_array_equal(pipe(PROMPT, **settings), plain)
            assert pipe._memory.residency.uploaded > start
        assert first_device.memory_stats().peak_reserved <= budget
    finally:  # a budget left set would fail every later test of the session's device
        pipe.set_memory_mode(MemoryMode())


def _diffusers(reference: Any) -> np.ndarray:
    with torch.no_grad():
        frames = reference(prompt=PROMPT, height=32, width=48, num_frames=29,
                           num_inference_steps=2, guidance_scale=1.0,
                           generator=torch.Generator().manual_seed(7), output_type="np").frames
    return np.asarray(frames[0])


@pytest.fixture(scope="module")
def lora(built: tuple[Any, Path], tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[Path, np.ndarray]:
    """(a peft LoRA of the tiny transformer, diffusers' video with it at 0.8)."""
    from diffusers.pipelines.helios import pipeline_helios
    from diffusers.pipelines.wan import pipeline_wan

    reference, _ = built
    path = peft_lora(tiny_helios_transformer(), TARGETS, diffusers.HeliosPipeline,
                     tmp_path_factory.mktemp("helios-lora"), "helios")
    with pytest.MonkeyPatch.context() as patch:  # (the autouse fixture is per test)
        patch.setattr(pipeline_helios, "prompt_clean", pipeline_wan.prompt_clean)
        plain = _diffusers(reference)
        reference.load_lora_weights(str(path), adapter_name="helios")
        try:
            reference.set_adapters(["helios"], adapter_weights=[0.8])
            expected = _diffusers(reference)
        finally:
            reference.unload_lora_weights()
    assert np.abs(expected - plain).mean() > 0.02  # the LoRA matters
    return path, expected


@pytest.mark.parametrize("mode", [(), ("--lowvram",)], ids=["plain", "lowvram"])
def test_txt2vid_lora_matches_diffusers(first_device: gpucore.Device, built: tuple[Any, Path],
                                        lora: tuple[Path, np.ndarray], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str],
                                        mode: tuple[str, ...]) -> None:
    (_, folder), (path, expected) = built, lora
    cli_ok(capsys, "txt2vid", "--model", str(folder), "--width", "48", "--height", "32",
           "--frames", "29", "--steps", "2", "--seed", "7", "--dtype", "float32",
           "--cfg-scale", "1", "--prompt", PROMPT, "--lora", f"{path}:0.8", *mode,
           "-o", str(tmp_path / "lora"))
    ours = png_frames(tmp_path / "lora")
    assert ours.shape == expected.shape == (33, 32, 48, 3)
    # within a level of diffusers' frames (the PNGs' rounding)
    assert np.abs(ours - np.round(expected * 255) / 255).max() <= 1 / 255 + 1e-6
