"""Tiny random AuraFlow components built in-process (diffusers, transformers, tokenizers): an
AuraFlow transformer, a UMT5 text encoder (every block its own position bias), an SDXL-style
4-channel VAE and a whole AuraFlowPipeline folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flow_tiny import T5_TINY
from sd_tiny import VAE_TINY, randomized

# width 16 (2 heads of 8); UMT5's states 32 wide; an 8 x 8 position table (64 rows)
AURAFLOW_TINY: dict[str, Any] = dict(
    sample_size=16, patch_size=2, in_channels=4, num_mmdit_layers=2, num_single_dit_layers=2,
    attention_head_dim=8, num_attention_heads=2, joint_attention_dim=T5_TINY["d_model"],
    caption_projection_dim=16, out_channels=4, pos_embed_max_size=64)
# AuraFlow v0.3's scheduler/scheduler_config.json (a constant shift)
AURAFLOW_SCHEDULER: dict[str, Any] = dict(num_train_timesteps=1000, shift=1.73)


def tiny_auraflow_transformer(seed: int = 7) -> Any:
    """diffusers' AuraFlowTransformer2DModel of AURAFLOW_TINY, random weights scaled so the
    text visibly matters (the tests assert it): the values and the text's projection 3x the
    rest (at scale 0.2 alone a new prompt moves the flow 8%, with them 19%; a larger scale
    overall grows the flow through the blocks' modulations past float16); the position table
    and the register tokens drawn at the tokens' own size, so that they matter too."""
    import diffusers
    import torch

    model = randomized(diffusers.AuraFlowTransformer2DModel(**AURAFLOW_TINY), seed, scale=0.2)
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in (model.pos_embed.pos_embed, model.register_tokens):
            p.copy_(torch.randn(p.shape, generator=gen))
        for name, p in model.named_parameters():
            if any(f"{part}." in name for part in ("to_v", "add_v_proj", "context_embedder")):
                p.mul_(3)
    return model


def tiny_umt5_encoder(seed: int = 6) -> Any:
    """transformers' UMT5EncoderModel of T5_TINY's sizes over T5's real 32,128 ids (AuraFlow's
    text encoder is a UMT5: every block its own relative position bias table), random."""
    import transformers

    config = transformers.UMT5Config(**{**T5_TINY, "vocab_size": 32128})
    return randomized(transformers.UMT5EncoderModel(config), seed)


def tiny_sdxl_vae(seed: int = 2) -> Any:
    """diffusers' AutoencoderKL with SDXL's scaling factor, 4 latent channels, 2x
    downsampling."""
    import diffusers

    return randomized(diffusers.AutoencoderKL(**VAE_TINY, scaling_factor=0.13025), seed)


def tiny_auraflow_pipeline(root: Path) -> Any:
    """diffusers' AuraFlowPipeline of tiny random parts (T5 v1.1's real tokenizer, bundled
    with this package: the same ids every run, where a trained tiny one is not) saved to
    `root / "auraflow"`; returns the pipeline."""
    import diffusers
    import transformers

    from diffusion.text.t5_tokenizer import bundled_t5_tokenizer

    (root / "t5-tokenizer").mkdir(parents=True, exist_ok=True)
    bundled_t5_tokenizer().save(str(root / "t5-tokenizer" / "tokenizer.json"))
    tokenizer = transformers.T5TokenizerFast(
        tokenizer_file=str(root / "t5-tokenizer" / "tokenizer.json"))
    pipe = diffusers.AuraFlowPipeline(
        tokenizer=tokenizer, text_encoder=tiny_umt5_encoder(), vae=tiny_sdxl_vae(),
        transformer=tiny_auraflow_transformer(),
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**AURAFLOW_SCHEDULER))
    pipe.save_pretrained(root / "auraflow")
    return pipe


def fal_names(model: Any) -> dict[str, Any]:
    """A diffusers AuraFlow transformer's state dict under fal's original names (what
    ComfyUI's aura_flow_0.3.safetensors holds): the inverse of diffusers'
    `convert_auraflow_transformer_checkpoint_to_diffusers`, the final modulation's halves
    swapped back."""
    import torch

    ff = {"linear_1": "c_fc1", "linear_2": "c_fc2", "out_projection": "c_proj"}
    attn = {"to_q": "w2q", "to_k": "w2k", "to_v": "w2v", "to_out.0": "w2o",
            "add_q_proj": "w1q", "add_k_proj": "w1k", "add_v_proj": "w1v",
            "to_add_out": "w1o"}
    single = {"to_q": "w1q", "to_k": "w1k", "to_v": "w1v", "to_out.0": "w1o"}
    top = {"register_tokens": "register_tokens", "context_embedder.weight":
           "cond_seq_linear.weight", "proj_out.weight": "final_linear.weight",
           "pos_embed.pos_embed": "positional_encoding",
           "pos_embed.proj.weight": "init_x_linear.weight",
           "pos_embed.proj.bias": "init_x_linear.bias",
           **{f"time_step_proj.linear_{i}.{p}": f"t_embedder.mlp.{2 * i - 2}.{p}"
              for i in (1, 2) for p in ("weight", "bias")}}
    out = {}
    for key, value in model.state_dict().items():
        value = value.detach().clone().contiguous()
        if key in top:
            out[top[key]] = value
        elif key == "norm_out.linear.weight":
            out["modF.1.weight"] = torch.cat(value.chunk(2)[::-1])
        else:
            kind, index, part, *rest = key.split(".")
            inner = ".".join(rest[:-1])  # the layer's path inside `part`, without ".weight"
            if part in ("ff", "ff_context"):
                stream = "mlp" if kind.startswith("single") else {
                    "ff": "mlpX", "ff_context": "mlpC"}[part]
                name = f"{stream}.{ff[inner]}"
            elif part == "attn":
                name = f"attn.{(single if kind.startswith('single') else attn)[inner]}"
            else:  # norm1 / norm1_context
                name = {"norm1": "modCX" if kind.startswith("single") else "modX",
                        "norm1_context": "modC"}[part] + ".1"
            layers = "single_layers" if kind.startswith("single") else "double_layers"
            out[f"{layers}.{index}.{name}.weight"] = value
    return out
