"""Full-size SD 1.5 txt2img (random weights, 512x512, 20 DDIM steps): ours vs diffusers.

Builds a diffusers pipeline folder with random full-size weights, loads it with our loader,
generates from the same initial latents on both sides and compares the images and the time
per image (wall, including text encoding and the VAE decode).
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

import gpucore

from . import _harness
from .unet import SD15_UNET, TINY_UNET

COLUMNS = ["size", "steps", "dtype", "ours_s", "diffusers_s", "vs_diffusers", "mean_abs_diff",
           "max_abs_diff"]


def _write_folder(root: Path, quick: bool) -> None:
    import diffusers
    import torch
    import transformers

    from diffusion.tokenizer import bundled_vocab

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
    vocab, merges = bundled_vocab()
    tok = root / "tokenizer"
    tok.mkdir()
    (tok / "vocab.json").write_text(json.dumps(vocab))
    (tok / "merges.txt").write_text("#version: 0.2\n" + "\n".join(" ".join(m) for m in merges))
    (tok / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 77}))
    (root / "model_index.json").write_text(json.dumps({
        "_class_name": "StableDiffusionPipeline", "scheduler": ["diffusers", "DDIMScheduler"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "safety_checker": [None, None], "feature_extractor": [None, None],
        "requires_safety_checker": False}))


def run(quick: bool = False) -> dict[str, Any]:
    import diffusers
    import torch

    from diffusion import load_pipeline

    device = gpucore.default_device()
    cuda = _harness.torch_cuda() is not None
    size, steps = (64, 2) if quick else (512, 20)
    prompt, negative, seed = "a lighthouse on a cliff at dusk", "blurry", 42
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _write_folder(root, quick)
        ours = load_pipeline(root, device=device)
        settings = dict(negative_prompt=negative, steps=steps, cfg_scale=7.5, seed=seed,
                        width=size, height=size, sampler="DDIM")
        ours.txt2img(prompt, **{**settings, "steps": 1})  # compile every pipeline once
        start = time.perf_counter()
        mine = ours.txt2img(prompt, **settings).images[0]
        ours_s = time.perf_counter() - start
        del ours
        device.empty_pool()

        latents = np.random.default_rng(seed).standard_normal(
            (1, 4, size // 8, size // 8)).astype(np.float32)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        reference = diffusers.StableDiffusionPipeline.from_pretrained(root, safety_checker=None)
        reference = reference.to("cuda" if cuda else "cpu")
        reference.set_progress_bar_config(disable=True)

        def theirs() -> np.ndarray:
            out = reference(prompt, negative_prompt=negative, num_inference_steps=steps,
                            guidance_scale=7.5, height=size, width=size, output_type="np",
                            latents=torch.from_numpy(latents).to(reference.device)).images[0]
            if cuda:
                torch.cuda.synchronize()
            return np.round(out * 255).astype(np.uint8)

        theirs()
        start = time.perf_counter()
        expected = theirs()
        diffusers_s = time.perf_counter() - start
    diff = np.abs(mine.astype(np.int16) - expected.astype(np.int16))
    rows.append({"size": f"{size}x{size}", "steps": steps, "dtype": "float32", "ours_s": ours_s,
                 "diffusers_s": diffusers_s, "vs_diffusers": diffusers_s / ours_s,
                 "mean_abs_diff": float(diff.mean()), "max_abs_diff": int(diff.max())})
    return {
        "benchmark": "txt2img",
        "environment": _harness.environment(device),
        "notes": "one image, CFG 7.5, DDIM, same initial latents on both sides; seconds are "
                 "wall time per image including text encoding and VAE decode (after a warm-up "
                 "run); diffs in 0..255 pixel levels; diffusers on torch "
                 + ("CUDA fp32, TF32 off" if cuda else "CPU"),
        "columns": COLUMNS,
        "rows": rows,
    }
