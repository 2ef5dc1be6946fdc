"""Tiny random Bria FIBO components built in-process (diffusers, transformers, tokenizers): a
BriaFiboTransformer2DModel, a SmolLM3 text model (a NoPE layer every fourth, as SmolLM3's), Wan
2.2's 16x VAE (wan_tiny's) and a whole BriaFiboPipeline folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flow_tiny import FLUX_DEV_SCHEDULER
from sd_tiny import randomized
from wan_tiny import WAN22_VAE_TINY, tiny_wan22_vae
from wan_tiny import tiny_wan_vae as tiny_wan_vae  # Wan 2.1's 8x VAE: the folder refusal's
from zimage_tiny import tiny_qwen_tokenizer, transformers_tokenizer

# SmolLM3's vocabulary size: an empty prompt is token 128000 (the pipeline's "<|begin_of_text|>")
# whatever the tokenizer; 4 layers, the fourth without rotary embeddings (no_rope_layer_interval 4)
SMOLLM3_TINY: dict[str, Any] = dict(
    vocab_size=128256, hidden_size=16, intermediate_size=24, num_hidden_layers=4,
    num_attention_heads=2, num_key_value_heads=1, rms_norm_eps=1e-6,
    max_position_embeddings=1024, tie_word_embeddings=False,
    rope_parameters={"rope_type": "default", "rope_theta": 5000.0})
# 2 + 4 blocks read 6 text layers, past SmolLM3_TINY's 5 hidden states: the last one repeats,
# as the real model's 46 blocks over SmolLM3-3B's 37 states
FIBO_TINY: dict[str, Any] = dict(
    patch_size=1, in_channels=WAN22_VAE_TINY["z_dim"], num_layers=2, num_single_layers=4,
    attention_head_dim=8, num_attention_heads=2,
    joint_attention_dim=2 * SMOLLM3_TINY["hidden_size"], axes_dims_rope=[2, 2, 4],
    text_encoder_dim=SMOLLM3_TINY["hidden_size"])


def tiny_smollm3(seed: int = 4) -> Any:
    """transformers' SmolLM3ForCausalLM of SMOLLM3_TINY, random (the pipeline's class)."""
    import transformers

    return randomized(transformers.SmolLM3ForCausalLM(
        transformers.SmolLM3Config(**SMOLLM3_TINY)), seed)


def tiny_fibo_transformer(seed: int = 7, **overrides: Any) -> Any:
    """diffusers' BriaFiboTransformer2DModel of FIBO_TINY, random weights scaled so the text
    visibly matters (the tests assert it)."""
    import diffusers

    return randomized(diffusers.BriaFiboTransformer2DModel(**{**FIBO_TINY, **overrides}), seed,
                      scale=0.4)


def tiny_fibo_pipeline(root: Path) -> Any:
    """diffusers' BriaFiboPipeline of tiny random parts saved to `root / "fibo"`; returns
    the pipeline."""
    import diffusers

    tokenizer = transformers_tokenizer(tiny_qwen_tokenizer(root / "fibo-tokenizer"))
    pipe = diffusers.BriaFiboPipeline(
        transformer=tiny_fibo_transformer(),
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**FLUX_DEV_SCHEDULER),
        vae=tiny_wan22_vae(), text_encoder=tiny_smollm3(), tokenizer=tokenizer)
    pipe.save_pretrained(root / "fibo")
    return pipe


def tiny_fibo_edit_pipeline(root: Path) -> Any:
    """diffusers' BriaFiboEditPipeline of the same tiny random parts saved to
    `root / "fibo-edit"`; returns the pipeline."""
    import diffusers

    tokenizer = transformers_tokenizer(tiny_qwen_tokenizer(root / "fibo-edit-tokenizer"))
    pipe = diffusers.BriaFiboEditPipeline(
        transformer=tiny_fibo_transformer(),
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**FLUX_DEV_SCHEDULER),
        vae=tiny_wan22_vae(), text_encoder=tiny_smollm3(), tokenizer=tokenizer)
    pipe.save_pretrained(root / "fibo-edit")
    return pipe
