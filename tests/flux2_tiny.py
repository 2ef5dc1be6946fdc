"""Tiny random FLUX.2 components built in-process (diffusers, transformers): a Flux2
transformer sized to read the tiny Qwen3's three stacked hidden layers, a Flux2 VAE, and
whole Flux2KleinPipeline folders; a transformer written in Black Forest Labs' layout."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sd_tiny import randomized
from zimage_tiny import QWEN3_TINY, tiny_qwen_tokenizer, transformers_tokenizer

# klein's shape at toy size: no guidance embedding, 4 rope axes of 4 features
FLUX2_TINY: dict[str, Any] = dict(
    patch_size=1, in_channels=16, num_layers=2, num_single_layers=2, attention_head_dim=16,
    num_attention_heads=2, joint_attention_dim=3 * QWEN3_TINY["hidden_size"],
    timestep_guidance_channels=32, mlp_ratio=3.0, axes_dims_rope=(4, 4, 4, 4),
    rope_theta=2000, guidance_embeds=False)


def tiny_flux2_transformer(seed: int = 5, config: dict[str, Any] | None = None) -> Any:
    from diffusers import Flux2Transformer2DModel

    return randomized(Flux2Transformer2DModel(**{**FLUX2_TINY, **(config or {})}), seed,
                      scale=0.4)


FLUX2_VAE_TINY: dict[str, Any] = dict(
    block_out_channels=(32, 64), latent_channels=4, norm_num_groups=32,
    down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)


def tiny_flux2_vae(seed: int = 6, config: dict[str, Any] | None = None) -> Any:
    """A tiny AutoencoderKLFlux2 (`config` over FLUX2_VAE_TINY) whose batch-norm statistics
    are far from (0, 1), so that they visibly matter."""
    import torch
    from diffusers import AutoencoderKLFlux2

    vae = randomized(AutoencoderKLFlux2(**{**FLUX2_VAE_TINY, **(config or {})}), seed)
    gen = torch.Generator().manual_seed(seed)
    channels = vae.bn.running_mean.shape[0]
    vae.bn.running_mean.copy_(0.5 * torch.randn(channels, generator=gen))
    vae.bn.running_var.copy_(0.5 + torch.rand(channels, generator=gen))
    return vae


def tiny_flux2_pipeline(root: Path, *, distilled: bool, transformer: Any = None) -> Any:
    """diffusers' Flux2KleinPipeline of tiny random parts (a Qwen3ForCausalLM 40 wide with
    the 28 layers klein reads from, 4-channel latents, dynamic shifting as klein's
    scheduler), saved to `root / name` ("flux2-klein" step-distilled, "flux2-klein-base"
    not); returns the pipeline. `transformer`: one in place of `tiny_flux2_transformer()`."""
    import diffusers
    import transformers

    tokenizer = transformers_tokenizer(tiny_qwen_tokenizer(root / "qwen-tokenizer"))
    text_encoder = randomized(transformers.Qwen3ForCausalLM(transformers.Qwen3Config(
        **{**QWEN3_TINY, "num_hidden_layers": 28})), 3)
    pipe = diffusers.Flux2KleinPipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True),
        vae=tiny_flux2_vae(), text_encoder=text_encoder, tokenizer=tokenizer,
        transformer=transformer or tiny_flux2_transformer(), is_distilled=distilled)
    pipe.save_pretrained(root / ("flux2-klein" if distilled else "flux2-klein-base"))
    return pipe


_BFL_TOP = {"x_embedder.": "img_in.", "context_embedder.": "txt_in.",
        "time_guidance_embed.timestep_embedder.linear_1.": "time_in.in_layer.",
        "time_guidance_embed.timestep_embedder.linear_2.": "time_in.out_layer.",
        "time_guidance_embed.guidance_embedder.linear_1.": "guidance_in.in_layer.",
        "time_guidance_embed.guidance_embedder.linear_2.": "guidance_in.out_layer.",
        "double_stream_modulation_img.linear.": "double_stream_modulation_img.lin.",
        "double_stream_modulation_txt.linear.": "double_stream_modulation_txt.lin.",
        "single_stream_modulation.linear.": "single_stream_modulation.lin.",
        "proj_out.": "final_layer.linear.", "norm_out.linear.": "final_layer.adaLN_modulation.1."}
_BFL_DOUBLE = {"attn.norm_q.weight": "img_attn.norm.query_norm.scale",
           "attn.norm_k.weight": "img_attn.norm.key_norm.scale",
           "attn.to_out.0.weight": "img_attn.proj.weight",
           "ff.linear_in.weight": "img_mlp.0.weight",
           "ff.linear_out.weight": "img_mlp.2.weight",
           "attn.norm_added_q.weight": "txt_attn.norm.query_norm.scale",
           "attn.norm_added_k.weight": "txt_attn.norm.key_norm.scale",
           "attn.to_add_out.weight": "txt_attn.proj.weight",
           "ff_context.linear_in.weight": "txt_mlp.0.weight",
           "ff_context.linear_out.weight": "txt_mlp.2.weight"}
_BFL_SINGLE = {"attn.to_qkv_mlp_proj.weight": "linear1.weight",
               "attn.to_out.weight": "linear2.weight",
           "attn.norm_q.weight": "norm.query_norm.scale",
           "attn.norm_k.weight": "norm.key_norm.scale"}


def bfl_layout(model: Any, prefix: str = "model.diffusion_model.") -> dict[str, Any]:
    """A diffusers Flux2Transformer2DModel's tensors in Black Forest Labs' layout (the
    inverse of diffusers' convert_flux2_transformer_checkpoint_to_diffusers): fused q/k/v,
    `.scale` norms, the final modulation's halves as (shift, scale), under `prefix`."""
    import torch

    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "transformer_blocks":
            rest = ".".join(parts[2:])
            if rest.startswith(("attn.to_q.", "attn.add_q_proj.")):
                stream = "img" if rest.startswith("attn.to_q.") else "txt"
                names = (("to_q", "to_k", "to_v") if stream == "img"
                         else ("add_q_proj", "add_k_proj", "add_v_proj"))
                fused = torch.cat([state[f"transformer_blocks.{parts[1]}.attn.{n}.weight"]
                                   for n in names])
                out[f"{prefix}double_blocks.{parts[1]}.{stream}_attn.qkv.weight"] = fused
            elif rest in _BFL_DOUBLE:
                out[f"{prefix}double_blocks.{parts[1]}.{_BFL_DOUBLE[rest]}"] = value
        elif parts[0] == "single_transformer_blocks":
            out[f"{prefix}single_blocks.{parts[1]}.{_BFL_SINGLE['.'.join(parts[2:])]}"] = value
        else:
            old = next(o for o in _BFL_TOP if key.startswith(o))
            if old == "norm_out.linear.":
                scale, shift = value.chunk(2)
                value = torch.cat([shift, scale])
            out[prefix + _BFL_TOP[old] + key[len(old):]] = value
    return out
