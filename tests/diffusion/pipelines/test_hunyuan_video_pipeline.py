"""HunyuanVideo (1.0) text-to-video (a HunyuanVideoPipeline folder of hunyuan_video_pipe_tiny's
parts): our frames against diffusers' on PyTorch CPU float32 (a ragged batch of prompts with
the embedded guidance, the folder's shifted schedule; true CFG against a negative prompt
besides; First Block Cache deciding as diffusers' hook), --lowvram's frames the plain run's;
`txt2vid` on it, with a LoRA too; img2vid, txt2img and the folder's broken parts refused in
one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_frames

import gpucore
from diffusion.loaders.errors import WeightsError
from diffusion.loaders.hunyuan_video.folder import (
    hunyuan_video_family,
    load_hunyuan_video_folder,
)
from diffusion.pipelines.sd.memory import MemoryMode
from diffusion.pipelines.video.hunyuan_video import HunyuanVideoPipeline

PROMPT, NEGATIVE = "a red circle on a blue background", "a photo of a cat"
BATCH = [PROMPT, "the quick brown fox jumps over the lazy dog"]
# 5 frames: 2 latent frames; 8 x 12 latents (the tiny VAE's 4x), 4 x 6 patches
HEIGHT, WIDTH, FRAMES, STEPS = 32, 48, 5, 2
# (mean, max) |ours - diffusers| in [0, 1], float32: measured 3.1e-7 and 1.7e-6; with true
# CFG (3x the difference of two passes) 1.8e-6 and 1.0e-5
TOL, CFG_TOL = (1e-6, 5e-6), (5e-6, 3e-5)
PNG = 0.01  # mean, through 8-bit PNG frames
# the double and single blocks' attention and MLP inputs, the token refiner's attention
LORA_TARGETS = r".+\.(to_q|to_k|to_v|add_q_proj|add_k_proj|add_v_proj|proj_mlp)"
# between the first block's residual changes at step 1 (below 0.5: skipped) and at the others
# (above 0.6), measured over diffusers' hook
FBC_THRESHOLD = 0.55
SETTINGS = {"height": HEIGHT, "width": WIDTH, "num_frames": FRAMES,
            "num_inference_steps": STEPS, "guidance_scale": 4.5}


def _diffusers(reference: Any, prompt: str | list[str] = PROMPT, **options: Any
              ) -> np.ndarray:
    """diffusers' videos (B, frames, height, width, 3) of `prompt`."""
    with torch.no_grad():
        frames = reference(prompt, generator=torch.Generator().manual_seed(7),
                           output_type="np", **{**SETTINGS, **options}).frames
    return np.asarray(frames)


@pytest.fixture(scope="module")
def tiny(tiny_hunyuan_video: tuple[Path, Any]) -> tuple[Path, Any, np.ndarray]:
    """(the folder, diffusers' pipeline, its video of PROMPT)."""
    folder, reference = tiny_hunyuan_video
    return folder, reference, _diffusers(reference)[0]


def _close(ours: np.ndarray, expected: np.ndarray, tol: tuple[float, float] = TOL) -> None:
    assert ours.shape == expected.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert np.abs(ours - expected).mean() < tol[0]
    assert np.abs(ours - expected).max() < tol[1]


