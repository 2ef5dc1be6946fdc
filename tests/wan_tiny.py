"""Tiny random Wan 2.1 components built in-process (diffusers, transformers): the video VAE,
the UMT5 text encoder, the transformer and a whole WanPipeline folder (Wan 2.2 A14B's too),
a transformer written as ComfyUI's split file in Wan's original names, and an input video."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from sd_tiny import randomized

from bench._wan_files import vae_original_names  # noqa: F401 (the tests' writer too)

# 8x spatial, 4x temporal as Wan 2.1's; 4 latent channels
WAN_VAE_TINY: dict[str, Any] = dict(
    base_dim=8, z_dim=4, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
    temperal_downsample=[False, True, True],
    latents_mean=[0.3, -0.2, 0.1, 0.5], latents_std=[1.5, 0.8, 2.0, 1.1])


def wave_video(seed: int, height: int, width: int, frames: int = 5) -> list[Any]:
    """`frames` PIL pictures of smooth random colour waves drifting across the frames: an
    input video with shapes for the tiny VAE to encode, not only noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / max(height, width)
    out = []
    for i in range(frames):
        waves = [np.sin(2 * np.pi * (a * x + b * y) + c + 0.3 * i)
                 for a, b, c in rng.uniform(0, 3, (3, 3))]
        out.append(Image.fromarray((np.stack(waves, -1) * 120 + 128).astype(np.uint8)))
    return out


def tiny_wan_vae(seed: int = 5) -> Any:
    """diffusers' AutoencoderKLWan of WAN_VAE_TINY, random."""
    import diffusers

    return randomized(diffusers.AutoencoderKLWan(**WAN_VAE_TINY), seed)


def tiny_umt5(seed: int = 6) -> Any:
    """transformers' UMT5EncoderModel of T5_TINY's sizes (every block its own position bias
    table), random."""
    import transformers
    from flow_tiny import T5_TINY

    config = transformers.UMT5Config(**T5_TINY)
    return randomized(transformers.UMT5EncoderModel(config), seed)


WAN_TINY: dict[str, Any] = dict(
    patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=12, in_channels=4,
    out_channels=4, text_dim=32, freq_dim=16, ffn_dim=40, num_layers=2, rope_max_seq_len=64)


def tiny_wan_transformer(seed: int = 7) -> Any:
    """diffusers' WanTransformer3DModel of WAN_TINY, random weights scaled so the text
    visibly matters."""
    import diffusers

    return randomized(diffusers.WanTransformer3DModel(**WAN_TINY), seed, scale=0.3)


# Wan 2.1 T2V's scheduler_config.json (UniPC on flow sigmas, 480p's shift)
WAN_SCHEDULER: dict[str, Any] = dict(
    prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0,
    num_train_timesteps=1000, solver_order=2)


def tiny_wan_pipeline(root: Path, *, wan22: bool = False) -> Any:
    """diffusers' WanPipeline of tiny random parts saved to `root / "wan"` (`wan22`: Wan 2.2
    TI2V 5B's layout, its VAE and per-token timesteps, to `root / "wan22"`); returns it."""
    import diffusers
    import transformers
    from flow_tiny import tiny_t5_tokenizer

    tiny_t5_tokenizer(root / "umt5-tokenizer")
    tokenizer = transformers.T5TokenizerFast(
        tokenizer_file=str(root / "umt5-tokenizer" / "tokenizer.json"))
    channels = WAN22_VAE_TINY["z_dim"] if wan22 else WAN_TINY["in_channels"]
    transformer = randomized(diffusers.WanTransformer3DModel(
        **{**WAN_TINY, "in_channels": channels, "out_channels": channels}), 7, scale=0.3)
    pipe = diffusers.WanPipeline(
        tokenizer=tokenizer, text_encoder=tiny_umt5(), transformer=transformer,
        vae=tiny_wan22_vae() if wan22 else tiny_wan_vae(),
        scheduler=diffusers.UniPCMultistepScheduler(**WAN_SCHEDULER), expand_timesteps=wan22)
    pipe.save_pretrained(root / ("wan22" if wan22 else "wan"))
    return pipe


# Wan 2.2 TI2V 5B's VAE shape: 2x2 patches, residual blocks, a wider decoder; 16x spatial
WAN22_VAE_TINY: dict[str, Any] = dict(
    base_dim=8, decoder_base_dim=12, z_dim=6, dim_mult=[1, 2, 2, 2], num_res_blocks=1,
    temperal_downsample=[False, True, True], is_residual=True, patch_size=2, in_channels=12,
    out_channels=12, scale_factor_spatial=16,
    latents_mean=[0.3, -0.2, 0.1, 0.5, 0.0, -0.4], latents_std=[1.5, 0.8, 2.0, 1.1, 0.9, 1.3])


def tiny_wan22_vae(seed: int = 8) -> Any:
    """diffusers' AutoencoderKLWan of WAN22_VAE_TINY (Wan 2.2's layout), random."""
    import diffusers

    return randomized(diffusers.AutoencoderKLWan(**WAN22_VAE_TINY), seed)


# Wan 2.1 I2V's CLIP vision encoder (CLIPVisionModel, no projection), tiny: 2x2 patches + class
CLIP_VISION_TINY: dict[str, Any] = dict(
    hidden_size=32, intermediate_size=48, num_hidden_layers=3, num_attention_heads=2,
    image_size=28, patch_size=14, projection_dim=16)


