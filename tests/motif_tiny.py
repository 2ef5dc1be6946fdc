"""Tiny random Motif-Video parts built in-process (diffusers, transformers, tokenizers):
diffusers' MotifVideoTransformer3DModel shrunk (dual- and single-stream blocks with the shared
text cross-attention, DDT decoder blocks, the SigLIP image projection), transformers'
T5Gemma2Encoder (Gemma 3 layers read both ways, local and global, a one-layer SigLIP tower)
and whole MotifVideoPipeline / MotifVideoImage2VideoPipeline folders with Wan's tiny VAE."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from ltx2_text_tiny import tiny_gemma_tokenizer
from sd_tiny import randomized
from wan_tiny import tiny_wan_vae

# Motif-Video 2B's layout shrunk: 12 dual + 16 single (8 of them DDT decoder blocks) -> 2 + 3
# (1 decoder); 2 heads of 12 (rope 4 + 4 + 4), text cross-attention in both kinds of blocks;
# 4 latent channels (the tiny Wan VAE's) + 4 condition + 1 mask in, 4 out
MOTIF_TINY: dict[str, Any] = dict(
    in_channels=9, out_channels=4, num_attention_heads=2, attention_head_dim=12, num_layers=2,
    num_single_layers=3, num_decoder_layers=1, mlp_ratio=2.0, patch_size=2, patch_size_t=1,
    text_embed_dim=32, image_embed_dim=16, rope_theta=256.0, rope_axes_dim=(4, 4, 4),
    enable_text_cross_attention_dual=True, enable_text_cross_attention_single=True)

# T5Gemma 2's text encoder shrunk: local / global / local layers, rotary bases small enough that
# positions visibly turn, a window of 9 (a prompt reaches (9 + 1) // 2 = 5 tokens each way)
T5GEMMA2_TEXT_TINY: dict[str, Any] = dict(
    vocab_size=160, hidden_size=32, intermediate_size=48, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=2, head_dim=8, query_pre_attn_scalar=16,
    sliding_window=64, layer_types=["sliding_attention", "full_attention", "sliding_attention"],
    rope_parameters={"sliding_attention": {"rope_type": "default", "rope_theta": 100.0},
                     "full_attention": {"rope_type": "default", "rope_theta": 1000.0}},
    pad_token_id=0, eos_token_id=1, bos_token_id=2, dropout_rate=0.0)
SIGLIP_TINY: dict[str, Any] = dict(
    hidden_size=16, intermediate_size=24, num_hidden_layers=2, num_attention_heads=2,
    image_size=28, patch_size=14)

# FLUX's shift over the sequence length, as Motif's pipeline computes mu
MOTIF_SCHEDULER: dict[str, Any] = dict(
    num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True, base_image_seq_len=256,
    max_image_seq_len=4096, base_shift=0.5, max_shift=1.15)


@functools.cache
def tiny_motif_transformer(seed: int = 31) -> Any:
    """diffusers' MotifVideoTransformer3DModel of MOTIF_TINY, random weights scaled so the
    prompt visibly matters (the tests assert it): the cross-attention's writes, ungated,
    quadrupled (another prompt then moves the flow 4.4% of its mean size, 2.6% without)."""
    import diffusers
    import torch

    model = randomized(diffusers.MotifVideoTransformer3DModel(**MOTIF_TINY), seed, scale=0.25)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "cross_attn.to_out" in name:
                p.mul_(4.0)
    return model


@functools.cache
def tiny_t5gemma2_encoder(seed: int = 32) -> Any:
    """transformers' T5Gemma2Encoder of T5GEMMA2_TEXT_TINY and SIGLIP_TINY, random weights;
    the Gemma norms' weights near 0 (their scale is 1 + weight)."""
    import torch
    import transformers

    config = transformers.T5Gemma2EncoderConfig(
        text_config=T5GEMMA2_TEXT_TINY, vision_config=SIGLIP_TINY, mm_tokens_per_image=4)
    model = randomized(transformers.T5Gemma2Encoder(config), seed, scale=0.3)
    with torch.no_grad():
        for name, p in model.text_model.named_parameters():
            if "norm" in name:
                p.sub_(1.0)
    return model.eval()


def tiny_motif_pipeline(root: Path, *, i2v: bool = False, guidance: float = 4.0) -> Any:
    """diffusers' MotifVideoPipeline (or MotifVideoImage2VideoPipeline: `i2v`) of tiny random
    parts saved to `root / "motif"` (`"motif-i2v"`); returns it."""
    import diffusers
    import transformers
    from diffusers.guiders import ClassifierFreeGuidance

    tokens = tiny_gemma_tokenizer(root / "motif-tokenizer")
    tokenizer = transformers.GemmaTokenizerFast(
        tokenizer_file=str(tokens / "tokenizer.json"), pad_token="<pad>", bos_token="<bos>",
        eos_token="<eos>", padding_side="left", model_max_length=64)
    parts = dict(
        transformer=tiny_motif_transformer(), vae=tiny_wan_vae(),
        text_encoder=tiny_t5gemma2_encoder(), tokenizer=tokenizer,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**MOTIF_SCHEDULER),
        guider=ClassifierFreeGuidance(guidance_scale=guidance))
    if i2v:
        pipe = diffusers.MotifVideoImage2VideoPipeline(
            # the Pillow backend by name: with torchvision installed SiglipImageProcessor
            # resizes through it, a few levels away from what the pipeline reproduces
            **parts, feature_extractor=transformers.SiglipImageProcessorPil(
                size={"height": 28, "width": 28}))
    else:
        pipe = diffusers.MotifVideoPipeline(**parts)
    pipe.save_pretrained(root / ("motif-i2v" if i2v else "motif"))
    return pipe
