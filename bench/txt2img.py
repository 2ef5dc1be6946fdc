"""Full-size SD 1.5 txt2img (random weights, 512x512, 20 steps, CFG 7): ours vs diffusers.

Builds a diffusers pipeline folder with random full-size weights and loads it with our
loader. Rows: DDIM float32 from the same initial latents on both sides (the images compared:
a parity check at full size), then Euler a - the WebUI's default sampler, the issue's target
workload - in float32 and float16 beside diffusers fp32 and fp16 (same schedule and step
count; the ancestral noise differs, so those images are not compared). Seconds are wall time
per image including text encoding and the VAE decode, the median of three after a warm-up.
BENCH_TILING=1 adds each Euler a row's picture with the WebUI's Tiling (`tiling=True`:
ours_tiling_s) and diffusers' with every UNet and VAE Conv2d made circular, as the WebUI
does (diffusers_fp16_tiling_s / _fp32_; vs_*_tiling).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import gpucore

from . import _harness
from ._cold_files import write_clip_tokenizer
from .unet import SD15_UNET, TINY_UNET

COLUMNS = ["sampler", "dtype", "size", "steps", "ours_s", "ours_gpu_s", "dispatches",
           "diffusers_fp32_s", "diffusers_fp16_s",
           "vs_fp32", "vs_fp16", "mean_abs_diff", "max_abs_diff", "ours_tiling_s",
           "vs_fp16_tiling"]


def write_sd15_folder(root: Path, quick: bool) -> None:
    """A diffusers SD 1.5 folder of random full-size weights (tiny ones when `quick`), the
    bundled vocabulary as its tokenizer."""
    import diffusers
    import torch
    import transformers

    torch.manual_seed(0)
    unet = diffusers.UNet2DConditionModel(**(TINY_UNET if quick else SD15_UNET))
    vae = diffusers.AutoencoderKL(
        block_out_channels=(32, 32, 32, 32) if quick else (128, 256, 512, 512),
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=2, latent_channels=4, norm_num_groups=32)
    hidden = 32 if quick else 768
    text = transformers.CLIPTextModel(transformers.CLIPTextConfig(
        hidden_size=hidden, intermediate_size=4 * hidden, num_hidden_layers=2 if quick else 12,
        num_attention_heads=4 if quick else 12, max_position_embeddings=77,
        hidden_act="quick_gelu", vocab_size=49408))
    unet.save_pretrained(root / "unet")
    vae.save_pretrained(root / "vae")
    text.save_pretrained(root / "text_encoder")
    diffusers.DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                            clip_sample=False, set_alpha_to_one=False,
                            steps_offset=1).save_pretrained(root / "scheduler")
    write_clip_tokenizer(root / "tokenizer")
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "safety_checker": [None, None], "feature_extractor": [None, None],
        "requires_safety_checker": False}))


def _median_seconds(generate: Callable[[], np.ndarray], repeat: int) -> tuple[float, np.ndarray]:
    """Median wall seconds of `generate()` over `repeat` runs (after one warm-up run), and the
    last image."""
    images: list[np.ndarray] = []
    ms = _harness.numpy_ms(lambda: images.append(generate()), repeat=repeat)
    return ms / 1e3, images[-1]


def _ours(root: Path, device: gpucore.Device, dtype: Any, sampler: str, settings: dict[str, Any],
          repeat: int, tiling: bool = False) -> tuple[float, np.ndarray, dict[str, Any]]:
    """(median wall seconds, the image, {"ours_gpu_s", "dispatches"} of one more image run
    under timestamp queries: the sum of its dispatches' GPU time - replayed steps included -
    where the adapter has them, else None; with `tiling`, "ours_tiling_s": the median of the
    same picture with the WebUI's Tiling)."""
    from diffusion import load_pipeline

    pipe = load_pipeline(root, device=device, dtype=dtype)
    seconds, image = _median_seconds(
        lambda: pipe.txt2img(**settings, sampler=sampler).images[0], repeat)
    gpu: dict[str, Any] = {"ours_gpu_s": None, "dispatches": None}
    if device.has_timestamps:
        with device.profile() as prof:
            pipe.txt2img(**settings, sampler=sampler)
        gpu = {"ours_gpu_s": prof.total_ns() / 1e9, "dispatches": len(prof.records)}
    if tiling:
        gpu["ours_tiling_s"] = _median_seconds(
            lambda: pipe.txt2img(**settings, sampler=sampler, tiling=True).images[0], repeat)[0]
    pipe = None  # its buffers go back to the pool, which is emptied for the next model
    device.empty_pool()
    return seconds, image, gpu


def _theirs(root: Path, torch: Any, cuda: bool, half: bool, scheduler: str,
            settings: dict[str, Any], latents: np.ndarray, repeat: int,
            circular: bool = False) -> tuple[float, np.ndarray]:
    """diffusers' median seconds and picture; `circular`: every UNet and VAE Conv2d pads
    circularly (what the WebUI's Tiling does to torch's convs)."""
    import diffusers

    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    dtype = torch.float16 if half else torch.float32
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(root, safety_checker=None,
                                                             torch_dtype=dtype)
    pipe.scheduler = getattr(diffusers, scheduler).from_config(pipe.scheduler.config)
    pipe = pipe.to("cuda" if cuda else "cpu")
    pipe.set_progress_bar_config(disable=True)
    for model in (pipe.unet, pipe.vae) if circular else ():
        for layer in model.modules():
            if isinstance(layer, torch.nn.Conv2d):
                layer.padding_mode = "circular"
    start = torch.from_numpy(latents).to(pipe.device, dtype)

    def generate() -> np.ndarray:
        out = pipe(settings["prompt"], negative_prompt=settings["negative_prompt"],
                   num_inference_steps=settings["steps"], guidance_scale=settings["cfg_scale"],
                   height=settings["height"], width=settings["width"], output_type="np",
                   latents=start, generator=torch.Generator("cpu").manual_seed(0)).images[0]
        if cuda:
            torch.cuda.synchronize()
        return np.round(out * 255).astype(np.uint8)

    # torch's best eager configuration: cudnn.benchmark off and on, the faster kept; a median
    # of at least 5 runs (issue 25) unless this is a smoke run
    runs = max(5, repeat) if repeat > 1 else repeat
    saved, timed = torch.backends.cudnn.benchmark, []
    try:
        for flag in (False, True) if cuda else (False,):
            torch.backends.cudnn.benchmark = flag
            timed.append(_median_seconds(generate, runs))
    finally:
        torch.backends.cudnn.benchmark = saved
    result = min(timed, key=lambda r: r[0])
    pipe = None
    if cuda:
        torch.cuda.empty_cache()
    return result


def run(quick: bool = False) -> dict[str, Any]:
    import torch

    device = gpucore.default_device()
    cuda = _harness.torch_cuda() is not None
    size, steps, repeat = (64, 2, 1) if quick else (512, 20, 3)
    settings = dict(prompt="a lighthouse on a cliff at dusk", negative_prompt="blurry",
                    steps=steps, cfg_scale=7.0, seed=42, width=size, height=size)
    latents = np.random.default_rng(42).standard_normal(
        (1, 4, size // 8, size // 8)).astype(np.float32)
    dtypes = _harness.dtypes(device)
    halves = [False] + ([True] if cuda else [])  # torch fp16 on the CPU is not a baseline
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_sd15_folder(root, quick)
        # BENCH_SAMPLERS="Euler a" (comma-separated) keeps only those rows, to save device time
        wanted = os.environ.get("BENCH_SAMPLERS")
        for ours_sampler, theirs_scheduler, our_dtypes in (
                ("Euler a", "EulerAncestralDiscreteScheduler", dtypes),
                ("DDIM", "DDIMScheduler", [np.dtype(np.float32)])):
            if wanted and ours_sampler not in wanted.split(","):
                continue
            base = {half: _theirs(root, torch, cuda, half, theirs_scheduler, settings, latents,
                                  repeat) for half in halves}
            tiling = os.environ.get("BENCH_TILING") == "1" and ours_sampler == "Euler a"
            tiled = {half: _theirs(root, torch, cuda, half, theirs_scheduler, settings, latents,
                                   repeat, circular=True)[0] for half in halves} if tiling else {}
            for dtype in our_dtypes:
                # DDIM: our seed's initial noise is numpy's standard_normal(seed), the
                # latents diffusers is given, so the images must agree
                ours_s, mine, gpu = _ours(root, device, dtype, ours_sampler, settings, repeat,
                                          tiling)
                row: dict[str, Any] = {
                    "sampler": ours_sampler, "dtype": np.dtype(dtype).name,
                    "size": f"{size}x{size}", "steps": steps, "ours_s": ours_s, **gpu,
                    "diffusers_fp32_s": base[False][0],
                    "diffusers_fp16_s": base[True][0] if True in base else None,
                    "vs_fp32": base[False][0] / ours_s,
                    "vs_fp16": base[True][0] / ours_s if True in base else None}
                if tiling:
                    row.update({f"diffusers_{'fp16' if half else 'fp32'}_tiling_s": s
                                for half, s in tiled.items()})
                    row.update({f"vs_{'fp16' if half else 'fp32'}_tiling": s / gpu["ours_tiling_s"]
                                for half, s in tiled.items()})
                if ours_sampler == "DDIM":
                    diff = np.abs(mine.astype(np.int16) - base[False][1].astype(np.int16))
                    row.update(mean_abs_diff=float(diff.mean()), max_abs_diff=int(diff.max()))
                rows.append(row)
                print(json.dumps(row), flush=True)  # a row at a time: a cut-off run keeps it
    return {
        "benchmark": "txt2img",
        "environment": _harness.environment(device),
        "notes": "one image, CFG 7, 20 steps; seconds are wall time per image including text "
                 "encoding and VAE decode (median of 3 after a warm-up; diffusers: of 5, the "
                 "faster of cudnn.benchmark off and on); ours_gpu_s and "
                 "dispatches: one more image under timestamp queries (the sum of its "
                 "dispatches' GPU time); vs_fp32 / vs_fp16 = diffusers' seconds / ours (>1: we "
                 "are faster); DDIM rows start both sides from the same latents and compare "
                 "the images (0..255 levels); Euler a rows differ in ancestral noise; "
                 "diffusers on torch " + ("CUDA, TF32 off" if cuda else "CPU"),
        "columns": COLUMNS,
        "rows": rows,
    }
