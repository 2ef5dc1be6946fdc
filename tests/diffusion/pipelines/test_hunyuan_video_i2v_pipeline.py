"""HunyuanVideo-I2V (a HunyuanVideoImageToVideoPipeline folder of hunyuan_video_i2v_tiny's
parts, token_replace): our frames against diffusers' on PyTorch CPU float32 (the picture
through the VAE and LLaVA, its first latent frame kept each step, embedded guidance); another
picture visibly changes the video; the latent_concat transformer's inputs; First Block Cache
deciding as diffusers' hook; `img2vid` on it, with a LoRA in Tencent's names too, and txt2vid
refused in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_frames

import gpucore
from diffusion.pipelines.sd.memory import MemoryMode
from diffusion.pipelines.video.hunyuan_video import HunyuanVideoPipeline
from diffusion.pipelines.video.hunyuan_video_i2v import HunyuanVideoImageToVideoPipeline

PROMPT = "a red circle on a blue background"
# 5 frames: 2 latent frames; 8 x 12 latents (the tiny VAE's 4x), 4 x 6 patches
HEIGHT, WIDTH, FRAMES, STEPS = 32, 48, 5, 2
# (mean, max) |ours - diffusers| in [0, 1], float32: measured 2.0e-7 and 2.3e-6
# (latent_concat: 2.7e-7 and 1.9e-6)
TOL = (1e-6, 5e-6)
# true CFG triples the two passes' difference: measured 9.5e-7 and 1.3e-5
CFG_TOL = (5e-6, 3e-5)
SETTINGS = {"height": HEIGHT, "width": WIDTH, "num_frames": FRAMES,
            "num_inference_steps": STEPS, "guidance_scale": 4.5, "max_sequence_length": 40}
# First Block Cache over 4 steps: the first block's residual changes by 0.16 at step 1
# (skipped), then by 1.03 and 0.50 against the last computed step's (computed), measured over
# diffusers' hook
FBC_THRESHOLD, FBC_DECISIONS = 0.3, [True, False, True, True]
# Tencent's original modules a LoRA patches -> diffusers' layers their rows split into
_DOUBLE, _SINGLE = "transformer_blocks", "single_transformer_blocks"
LORA_SPLITS = {
    "double_blocks.0.img_attn_qkv": [f"{_DOUBLE}.0.attn.to_{x}" for x in "qkv"],
    "double_blocks.1.txt_attn_qkv": [f"{_DOUBLE}.1.attn.add_{x}_proj" for x in "qkv"],
    "double_blocks.0.img_mlp.fc1": [f"{_DOUBLE}.0.ff.net.0.proj"],
    "single_blocks.0.linear1": [*(f"{_SINGLE}.0.attn.to_{x}" for x in "qkv"),
                                f"{_SINGLE}.0.proj_mlp"],
    "single_blocks.1.linear2": [f"{_SINGLE}.1.proj_out"]}


def _picture(seed: int) -> Any:
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (40, 56, 3), dtype=np.uint8))


@pytest.fixture(scope="module")
def tiny(tiny_hunyuan_video_i2v: tuple[Path, Any]) -> tuple[Path, Any, np.ndarray]:
    """(the folder, diffusers' pipeline, its video of PROMPT from picture 1)."""
    folder, reference = tiny_hunyuan_video_i2v
    with torch.no_grad():
        frames = reference(image=_picture(1), prompt=PROMPT, output_type="np",
                           generator=torch.Generator().manual_seed(7), **SETTINGS).frames
    return folder, reference, np.asarray(frames)[0]


def test_i2v_frames_equal_diffusers(first_device: gpucore.Device,
                                    tiny: tuple[Path, Any, np.ndarray]) -> None:
    """diffusers' frames (a prompt of 40 tokens' room); picture 2 moves them visibly."""
    folder, _reference, expected = tiny
    with pytest.raises(ValueError, match=r"is HunyuanVideo-I2V \(image to video\): load it with "
                                         "HunyuanVideoImageToVideoPipeline"):
        HunyuanVideoPipeline.from_pretrained(folder)
    pipe = HunyuanVideoImageToVideoPipeline.from_pretrained(folder)
    ours = pipe(PROMPT, image=_picture(1), seed=7, **SETTINGS)[0]
    assert ours.shape == expected.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert np.abs(ours - expected).mean() < TOL[0]
    assert np.abs(ours - expected).max() < TOL[1]
    other = pipe(PROMPT, image=_picture(2), seed=7, **SETTINGS)[0]
    assert np.abs(other - ours).mean() > 0.012  # measured 0.025
    pipe.set_memory_mode(MemoryMode(lowvram=True))  # the blocks streamed: the same frames
    assert np.array_equal(pipe(PROMPT, image=_picture(1), seed=7, **SETTINGS)[0], ours)


def test_i2v_true_cfg_equals_diffusers(first_device: gpucore.Device,
                                       tiny: tuple[Path, Any, np.ndarray]) -> None:
    """True CFG against a negative prompt, which reads a black picture (every 2nd of its
    tokens, as diffusers): diffusers' frames, visibly not the unguided ones."""
    folder, reference, plain = tiny
    guided = {**SETTINGS, "negative_prompt": "a photo of a cat", "true_cfg_scale": 3.0}
    with torch.no_grad():
        expected = np.asarray(reference(image=_picture(1), prompt=PROMPT, output_type="np",
                                        generator=torch.Generator().manual_seed(7),
                                        **guided).frames)[0]
    ours = HunyuanVideoImageToVideoPipeline.from_pretrained(folder)(
        PROMPT, image=_picture(1), seed=7, **guided)[0]
    assert np.abs(ours - expected).mean() < CFG_TOL[0]
    assert np.abs(ours - expected).max() < CFG_TOL[1]
    assert np.abs(ours - plain).mean() > 0.05  # measured 0.14


def test_img2vid(first_device: gpucore.Device, tiny: tuple[Path, Any, np.ndarray],
                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`img2vid` on the folder gives diffusers' video (through 8-bit PNG frames); txt2vid is
    refused in one line before the weights load."""
    folder, _, expected = tiny
    picture = tmp_path / "in.png"
    _picture(1).save(picture)
    common = ("--model", str(folder), "--width", str(WIDTH), "--height", str(HEIGHT),
              "--steps", str(STEPS), "--seed", "7", "--dtype", "float32", "--prompt", PROMPT,
              "--frames", str(FRAMES), "--cfg-scale", "4.5")
    out, _ = cli_ok(capsys, "img2vid", *common, "--image", str(picture), "-o",
                    str(tmp_path / "circle"))
    assert np.abs(png_frames(out) - expected).mean() < 0.01
    assert "HunyuanVideo-I2V, which animates a picture: use img2vid --image IN.png" in \
        cli_error(capsys, "txt2vid", *common, "-o", str(tmp_path / "x.webp"))


def test_latent_concat_equals_diffusers(first_device: gpucore.Device,
                                        tmp_path: Path) -> None:
    """HunyuanVideo-I2V-33ch's way (the picture's latents and a mask as 2 x 4 + 1 channels,
    the first 4 decoded frames dropped): diffusers' 5 of 9 frames."""
    from hunyuan_video_i2v_tiny import tiny_hunyuan_video_i2v_pipeline

    reference = tiny_hunyuan_video_i2v_pipeline(tmp_path, condition="latent_concat")
    settings = {**SETTINGS, "num_frames": 9}
    with torch.no_grad():
        expected = np.asarray(reference(image=_picture(1), prompt=PROMPT, output_type="np",
                                        generator=torch.Generator().manual_seed(7),
                                        **settings).frames)[0]
    pipe = HunyuanVideoImageToVideoPipeline.from_pretrained(tmp_path / "hunyuan-video-i2v")
    ours = pipe(PROMPT, image=_picture(1), seed=7, **settings)[0]
    assert ours.shape == expected.shape == (5, HEIGHT, WIDTH, 3)
    assert np.abs(ours - expected).mean() < TOL[0]
    assert np.abs(ours - expected).max() < TOL[1]


def test_i2v_first_block_cache_matches_diffusers_hook(first_device: gpucore.Device,
                                                      tiny: tuple[Path, Any, np.ndarray],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """First Block Cache (`cache` fbc) decides each step as diffusers' hook on its
    HunyuanVideo-I2V transformer (`enable_cache(FirstBlockCacheConfig)`; diffusers' I2V
    pipeline sets no cache context, so the test sets the one its T2V pipeline sets), the
    picture's first latent frame replaced in both; the frames with a skipped step are
    diffusers'."""
    from diffusers.hooks import FirstBlockCacheConfig
    from first_block_cache_ref import diffusers_decisions

    from diffusion.models import step_cache
    from diffusion.models.step_cache import CacheSpec, StepCache

    folder, reference, _ = tiny
    settings = {**SETTINGS, "num_inference_steps": 4}
    theirs = diffusers_decisions(monkeypatch)
    reference.transformer.enable_cache(FirstBlockCacheConfig(threshold=FBC_THRESHOLD))
    try:
        with torch.no_grad(), reference.transformer.cache_context("cond"):
            expected = np.asarray(reference(image=_picture(1), prompt=PROMPT, output_type="np",
                                            generator=torch.Generator().manual_seed(7),
                                            **settings).frames)[0]
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
    cache = StepCache(CacheSpec("fbc", FBC_THRESHOLD), 4)
    got = HunyuanVideoImageToVideoPipeline.from_pretrained(folder)(
        PROMPT, image=_picture(1), seed=7, cache=cache, **settings)[0]
    assert theirs == FBC_DECISIONS
    assert ours == theirs and cache.summary() == "fbc 0.3, 3/4 steps computed"
    assert np.abs(got - expected).mean() < TOL[0]
    assert np.abs(got - expected).max() < TOL[1]


@pytest.mark.parametrize("layout", ["musubi", "diffusers"])
def test_img2vid_lora_matches_merged(first_device: gpucore.Device,
                                     tiny: tuple[Path, Any, np.ndarray], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str], layout: str) -> None:
    """`img2vid --lora FILE:0.8` of a LoRA in Tencent's original names as musubi-tuner writes
    them (fused q/k/v and linear1, `lora_down` / `lora_up` / `alpha`), or in diffusers' (each
    layer's `transformer.` `lora_A` / `lora_B`, no alpha: scale 1), gives the video of
    diffusers' I2V pipeline whose transformer has the LoRA merged into its weights by hand
    in torch (the fused rows split into diffusers' layers); the LoRA visibly changes it."""
    from safetensors.torch import save_file

    folder, reference, plain = tiny
    layers = dict(reference.transformer.named_modules())
    gen, lora, saved = torch.Generator().manual_seed(3), {}, {}
    for original, targets in LORA_SPLITS.items():
        weights = [layers[name].weight for name in targets]
        down = torch.randn(2, weights[0].shape[1], generator=gen) * 0.4
        up = torch.randn(sum(w.shape[0] for w in weights), 2, generator=gen) * 0.4
        name = "lora_unet_" + original.replace(".", "_")
        if layout == "musubi":
            lora |= {f"{name}.lora_down.weight": down, f"{name}.lora_up.weight": up,
                     f"{name}.alpha": torch.tensor(3.0)}
        parts = up.split([w.shape[0] for w in weights])
        for target, weight, rows in zip(targets, weights, parts, strict=True):
            if layout == "diffusers":  # alpha / rank (1.5) in B
                lora |= {f"transformer.{target}.lora_A.weight": down.clone(),
                         f"transformer.{target}.lora_B.weight": rows * 1.5}
            saved[id(weight)] = weight.detach().clone()
            weight.data += 0.8 * 3.0 / 2 * (rows @ down)  # weight x alpha / rank
    save_file({k: v.contiguous() for k, v in lora.items()}, tmp_path / "lora.safetensors")
    try:
        with torch.no_grad():
            expected = np.asarray(reference(image=_picture(1), prompt=PROMPT, output_type="np",
                                            generator=torch.Generator().manual_seed(7),
                                            **SETTINGS).frames)[0]
    finally:
        for module in (layers[name] for targets in LORA_SPLITS.values() for name in targets):
            module.weight.data = saved[id(module.weight)]
    assert np.abs(expected - plain).mean() > 0.02  # the LoRA matters (measured 0.067)
    _picture(1).save(tmp_path / "in.png")
    out, _ = cli_ok(capsys, "img2vid", "--model", str(folder), "--image", str(tmp_path / "in.png"),
                    "--width", str(WIDTH), "--height", str(HEIGHT), "--frames", str(FRAMES),
                    "--steps", str(STEPS), "--seed", "7", "--dtype", "float32", "--cfg-scale",
                    "4.5", "--prompt", PROMPT, "--lora", f"{tmp_path / 'lora.safetensors'}:0.8",
                    "-o", str(tmp_path / "lora"))
    # within a level of the merged reference's frames, the PNG's rounding (measured: equal)
    assert np.abs(png_frames(out) - np.round(expected * 255) / 255).max() <= 1 / 255 + 1e-6