def test_frames_equal_diffusers(first_device: gpucore.Device,
                                tiny: tuple[Path, Any, np.ndarray]) -> None:
    """A batch of two prompts of different lengths (diffusers masks the padding where it
    crops a single prompt's) with the embedded guidance, and true CFG against a negative
    prompt: the frames move by 0.065 mean (measured), so the two prompts' texts visibly
    differ in the transformer (with the text ignored both passes would be the same, and so
    the frames); --lowvram's frames the plain run's, bit for bit."""
    folder, reference, expected = tiny
    pipe = HunyuanVideoPipeline.from_pretrained(folder)
    ours = pipe(BATCH, seed=7, **SETTINGS)
    for video, reference_video in zip(ours, _diffusers(reference, BATCH), strict=True):
        _close(video, reference_video)
    guided = pipe(PROMPT, negative_prompt=NEGATIVE, true_cfg_scale=3.0, seed=7, **SETTINGS)[0]
    _close(guided, _diffusers(reference, negative_prompt=NEGATIVE, true_cfg_scale=3.0)[0],
           CFG_TOL)
    assert np.abs(guided - expected).mean() > 0.03
    pipe.set_memory_mode(MemoryMode(lowvram=True))  # the blocks streamed: the same frames
    assert np.array_equal(pipe(BATCH, seed=7, **SETTINGS), ours)
    with pytest.raises(ValueError, match="from text only"):
        pipe(PROMPT, image=np.zeros((32, 48, 3), np.uint8), num_frames=FRAMES)