def tiny_wan_i2v_pipeline(root: Path) -> Any:
    """diffusers' WanImageToVideoPipeline (Wan 2.1 I2V) of tiny random parts saved to
    `root / "wan-i2v"`: the transformer reads the noise, the 4-channel mask and the first
    frame's latents (4 + 4 + 4 channels) and the CLIP states; returns it."""
    import diffusers
    import transformers
    from flow_tiny import tiny_t5_tokenizer

    tiny_t5_tokenizer(root / "umt5-tokenizer")
    tokenizer = transformers.T5TokenizerFast(
        tokenizer_file=str(root / "umt5-tokenizer" / "tokenizer.json"))
    transformer = randomized(diffusers.WanTransformer3DModel(
        **{**WAN_TINY, "in_channels": 12, "image_dim": CLIP_VISION_TINY["hidden_size"],
           "added_kv_proj_dim": 24}), 11, scale=0.3)
    encoder = randomized(transformers.CLIPVisionModel(
        transformers.CLIPVisionConfig(**CLIP_VISION_TINY)), 12)
    processor = transformers.CLIPImageProcessorPil(
        size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    pipe = diffusers.WanImageToVideoPipeline(
        tokenizer=tokenizer, text_encoder=tiny_umt5(), transformer=transformer,
        vae=tiny_wan_vae(), scheduler=diffusers.UniPCMultistepScheduler(**WAN_SCHEDULER),
        image_encoder=encoder, image_processor=processor)
    pipe.save_pretrained(root / "wan-i2v")
    return pipe


def tiny_wan_a14b_pipeline(root: Path, *, i2v: bool = False, boundary_ratio: float = 0.8
                           ) -> Any:
    """diffusers' Wan 2.2 A14B pipeline (WanPipeline, or `i2v`: WanImageToVideoPipeline with
    no CLIP: the transformers read the noise, the mask and the first frame's latents, 4 + 4 +
    4 channels) of tiny random parts, its two experts made different, saved to
    `root / "wan-a14b"` (or "wan-a14b-i2v"); returns it."""
    import diffusers
    import transformers
    from flow_tiny import tiny_t5_tokenizer

    tiny_t5_tokenizer(root / "umt5-tokenizer")
    tokenizer = transformers.T5TokenizerFast(
        tokenizer_file=str(root / "umt5-tokenizer" / "tokenizer.json"))
    config = {**WAN_TINY, "in_channels": 12 if i2v else 4}
    high, low = (randomized(diffusers.WanTransformer3DModel(**config), seed, scale=0.3)
                 for seed in (13, 14))
    parts = dict(tokenizer=tokenizer, text_encoder=tiny_umt5(), transformer=high,
                 transformer_2=low, vae=tiny_wan_vae(), boundary_ratio=boundary_ratio,
                 scheduler=diffusers.UniPCMultistepScheduler(**WAN_SCHEDULER))
    pipe = (diffusers.WanImageToVideoPipeline(**parts, image_encoder=None,
                                              image_processor=None) if i2v
            else diffusers.WanPipeline(**parts))
    pipe.save_pretrained(root / ("wan-a14b-i2v" if i2v else "wan-a14b"))
    return pipe


# diffusers' names -> Wan's original ones (the inverse of convert_wan_transformer_to_diffusers)
_ORIGINAL = (
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    ("condition_embedder.image_embedder.norm1", "img_emb.proj.0"),
    ("condition_embedder.image_embedder.ff.net.0.proj", "img_emb.proj.1"),
    ("condition_embedder.image_embedder.ff.net.2", "img_emb.proj.3"),
    ("condition_embedder.image_embedder.norm2", "img_emb.proj.4"),
    (".attn1.", ".self_attn."), (".attn2.", ".cross_attn."), (".to_out.0.", ".o."),
    (".to_q.", ".q."), (".to_k.", ".k."), (".to_v.", ".v."), (".add_k_proj.", ".k_img."),
    (".add_v_proj.", ".v_img."), (".norm_added_k.", ".norm_k_img."), (".norm2.", ".norm3."),
    ("ffn.net.0.proj", "ffn.0"), ("ffn.net.2", "ffn.2"), ("proj_out", "head.head"),
)


def original_names(state: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A diffusers WanTransformer3DModel state dict in Wan's original names."""
    out = {}
    for key, value in state.items():
        name = key
        for new, old in _ORIGINAL:
            name = name.replace(new, old)
        if name == "scale_shift_table":
            name = "head.modulation"
        elif name.endswith(".scale_shift_table"):
            name = name.replace(".scale_shift_table", ".modulation")
        out[prefix + name] = value
    return out


def torch_state(model: Any) -> dict[str, Any]:
    """A torch module's state dict, each tensor its own copy (safetensors refuses shared
    ones)."""
    return {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}


def comfyui_file(model: Any, path: Path, form: str = "fp32", prefix: str = ""
                 ) -> dict[str, np.ndarray]:
    """`model` saved as ComfyUI's split diffusion model file `path` in `form` (fp32, bf16,
    fp8_e4m3fn, fp8_scaled); returns the values the file holds, in diffusers' names."""
    import torch
    from safetensors.torch import save_file
    from t5_files import scaled_fp8

    state = torch_state(model)
    if form == "fp8_scaled":
        stored, held = scaled_fp8(original_names(state))
        save_file({prefix + k: v for k, v in stored.items()}, str(path))
        back = {v: k for k, v in zip(state, original_names(state), strict=True)}
        return {back[k]: v for k, v in held.items()}
    if form == "bf16":
        state = {k: v.to(torch.bfloat16) for k, v in state.items()}
    elif form == "fp8_e4m3fn":
        state = {k: v.to(torch.float8_e4m3fn) if v.ndim == 2 else v for k, v in state.items()}
    save_file(original_names(state, prefix), str(path))
    return {k: v.float().numpy() for k, v in state.items()}
