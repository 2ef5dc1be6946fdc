"""Tiny random PixArt parts built in-process: diffusers' PixArtTransformer2DModel as PixArt-Σ
(no size embeddings) and PixArt-α 1024 (`use_additional_conditions`), kept in memory as
references, and whole PixArtSigmaPipeline / PixArtAlphaPipeline folders (flow_tiny's T5 and
tokenizer, sd_tiny's VAE) for loader and pipeline tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flow_tiny import T5_TINY, tiny_t5, tiny_t5_tokenizer
from sd_tiny import VAE_TINY, randomized

# PixArt-Σ XL/2's layout shrunk: 4 latent channels in 2 x 2 patches, two blocks of 2 heads of
# 12 (a width of 24: the size embeddings' thirds), captions of T5_TINY's 32 features (T5
# XXL's 4096), the learned-sigma output (8 channels), position tables of sample_size 8 at
# interpolation_scale 1 (Σ 1024's is 128 at 2)
PIXART_TINY: dict[str, Any] = dict(
    num_attention_heads=2, attention_head_dim=12, in_channels=4, out_channels=8,
    num_layers=2, cross_attention_dim=24, caption_channels=T5_TINY["d_model"],
    sample_size=8, patch_size=2, interpolation_scale=None, use_additional_conditions=False)

# PixArt-α 1024: the picture's size and aspect ratio embedded beside the timestep
PIXART_ALPHA_TINY: dict[str, Any] = dict(PIXART_TINY, use_additional_conditions=True,
                                         interpolation_scale=2)

# PixArt-Σ's scheduler_config.json: DPM-Solver++ 2M over the linear betas; variance_type null
# (the pipeline drops the variance half: diffusers' learned_range would keep 3 of 4 channels)
PIXART_SCHEDULER: dict[str, Any] = dict(
    beta_start=0.0001, beta_end=0.02, beta_schedule="linear", num_train_timesteps=1000,
    prediction_type="epsilon", solver_order=2, algorithm_type="dpmsolver++",
    solver_type="midpoint", lower_order_final=True, variance_type=None,
    thresholding=False, use_karras_sigmas=False, timestep_spacing="linspace", steps_offset=0)


# PixArt-LCM-XL-2-1024-MS's scheduler_config.json: LCM over the linear betas
PIXART_LCM_SCHEDULER: dict[str, Any] = dict(
    beta_start=0.0001, beta_end=0.02, beta_schedule="linear", num_train_timesteps=1000,
    original_inference_steps=50, prediction_type="epsilon", timestep_scaling=10.0,
    set_alpha_to_one=True, clip_sample=False, timestep_spacing="leading", steps_offset=0)

# the SD VAE's 8x factor in four narrow levels: pictures at PixArt's resolution bins (256 px
# and up, 32 x 32 latents) stay cheap
VAE_8X_TINY: dict[str, Any] = dict(
    VAE_TINY, block_out_channels=(8, 8, 8, 8), norm_num_groups=8,
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)


def tiny_pixart_transformer(seed: int = 31, **overrides: Any) -> Any:
    """diffusers' PixArtTransformer2DModel of PIXART_TINY (overrides: PIXART_ALPHA_TINY's
    fields), random weights scaled so that the caption visibly matters (the tests assert
    it)."""
    import diffusers
    import torch

    model = randomized(diffusers.PixArtTransformer2DModel(**{**PIXART_TINY, **overrides}),
                       seed, scale=0.4)
    # the cross-attention writes to the stream ungated: tripled, a caption changes the
    # output by ~10% where uniform weights leave it near 2%. The modulations quartered: at
    # full scale they reach ~10, and (1 + scale) gains of that size made the output move by
    # 2e-4 for float32 rounding (3e-7) in the timestep's sinusoid
    with torch.no_grad():
        for block in model.transformer_blocks:
            block.attn2.to_out[0].weight.mul_(3.0)
        model.adaln_single.linear.weight.mul_(0.25)
    return model


def tiny_pixart_pipeline(root: Path, name: str = "pixart", *, alpha: bool = False,
                         vae: dict[str, Any] = VAE_TINY, lcm: bool = False,
                         **overrides: Any) -> Any:
    """diffusers' PixArtSigmaPipeline (`alpha`: PixArtAlphaPipeline with α 1024's size
    embeddings) of tiny random parts saved to `root / name`, the VAE of `vae`'s config
    (VAE_TINY: 2x; VAE_8X_TINY), PixArt-LCM's LCMScheduler where `lcm`, the transformer's
    config changed by `overrides`; returns it."""
    import diffusers
    import transformers

    tiny_t5_tokenizer(root / f"{name}-tokenizer")
    tokenizer = transformers.T5TokenizerFast(
        tokenizer_file=str(root / f"{name}-tokenizer" / "tokenizer.json"))
    fields = {**(PIXART_ALPHA_TINY if alpha else PIXART_TINY), **overrides}
    cls = diffusers.PixArtAlphaPipeline if alpha else diffusers.PixArtSigmaPipeline
    pipe = cls(tokenizer=tokenizer, text_encoder=tiny_t5(),
               vae=randomized(diffusers.AutoencoderKL(**vae), 2),
               transformer=tiny_pixart_transformer(**fields),
               scheduler=diffusers.LCMScheduler(**PIXART_LCM_SCHEDULER) if lcm
               else diffusers.DPMSolverMultistepScheduler(**PIXART_SCHEDULER))
    pipe.save_pretrained(root / name)
    return pipe


def original_layout(transformer: Any) -> dict[str, Any]:
    """A diffusers PixArtTransformer2DModel's tensors in the original (PixArt repositories')
    layout, as its .pth checkpoints' state_dict holds them: diffusers' conversion undone
    (fused attn.qkv and cross_attn.kv_linear; the unused y_embedder.y_embedding it drops,
    here random)."""
    import torch

    state = {k: v.detach().clone().contiguous() for k, v in transformer.state_dict().items()
             if k != "pos_embed.pos_embed"}
    emb = "adaln_single.emb."
    heads = (("pos_embed.proj.", "x_embedder.proj."),
             (emb + "timestep_embedder.linear_1.", "t_embedder.mlp.0."),
             (emb + "timestep_embedder.linear_2.", "t_embedder.mlp.2."),
             (emb + "resolution_embedder.linear_1.", "csize_embedder.mlp.0."),
             (emb + "resolution_embedder.linear_2.", "csize_embedder.mlp.2."),
             (emb + "aspect_ratio_embedder.linear_1.", "ar_embedder.mlp.0."),
             (emb + "aspect_ratio_embedder.linear_2.", "ar_embedder.mlp.2."),
             ("adaln_single.linear.", "t_block.1."),
             ("caption_projection.linear_1.", "y_embedder.y_proj.fc1."),
             ("caption_projection.linear_2.", "y_embedder.y_proj.fc2."),
             ("proj_out.", "final_layer.linear."),
             ("scale_shift_table", "final_layer.scale_shift_table"),
             ("transformer_blocks.", "blocks."))
    parts = ((".attn1.to_out.0.", ".attn.proj."), (".attn2.to_q.", ".cross_attn.q_linear."),
             (".attn2.to_out.0.", ".cross_attn.proj."), (".ff.net.0.proj.", ".mlp.fc1."),
             (".ff.net.2.", ".mlp.fc2."))
    gen = torch.Generator().manual_seed(5)
    out = {"y_embedder.y_embedding": torch.randn(
        3, transformer.config.caption_channels, generator=gen)}
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
        out[key] = value
    return out
