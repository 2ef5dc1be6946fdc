"""A tiny random Ideogram 4 built in-process (diffusers, transformers, tokenizers): its
conditional and unconditional transformers (the latter one block shallower, so that its own
config is read), a Qwen3-VL text encoder with the 36 decoder layers the pipeline taps
(QWEN3_VL_ACTIVATION_LAYERS), a Qwen tokenizer with Qwen3-VL's chat template, FLUX.2's VAE
and the whole Ideogram4Pipeline, written as a diffusers folder and kept in memory as the
reference."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flux2_tiny import tiny_flux2_vae
from qwen3vl_tiny import QWEN3VL_TEXT, tiny_qwen3vl_tokenizer
from sd_tiny import randomized

LLM_LAYERS = 36  # QWEN3_VL_ACTIVATION_LAYERS taps layers 0, 3, ..., 33 and 35
TAPS = 13
IDEOGRAM4_TEXT: dict[str, Any] = {**QWEN3VL_TEXT, "num_hidden_layers": LLM_LAYERS}
# head_dim 16: 8 frequencies, rows at 1 and 4, columns at 2 and 5, time at 0, 3, 6 and 7 (as
# the real (24, 20, 20) of 128 leaves 60..127 to time); 16 channels: FLUX.2's tiny VAE's 4
# latent channels in 2x2 patches
IDEOGRAM4_TINY: dict[str, Any] = dict(
    in_channels=16, num_layers=2, attention_head_dim=16, num_attention_heads=2,
    intermediate_size=48, adaln_dim=24, llm_features_dim=TAPS * QWEN3VL_TEXT["hidden_size"],
    rope_theta=5_000_000, mrope_section=(2, 2, 2), norm_eps=1e-5)
IDEOGRAM4_UNCOND_TINY: dict[str, Any] = {**IDEOGRAM4_TINY, "num_layers": 1}
# Qwen3-VL's chat template, the branches one user message of text parts and the generation
# prompt take
QWEN3VL_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message.role + '\\n' }}"
    "{%- for content in message.content %}{{- content.text }}{%- endfor %}"
    "{{- '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}")


def tiny_ideogram4_transformer(seed: int = 11, config: dict[str, Any] | None = None) -> Any:
    """diffusers' Ideogram4Transformer2DModel (`config` over IDEOGRAM4_TINY), random weights
    scaled so the prompt visibly matters."""
    import diffusers

    model = diffusers.Ideogram4Transformer2DModel(**{**IDEOGRAM4_TINY, **(config or {})})
    return randomized(model, seed, scale=0.4)


def tiny_qwen3vl_text_encoder(seed: int = 3) -> Any:
    """transformers' Qwen3VLModel (the pipeline reads its `language_model`) with
    IDEOGRAM4_TEXT's 36 layers and a
    one-block vision tower no prompt uses."""
    import transformers

    vision = dict(depth=1, hidden_size=16, intermediate_size=24, num_heads=2,
                  out_hidden_size=QWEN3VL_TEXT["hidden_size"], deepstack_visual_indexes=[0],
                  num_position_embeddings=16)
    config = transformers.Qwen3VLConfig(text_config=IDEOGRAM4_TEXT, vision_config=vision,
                                        image_token_id=QWEN3VL_TEXT["vocab_size"] - 1)
    return randomized(transformers.Qwen3VLModel(config), seed).eval()


def tiny_ideogram4_tokenizer(folder: Path) -> Any:
    """The tiny Qwen tokenizer (with the vision tokens) in `folder`, its tokenizer_config.json
    carrying QWEN3VL_TEMPLATE; returns transformers' tokenizer of it."""
    import transformers

    tiny_qwen3vl_tokenizer(folder)
    config_file = folder / "tokenizer_config.json"
    config = json.loads(config_file.read_text())
    config_file.write_text(json.dumps({**config, "chat_template": QWEN3VL_TEMPLATE}))
    return transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"), pad_token="<|endoftext|>",
        eos_token="<|im_end|>", chat_template=QWEN3VL_TEMPLATE, model_max_length=512)


def tiny_ideogram4_pipeline(root: Path) -> Any:
    """diffusers' Ideogram4Pipeline of tiny random parts (FLUX.2's tiny VAE, 4 pixels a
    token; the scheduler's default config), saved to `root / "ideogram4"`; returns it."""
    import diffusers

    pipe = diffusers.Ideogram4Pipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(), vae=tiny_flux2_vae(),
        text_encoder=tiny_qwen3vl_text_encoder(),
        tokenizer=tiny_ideogram4_tokenizer(root / "ideogram4-tokenizer"),
        transformer=tiny_ideogram4_transformer(),
        unconditional_transformer=tiny_ideogram4_transformer(12, IDEOGRAM4_UNCOND_TINY))
    pipe.save_pretrained(root / "ideogram4")
    return pipe
