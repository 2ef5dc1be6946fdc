"""Motif-Video's memory modes, --offload and LoRAs (the flow video families', FlowVideoPipeline):
loaded to host memory, the frames bit for bit the offloaded plain run's under --medvram,
--lowvram and a --max-vram budget (image to video under --lowvram too); a LoRA made with peft on
diffusers' transformer gives at --lora's weight diffusers' MotifVideoPipeline video with it
merged into the weights by hand (the pipeline has no load_lora_weights), in the plain mode,
under --lowvram and --offload."""

from __future__ import annotations

import copy
import gc
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("peft", reason="the LoRA is made with peft")
import diffusers
import torch
from cli_support import cli_ok, png_frames
from lora_tiny import peft_lora
from motif_tiny import tiny_motif_pipeline, tiny_motif_transformer
from safetensors.torch import load_file

import gpucore
from diffusion.pipelines.video.motif_video import MotifVideoPipeline

PROMPT = "a cat walks on the beach at sunset"
HEIGHT, WIDTH, FRAMES = 32, 48, 5
# the blocks' attention, cross-attention and feed-forward layers
TARGETS = r".+\.(to_q|to_k|to_v|to_out\.0|add_[qkv]_proj|to_add_out|net\.0\.proj|net\.2)"
SCALE = 3 / 2  # lora_tiny's alpha 3 over its rank 2


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(a tiny MotifVideoPipeline folder, diffusers' pipeline of it)."""
    root = tmp_path_factory.mktemp("motif-mem")
    return root / "motif", tiny_motif_pipeline(root)


def _diffusers(reference: Any) -> np.ndarray:
    with torch.no_grad():
        frames = reference(prompt=PROMPT, height=HEIGHT, width=WIDTH, num_frames=FRAMES,
                           num_inference_steps=2, generator=torch.Generator().manual_seed(7),
                           output_type="np").frames
    return np.asarray(frames[0])


def _merged(reference: Any, path: Path, weight: float) -> np.ndarray:
    """diffusers' video with W + weight * SCALE * B @ A in every layer the LoRA names, the
    transformer's weights put back after."""
    lora = load_file(str(path))
    modules = dict(reference.transformer.named_modules())
    saved = {}
    with torch.no_grad():
        for key in [k for k in lora if k.endswith(".lora_A.weight")]:
            name = key.removeprefix("transformer.").removesuffix(".lora_A.weight")
            layer = modules[name]
            saved[name] = layer.weight.clone()
            up = lora[key.replace("lora_A", "lora_B")].double()
            layer.weight += (weight * SCALE * up @ lora[key].double()).float()
    assert len(saved) > 20  # the blocks' layers, dual and single
    try:
        return _diffusers(reference)
    finally:
        with torch.no_grad():
            for name, weight_ in saved.items():
                modules[name].weight.copy_(weight_)


def test_memory_modes_give_the_plain_frames(first_device: gpucore.Device,
                                            tiny: tuple[Path, Any]) -> None:
    """Loaded to host memory (as the CLI loads for a memory mode): the offloaded run's frames
    bit for bit under --medvram, --lowvram (units uploaded: the mode is in effect) and a
    --max-vram budget the pool never passes."""
    from diffusion.pipelines.sd.memory import MemoryMode

    folder, _ = tiny
    pipe = MotifVideoPipeline.from_pretrained(folder, device=first_device, offload=True)
    settings = {"height": HEIGHT, "width": WIDTH, "num_frames": FRAMES,
                "num_inference_steps": 1, "negative_prompt": "two birds", "seed": 7}
    plain = pipe(PROMPT, **settings)
    assert plain.std() > 0.02  # frames, not a flat field
    gc.collect()  # the budget is the device's: what earlier tests left on it counts too
    first_device.empty_pool()
    budget = first_device.memory_stats().allocated + (16 << 20)  # and the activations'
    try:
        for mode in (MemoryMode(medvram=True), MemoryMode(lowvram=True),
                     MemoryMode(max_vram=budget)):
            pipe.set_memory_mode(mode)
            assert pipe._memory is not None and pipe.memory_mode == mode
            start = pipe._memory.residency.uploaded
            first_device.reset_peak_memory()
            np.testing.assert_array_equal(pipe(PROMPT, **settings), plain)
            assert pipe._memory.residency.uploaded > start
        assert first_device.memory_stats().peak_reserved <= budget
    finally:  # a budget left set would fail every later test of the session's device
        pipe.set_memory_mode(MemoryMode())


def test_image_to_video_under_lowvram(first_device: gpucore.Device,
                                      tmp_path: Path) -> None:
    """Image to video, loaded to host memory: the picture's VAE encode and SigLIP's states
    (with T5Gemma 2, one unit) under --lowvram give the offloaded plain run's frames bit for
    bit."""
    from PIL import Image

    from diffusion.pipelines.sd.memory import MemoryMode

    tiny_motif_pipeline(tmp_path, i2v=True)
    pipe = MotifVideoPipeline.from_pretrained(tmp_path / "motif-i2v", device=first_device,
                                              offload=True)
    picture = Image.fromarray((np.random.default_rng(2).uniform(0, 1, (HEIGHT, WIDTH, 3))
                               * 255).astype(np.uint8))
    settings = {"height": HEIGHT, "width": WIDTH, "num_frames": FRAMES,
                "num_inference_steps": 1, "seed": 7, "image": picture}
    plain = pipe(PROMPT, **settings)
    try:
        pipe.set_memory_mode(MemoryMode(lowvram=True))
        assert pipe._memory is not None
        start = pipe._memory.residency.uploaded
        np.testing.assert_array_equal(pipe(PROMPT, **settings), plain)
        assert pipe._memory.residency.uploaded > start
    finally:
        pipe.set_memory_mode(MemoryMode())


@pytest.fixture(scope="module")
def lora(tiny: tuple[Path, Any], tmp_path_factory: pytest.TempPathFactory
         ) -> tuple[Path, np.ndarray]:
    """(a peft LoRA of the tiny transformer, diffusers' video with it merged at 0.8)."""
    _, reference = tiny
    # a copy: the cached transformer is the reference's, which must stay without the adapter
    path = peft_lora(copy.deepcopy(tiny_motif_transformer()), TARGETS, diffusers.WanPipeline,
                     tmp_path_factory.mktemp("motif-lora"), "motif")
    expected = _merged(reference, path, 0.8)
    # the LoRA matters (and the reference's weights were put back: its plain video)
    assert np.abs(expected - _diffusers(reference)).mean() > 0.05  # measured 0.20 mean
    return path, expected


@pytest.mark.parametrize("mode", [(), ("--lowvram",), ("--offload",)],
                         ids=["plain", "lowvram", "offload"])
def test_txt2vid_lora_matches_merged_weights(first_device: gpucore.Device,
                                             tiny: tuple[Path, Any],
                                             lora: tuple[Path, np.ndarray], tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str],
                                             mode: tuple[str, ...]) -> None:
    (folder, _), (path, expected) = tiny, lora
    cli_ok(capsys, "txt2vid", "--model", str(folder), "--width", str(WIDTH), "--height",
           str(HEIGHT), "--frames", str(FRAMES), "--steps", "2", "--seed", "7", "--dtype",
           "float32", "--prompt", PROMPT, "--lora", f"{path}:0.8", *mode,
           "-o", str(tmp_path / "lora"))
    # within a level of diffusers' frames, the PNG's rounding (measured: 1 level on 0.03% of
    # the values)
    ours = png_frames(tmp_path / "lora")
    assert np.abs(ours - np.round(expected * 255) / 255).max() <= 1 / 255 + 1e-6
