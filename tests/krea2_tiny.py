"""A tiny random Krea 2 transformer built in-process (diffusers), kept in memory as the
reference and written as a diffusers `transformer/` folder (config.json + safetensors by
diffusers' own save_pretrained) for pipeline tests to load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sd_tiny import randomized

# 16 latent channels: QWENIMAGE_VAE_TINY's 4 in 2 x 2 patches; the text as QWEN3VL_TEXT's
# 40-wide hidden states tapped at 3 layers. Grouped-query attention in both parts (4 query
# heads for 2 key/value heads), head dim 16 = the rotary axes 4 + 6 + 6.
KREA2_TINY: dict[str, Any] = dict(
    in_channels=16, num_layers=2, attention_head_dim=16, num_attention_heads=4,
    num_key_value_heads=2, intermediate_size=96, timestep_embed_dim=32, text_hidden_dim=40,
    num_text_layers=3, text_num_attention_heads=4, text_num_key_value_heads=2,
    text_intermediate_size=48, num_layerwise_text_blocks=2, num_refiner_text_blocks=2,
    axes_dims_rope=(4, 6, 6))


def tiny_krea2_transformer(seed: int = 13, **overrides: Any) -> Any:
    """diffusers' Krea2Transformer2DModel of KREA2_TINY, random weights scaled so the text
    visibly matters; the zero-centred RMS norms' weights near 0 (scales near 1), as the
    checkpoint stores them."""
    import diffusers
    import torch

    model = randomized(diffusers.Krea2Transformer2DModel(**{**KREA2_TINY, **overrides}), seed,
                       scale=0.3)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.sub_(1.0)
    return model


def write_krea2_transformer(folder: Path, seed: int = 13, **overrides: Any) -> Any:
    """tiny_krea2_transformer's model saved by diffusers into `folder` (a pipeline folder's
    `transformer/`: config.json and diffusion_pytorch_model.safetensors); returns the model."""
    model = tiny_krea2_transformer(seed, **overrides)
    model.save_pretrained(folder)
    return model


# Krea 2's scheduler_config.json as Krea2Pipeline's docstring gives it (the dynamic shift from
# 0.5 at 256 tokens to 1.15 at 6400)
KREA2_SCHEDULER: dict[str, Any] = dict(
    base_image_seq_len=256, base_shift=0.5, max_image_seq_len=6400, max_shift=1.15,
    num_train_timesteps=1000, shift=1.0, use_dynamic_shifting=True,
    time_shift_type="exponential")
# three taps of the four-layer tiny text encoder, out of order, the embeddings among them
KREA2_TAPS = (2, 0, 4)


def tiny_krea2_pipeline(root: Path, *, distilled: bool = False) -> Any:
    """diffusers' Krea2Pipeline of tiny random parts (this transformer, krea2_text_tiny's
    Qwen3VLModel and tokenizer, Qwen-Image's tiny VAE) saved to `root / "krea-2"`; returns
    the pipeline. `distilled`: the few-step checkpoint's fixed shift."""
    import diffusers
    from krea2_text_tiny import tiny_krea2_text_encoder, tiny_krea2_tokenizer
    from qwenimage_tiny import tiny_qwenimage_vae
    from zimage_tiny import transformers_tokenizer

    tokenizer = transformers_tokenizer(tiny_krea2_tokenizer(root / "krea2-tokenizer"))
    pipe = diffusers.Krea2Pipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**KREA2_SCHEDULER),
        vae=tiny_qwenimage_vae(), text_encoder=tiny_krea2_text_encoder(), tokenizer=tokenizer,
        transformer=tiny_krea2_transformer(), text_encoder_select_layers=KREA2_TAPS,
        is_distilled=distilled)
    pipe.save_pretrained(root / "krea-2")
    return pipe


# diffusers' names -> Krea's original ones: the inverse of diffusers'
# convert_krea2_transformer_checkpoint_to_diffusers, whose own maps the tests check it against
_ORIGINAL_PREFIXES = (
    ("img_in.", "first."), ("time_embed.linear_1.", "tmlp.0."),
    ("time_embed.linear_2.", "tmlp.2."), ("time_mod_proj.", "tproj.1."),
    ("txt_in.norm.weight", "txtmlp.0.scale"), ("txt_in.linear_1.", "txtmlp.1."),
    ("txt_in.linear_2.", "txtmlp.3."), ("text_fusion.", "txtfusion."),
    ("transformer_blocks.", "blocks."), ("final_layer.linear.", "last.linear."),
    ("final_layer.norm.weight", "last.norm.scale"),
    ("final_layer.scale_shift_table", "last.modulation.lin"))
_ORIGINAL_IN_BLOCKS = (
    (".attn.to_q.", ".attn.wq."), (".attn.to_k.", ".attn.wk."), (".attn.to_v.", ".attn.wv."),
    (".attn.to_out.0.", ".attn.wo."), (".attn.to_gate.", ".attn.gate."),
    (".attn.norm_q.weight", ".attn.qknorm.qnorm.scale"),
    (".attn.norm_k.weight", ".attn.qknorm.knorm.scale"), (".ff.", ".mlp."),
    (".norm1.weight", ".prenorm.scale"), (".norm2.weight", ".postnorm.scale"),
    (".scale_shift_table", ".mod.lin"))


def original_layout(model: Any, prefix: str = "") -> dict[str, Any]:
    """`model`'s (diffusers' Krea2Transformer2DModel) tensors under Krea's original names, as
    its single files hold them (each block's six modulation vectors flattened), behind
    `prefix`."""
    out = {}
    for key, value in model.state_dict().items():
        name = key
        for new, old in _ORIGINAL_PREFIXES:
            if name.startswith(new):
                name = old + name[len(new):]
                break
        for new, old in _ORIGINAL_IN_BLOCKS:
            name = name.replace(new, old)
        if name.endswith(".mod.lin"):
            value = value.reshape(-1)
        out[prefix + name] = value.contiguous()
    return out
