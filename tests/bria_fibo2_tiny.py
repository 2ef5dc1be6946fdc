"""Tiny random Bria FIBO 2 components built in-process (diffusers, transformers, tokenizers): a
BriaFibo2Transformer2DModel, Qwen3-VL 36 layers deep (the pipeline reads its layers 5 .. 35),
FLUX.2's VAE (flux2_tiny's) and a whole BriaFibo2Pipeline folder (the tokenizer in
processor/), kept in memory as diffusers' pipeline, the reference."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from flux2_tiny import FLUX2_VAE_TINY, tiny_flux2_vae
from qwen3vl_tiny import (
    QWEN3VL_PIXELS,
    QWEN3VL_TEXT,
    QWEN3VL_VISION,
    tiny_qwen3vl_processor,
    tiny_qwen3vl_tokenizer,
)
from sd_tiny import randomized

# Qwen3-VL's bundles are three layers of its 40-wide states side by side (120); five injection
# blocks of six, as the real 44 blocks have five; gist counts 4 .. 12 over prompts of 8 .. 40
# tokens, so the tiny prompts get different counts; head dim 16 = the rotary axes 4 + 6 + 6
FIBO2_TINY: dict[str, Any] = dict(
    in_channels=FLUX2_VAE_TINY["latent_channels"], patch_size=2, dim=64, n_layers=6,
    n_refiner_layers=1, n_heads=4, cap_feat_dim=3 * QWEN3VL_TEXT["hidden_size"],
    injection_layer_ids=(0, 1, 3, 4, 5), perceiver_num_layers=2, min_num_gist_tokens=4,
    max_num_gist_tokens=12, gist_step=4, gist_min_text_len=8, gist_max_text_len=40,
    axes_dims=(4, 6, 6), axes_lens=(32, 32, 32))
FIBO2_SCHEDULER: dict[str, Any] = dict(
    base_image_seq_len=256, base_shift=0.5, max_image_seq_len=4096, max_shift=1.15,
    num_train_timesteps=1000, shift=3.0, use_dynamic_shifting=True)
_INDEX = {"_class_name": "BriaFibo2Pipeline", "_diffusers_version": "0.42.1",
          "transformer": ["diffusers", "BriaFibo2Transformer2DModel"],
          "vae": ["diffusers", "AutoencoderKLFlux2"],
          "text_encoder": ["transformers", "Qwen3VLForConditionalGeneration"],
          "processor": ["transformers", "Qwen3VLProcessor"],
          "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"]}


def tiny_fibo2_transformer(seed: int = 17, **overrides: Any) -> Any:
    """diffusers' BriaFibo2Transformer2DModel of FIBO2_TINY, random weights scaled so the text
    visibly matters (the tests assert it): the injection blocks' gates opened to about
    tanh(1) (their zero start would shut the text out of them)."""
    import diffusers
    import torch

    model = randomized(diffusers.BriaFibo2Transformer2DModel(**{**FIBO2_TINY, **overrides}),
                       seed, scale=0.4)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("cross_attn_gate"):
                p.add_(1.0)
    return model


def tiny_fibo2_text_encoder(image_token_id: int, seed: int = 3) -> Any:
    """transformers' Qwen3VLForConditionalGeneration: QWEN3VL_TEXT's language model 36 layers
    deep and QWEN3VL_VISION's tower (three blocks, two deepstack features), which reads the
    pictures an edit is given."""
    import transformers

    config = transformers.Qwen3VLConfig(text_config={**QWEN3VL_TEXT, "num_hidden_layers": 36},
                                        vision_config=QWEN3VL_VISION,
                                        image_token_id=image_token_id)
    return randomized(transformers.Qwen3VLForConditionalGeneration(config), seed).eval()


def tiny_fibo2_pipeline(root: Path) -> Any:
    """diffusers' BriaFibo2Pipeline of tiny random parts, written to `root / "fibo2"`
    (model_index.json and the processor by hand: the tiny processor has no video processor
    to save); returns the pipeline."""
    import diffusers

    tokenizer = tiny_qwen3vl_tokenizer(root / "fibo2-tokenizer")
    processor = tiny_qwen3vl_processor(tokenizer, QWEN3VL_PIXELS)
    pipe = diffusers.BriaFibo2Pipeline(
        transformer=tiny_fibo2_transformer(),
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**FIBO2_SCHEDULER),
        vae=tiny_flux2_vae(),
        text_encoder=tiny_fibo2_text_encoder(
            processor.tokenizer.convert_tokens_to_ids("<|image_pad|>")),
        processor=processor)
    folder = root / "fibo2"
    for name in ("transformer", "vae", "text_encoder", "scheduler"):
        getattr(pipe, name).save_pretrained(folder / name)
    shutil.copytree(tokenizer, folder / "processor")
    (folder / "processor" / "preprocessor_config.json").write_text(json.dumps(QWEN3VL_PIXELS))
    (folder / "model_index.json").write_text(json.dumps(_INDEX))
    return pipe