def test_first_block_cache_matches_diffusers_hook(first_device: gpucore.Device,
                                                  tiny: tuple[Path, Any, np.ndarray],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """First Block Cache (`cache` fbc) decides each step as diffusers' hook on its
    HunyuanVideo transformer (`enable_cache(FirstBlockCacheConfig)`), and the frames with a
    skipped step are diffusers'."""
    from diffusers.hooks import FirstBlockCacheConfig
    from first_block_cache_ref import diffusers_decisions

    from diffusion.models import step_cache
    from diffusion.models.step_cache import CacheSpec, StepCache

    folder, reference, _ = tiny
    steps, threshold = 4, FBC_THRESHOLD
    theirs = diffusers_decisions(monkeypatch)
    reference.transformer.enable_cache(FirstBlockCacheConfig(threshold=threshold))
    try:
        expected = _diffusers(reference, num_inference_steps=steps)[0]
    finally:
        reference.transformer.disable_cache()
    ours: list[bool] = []
    run = step_cache.FirstBlockCache.run

    def spy(self: Any, *args: Any, **kwargs: Any) -> Any:
        before = self.computed
        out = run(self, *args, **kwargs)
        ours.append(self.computed > before)
        return out

    monkeypatch.setattr(step_cache.FirstBlockCache, "run", spy)
    cache = StepCache(CacheSpec("fbc", threshold), steps)
    pipe = HunyuanVideoPipeline.from_pretrained(folder)
    got = pipe(PROMPT, seed=7, cache=cache, **{**SETTINGS, "num_inference_steps": steps})[0]
    assert theirs == [True, False, True, True]
    assert ours == theirs and cache.summary() == "fbc 0.55, 3/4 steps computed"
    _close(got, expected)


def test_txt2vid(first_device: gpucore.Device, tiny: tuple[Path, Any, np.ndarray],
                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`txt2vid` on the folder gives diffusers' video (a negative prompt without
    --true-cfg-scale unused, with a note); img2vid, txt2img, a cache other than
    First Block Cache and --true-cfg-scale on another family are refused in one line before
    the weights load."""
    folder, _, expected = tiny
    common = ("--model", str(folder), "--width", str(WIDTH), "--height", str(HEIGHT),
              "--steps", str(STEPS), "--seed", "7", "--dtype", "float32", "--prompt", PROMPT,
              "--frames", str(FRAMES), "--cfg-scale", "4.5")
    # a negative prompt without --true-cfg-scale: said to be unused, as diffusers ignores it
    out, err = cli_ok(capsys, "txt2vid", *common, "--negative-prompt", NEGATIVE, "-o",
                      str(tmp_path / "circle"))
    assert np.abs(png_frames(out) - expected).mean() < PNG
    assert "note: HunyuanVideo's true CFG takes --true-cfg-scale above 1 and" in err
    picture = tmp_path / "in.png"
    from PIL import Image

    Image.fromarray(np.zeros((32, 48, 3), np.uint8)).save(picture)
    assert "HunyuanVideo text-to-video, which makes videos from text only: use txt2vid" in \
        cli_error(capsys, "img2vid", *common, "--image", str(picture), "-o",
                  str(tmp_path / "x.webp"))
    assert "HunyuanVideo text-to-video model: make videos with `python -m diffusion " \
        "txt2vid" in cli_error(capsys, "txt2img", "--model", str(folder), "--prompt", PROMPT)
    assert "HunyuanVideo runs First Block Cache (fbc[:THRESHOLD])" in cli_error(
        capsys, "txt2vid", *common, "--cache", "teacache", "-o", str(tmp_path / "x.webp"))
    assert "--true-cfg-scale is for HunyuanVideo models" in cli_error(
        capsys, "txt2vid", "--model", str(tmp_path / "wan"), "--prompt", PROMPT,
        "--true-cfg-scale", "3", "-o", str(tmp_path / "x.webp"))


def test_txt2vid_lora_matches_diffusers(first_device: gpucore.Device,
                                        tiny: tuple[Path, Any, np.ndarray], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """`txt2vid --lora FILE:0.8` of a peft LoRA on the double and single blocks' and the token
    refiner's attention (saved by `HunyuanVideoPipeline.save_lora_weights`) gives diffusers'
    video after its `load_lora_weights` + `set_adapters`; the LoRA visibly changes it."""
    pytest.importorskip("peft", reason="diffusers' LoRA loading needs peft")
    import diffusers
    from hunyuan_video_tiny import tiny_hunyuan_video_transformer
    from lora_tiny import peft_lora

    folder, reference, plain = tiny
    path = peft_lora(tiny_hunyuan_video_transformer(), LORA_TARGETS,
                     diffusers.HunyuanVideoPipeline, tmp_path, "hv1")
    reference.load_lora_weights(str(path), adapter_name="hv1")
    try:
        reference.set_adapters(["hv1"], adapter_weights=[0.8])
        expected = _diffusers(reference)[0]
    finally:
        reference.unload_lora_weights()
    assert np.abs(expected - plain).mean() > 0.02  # the LoRA matters (measured 0.081 mean)
    cli_ok(capsys, "txt2vid", "--model", str(folder), "--width", str(WIDTH), "--height",
           str(HEIGHT), "--frames", str(FRAMES), "--steps", str(STEPS), "--seed", "7",
           "--dtype", "float32", "--cfg-scale", "4.5", "--prompt", PROMPT, "--lora",
           f"{path}:0.8", "-o", str(tmp_path / "lora"))
    # within a level of diffusers' frames, the PNG's rounding
    ours = png_frames(tmp_path / "lora")
    assert np.abs(ours - np.round(expected * 255) / 255).max() <= 1 / 255 + 1e-6


def test_folder_refusals(tiny: tuple[Path, Any, np.ndarray], tmp_path: Path) -> None:
    """WeightsError naming the part for a text encoder other than Llama's and a missing
    tokenizer.json, and naming the pipeline for HunyuanVideo's image-to-video folder."""
    folder = tmp_path / "broken"
    shutil.copytree(tiny[0], folder)
    config = folder / "text_encoder" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "model_type": "qwen3"}))
    with pytest.raises(WeightsError, match=r"text_encoder: not a LlamaModel \(model_type "
                                           r"'qwen3'\)"):
        load_hunyuan_video_folder(folder)
    (folder / "tokenizer" / "tokenizer.json").unlink()
    config.write_text(json.dumps({**json.loads(config.read_text()), "model_type": "llama"}))
    with pytest.raises(WeightsError, match=r"tokenizer\.json: required file is missing"):
        load_hunyuan_video_folder(folder)
    index = folder / "model_index.json"
    index.write_text(json.dumps({**json.loads(index.read_text()),
                                 "_class_name": "HunyuanSkyreelsImageToVideoPipeline"}))
    assert hunyuan_video_family(folder) == "hunyuan-video"  # claimed, to be refused by name
    with pytest.raises(WeightsError, match=r"HunyuanVideo's SkyReels image-to-video model "
                                           r"\(HunyuanSkyreelsImageToVideoPipeline\) is not run"):
        load_hunyuan_video_folder(folder)
