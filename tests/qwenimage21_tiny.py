"""A tiny random Qwen-Image 2.1 built in-process (diffusers, transformers, tokenizers): its
transformer, its 16x VAE, a Qwen3-VL text encoder with its vision tower (and a picture
processor with small pixel limits) and the whole pipeline, written as a
QwenImage21Pipeline folder (model_index.json, one folder a component, the tokenizer in
processor/) and kept in memory as diffusers' pipeline, the reference."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from qwen3vl_tiny import (
    QWEN3VL_PIXELS,
    QWEN3VL_VISION,
    tiny_qwen3vl,
    tiny_qwen3vl_processor,
    tiny_qwen3vl_tokenizer,
)
from sd_tiny import randomized

CHANNELS = 8
QWENIMAGE21_TINY: dict[str, Any] = dict(
    patch_size=1, in_channels=CHANNELS, out_channels=CHANNELS, num_layers=2,
    attention_head_dim=16, num_attention_heads=2, context_in_dim=40, mlp_ratio=3,
    axes_dims_rope=(4, 6, 6))
# four halvings: 16 pixels a latent, as the pipeline assumes
QWENIMAGE21_VAE_TINY: dict[str, Any] = dict(
    base_dim=8, decoder_base_dim=12, z_dim=CHANNELS, dim_mult=[1, 1, 2, 2, 2],
    num_res_blocks=1, temperal_downsample=[False, True, True, True],
    latents_mean=[0.3, -0.2, 0.1, 0.5, 0.0, 0.2, -0.4, 0.6],
    latents_std=[1.5, 0.8, 2.0, 1.1, 1.3, 0.9, 1.2, 1.7])
QWENIMAGE21_SCHEDULER: dict[str, Any] = dict(
    base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15,
    num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True)
# room for the pipeline's condition pictures of about 1024 x 1024 pixels, which the processor
# must not shrink (its pads are the picture's 2 x 2 latents)
PIXELS = {**QWEN3VL_PIXELS, "size": {"shortest_edge": 64 * 64, "longest_edge": 1280 * 1280}}
_INDEX = {"_class_name": "QwenImage21Pipeline", "_diffusers_version": "0.42.1",
          "transformer": ["diffusers", "QwenImage21Transformer2DModel"],
          "vae": ["diffusers", "AutoencoderKLQwenImage21"],
          "text_encoder": ["transformers", "Qwen3VLForConditionalGeneration"],
          "processor": ["transformers", "Qwen3VLProcessor"],
          "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}


def tiny_qwenimage21_pipeline(root: Path, sample_sigmas: list[float] | None = None) -> Any:
    """diffusers' QwenImage21Pipeline of tiny random parts, written to `root /
    "qwen-image-2.1"` (model_index.json by hand: the tiny processor has no image processor
    to save); returns the pipeline. The transformer's weights are scaled so the prompt
    visibly matters."""
    import diffusers

    tokenizer = tiny_qwen3vl_tokenizer(root / "qwen3vl-tokenizer")
    processor = tiny_qwen3vl_processor(tokenizer, PIXELS)
    pipe = diffusers.QwenImage21Pipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**QWENIMAGE21_SCHEDULER),
        vae=randomized(diffusers.AutoencoderKLQwenImage21(**QWENIMAGE21_VAE_TINY), 5),
        text_encoder=tiny_qwen3vl(processor.tokenizer.convert_tokens_to_ids("<|image_pad|>"),
                                  vision=QWEN3VL_VISION),
        processor=processor, sample_sigmas=sample_sigmas,
        transformer=randomized(diffusers.QwenImage21Transformer2DModel(**QWENIMAGE21_TINY),
                               11, scale=0.4))
    folder = root / "qwen-image-2.1"
    for name in ("transformer", "vae", "text_encoder", "scheduler"):
        getattr(pipe, name).save_pretrained(folder / name)
    shutil.copytree(tokenizer, folder / "processor")
    (folder / "processor" / "preprocessor_config.json").write_text(json.dumps(PIXELS))
    index = {**_INDEX, **({} if sample_sigmas is None else {"sample_sigmas": sample_sigmas})}
    (folder / "model_index.json").write_text(json.dumps(index))
    return pipe
