"""Tiny random Sana transformers built in-process: diffusers' SanaTransformer2DModel as Sana
1.0 (no q/k norms, no position embeddings), Sana 1.5 / Sana Sprint (q/k RMS norms across the
heads; Sprint's guidance embedding) and Sana 4K (sin-cos position embeddings), kept in memory
as references and written as diffusers folders for loader and pipeline tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sd_tiny import randomized

# Sana 1.0's layout shrunk: 8 latent channels (DC-AE's 32) in 1 x 1 patches, two blocks of 2
# linear-attention heads of 8 and 2 cross-attention heads of 12 (Sana's cross heads are wider
# than its self-attention heads), captions of 24 features (Gemma 2's 2304), GLUMBConv's
# inner width int(2.5 * 16) = 40
SANA_TINY: dict[str, Any] = dict(
    in_channels=8, out_channels=8, num_attention_heads=2, attention_head_dim=8, num_layers=2,
    num_cross_attention_heads=2, cross_attention_head_dim=12, cross_attention_dim=16,
    caption_channels=24, mlp_ratio=2.5, attention_bias=False, sample_size=8, patch_size=1,
    norm_elementwise_affine=False, norm_eps=1e-6, interpolation_scale=None)

# Sana Sprint: Sana 1.5's q/k RMS norms across the heads and the guidance embedding
SANA_SPRINT_TINY: dict[str, Any] = dict(SANA_TINY, qk_norm="rms_norm_across_heads",
                                        guidance_embeds=True, guidance_embeds_scale=0.1)

# Sana 4K's sin-cos position embeddings (interpolation_scale set), here with 2 x 2 patches
SANA_PE_TINY: dict[str, Any] = dict(SANA_TINY, patch_size=2, interpolation_scale=2.0,
                                    sample_size=12, attention_bias=True)


def tiny_sana_transformer(seed: int = 23, **overrides: Any) -> Any:
    """diffusers' SanaTransformer2DModel of SANA_TINY (overrides: SANA_SPRINT_TINY's or
    SANA_PE_TINY's fields), random weights scaled so that the caption visibly matters (the
    tests assert it)."""
    import diffusers
    import torch

    model = randomized(diffusers.SanaTransformer2DModel(**{**SANA_TINY, **overrides}), seed,
                       scale=0.4)
    # the cross-attention writes to the stream ungated: tripled, a caption changes a Sprint
    # output by ~10% (Sana 1.0's by ~30%) where uniform weights leave it under 3%
    with torch.no_grad():
        for block in model.transformer_blocks:
            block.attn2.to_out[0].weight.mul_(3.0)
    return model


def write_sana_transformer(folder: Path, seed: int = 23, **overrides: Any) -> Any:
    """tiny_sana_transformer's model saved by diffusers into `folder` (a pipeline folder's
    `transformer/`); returns the model."""
    model = tiny_sana_transformer(seed, **overrides)
    model.save_pretrained(folder)
    return model


def original_layout(transformer: Any, prefix: str = "") -> dict[str, Any]:
    """A diffusers SanaTransformer2DModel's tensors in the original (NVIDIA Sana) layout, as
    its .pth checkpoints' state_dict holds them, under `prefix`: diffusers' conversion undone
    (fused attn.qkv and cross_attn.kv_linear; the unused pos_embed and y_embedder.y_embedding
    it drops, here random)."""
    import torch

    state = {k: v.detach().clone().contiguous() for k, v in transformer.state_dict().items()}
    guidance = transformer.config.guidance_embeds
    timestep = ("time_embed.timestep_embedder." if guidance
                else "time_embed.emb.timestep_embedder.")
    heads = (("patch_embed.proj.", "x_embedder.proj."),
             (timestep + "linear_1.", "t_embedder.mlp.0."),
             (timestep + "linear_2.", "t_embedder.mlp.2."),
             ("time_embed.guidance_embedder.linear_1.", "cfg_embedder.mlp.0."),
             ("time_embed.guidance_embedder.linear_2.", "cfg_embedder.mlp.2."),
             ("time_embed.linear.", "t_block.1."),
             ("caption_projection.linear_1.", "y_embedder.y_proj.fc1."),
             ("caption_projection.linear_2.", "y_embedder.y_proj.fc2."),
             ("caption_norm.", "attention_y_norm."), ("proj_out.", "final_layer.linear."),
             ("scale_shift_table", "final_layer.scale_shift_table"),
             ("transformer_blocks.", "blocks."))
    parts = ((".attn1.to_out.0.", ".attn.proj."), (".attn1.norm_q.", ".attn.q_norm."),
             (".attn1.norm_k.", ".attn.k_norm."), (".attn2.to_q.", ".cross_attn.q_linear."),
             (".attn2.to_out.0.", ".cross_attn.proj."), (".attn2.norm_q.", ".cross_attn.q_norm."),
             (".attn2.norm_k.", ".cross_attn.k_norm."),
             (".ff.conv_inverted.", ".mlp.inverted_conv.conv."),
             (".ff.conv_depth.", ".mlp.depth_conv.conv."),
             (".ff.conv_point.", ".mlp.point_conv.conv."))
    gen = torch.Generator().manual_seed(5)
    dim = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    out = {prefix + "pos_embed": torch.randn(1, 4, dim, generator=gen),
           prefix + "y_embedder.y_embedding": torch.randn(3, transformer.config.caption_channels,
                                                          generator=gen)}
    for key, value in state.items():
        if any(f".{part}." in key for part in ("attn1.to_k", "attn1.to_v", "attn2.to_v")):
            continue
        if ".attn1.to_q." in key or ".attn2.to_k." in key:
            names = ("to_q", "to_k", "to_v") if ".attn1." in key else ("to_k", "to_v")
            value = torch.cat([state[key.replace(names[0], n)] for n in names])
            fused = ".attn.qkv." if ".attn1." in key else ".cross_attn.kv_linear."
            key = key.replace(".attn1.to_q.", fused).replace(".attn2.to_k.", fused)
        for new, old in heads:
            key = old + key[len(new):] if key.startswith(new) else key
        for new, old in parts:
            key = key.replace(new, old)
        out[prefix + key] = value
    return out
