"""bench/dit_families.py's model table: the real configs its rows run at, their tiny --quick
counterparts, and `_Model`, a row's calls on either side (Qwen-Image 2.1's and Qwen3-VL-8B's
in bench/_dit_qwen21.py, Krea 2's in bench/_dit_krea2.py, Kandinsky 5's in
bench/_dit_kandinsky5.py, HunyuanImage 2.1's in bench/_dit_hunyuanimage.py, HunyuanVideo 1.5's in
bench/_dit_hunyuan_video15.py, LTX-2's in bench/_dit_ltx2.py, Lumina 2's in
bench/_dit_lumina2.py, HunyuanVideo's in bench/_dit_hunyuan_video.py, LongCat-Image's in
bench/_dit_longcat.py, Sana's in bench/_dit_sana.py, HiDream-I1's in bench/_dit_hidream.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import gpucore

from . import zimage as _zimage

# Qwen/Qwen-Image, transformer/config.json
QWEN_IMAGE: dict[str, Any] = dict(
    patch_size=2, in_channels=64, out_channels=16, num_layers=60, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=3584, axes_dims_rope=(16, 56, 56))
# black-forest-labs/FLUX.2-klein-9B, transformer/config.json
FLUX2_KLEIN_9B: dict[str, Any] = dict(
    patch_size=1, in_channels=128, num_layers=8, num_single_layers=24, attention_head_dim=128,
    num_attention_heads=32, joint_attention_dim=12288, timestep_guidance_channels=256,
    mlp_ratio=3.0, axes_dims_rope=(32, 32, 32, 32), rope_theta=2000, eps=1e-6,
    guidance_embeds=False)
# lodestones/Chroma1-HD, transformer/config.json
CHROMA: dict[str, Any] = dict(
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=4096, axes_dims_rope=(16, 56, 56),
    approximator_num_channels=64, approximator_hidden_dim=5120, approximator_layers=5)
# black-forest-labs/FLUX.1-Kontext-dev, transformer/config.json (FLUX.1 dev's)
FLUX_DEV: dict[str, Any] = dict(
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=768,
    guidance_embeds=True, axes_dims_rope=(16, 56, 56))
# Qwen/Qwen-Image, text_encoder/config.json's language model (Qwen2.5-VL-7B-Instruct)
QWEN25VL_7B: dict[str, Any] = dict(
    model_type="qwen2", vocab_size=152064, hidden_size=3584, intermediate_size=18944,
    num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, rms_norm_eps=1e-6,
    rope_theta=1_000_000.0, max_position_embeddings=128000, tie_word_embeddings=False)
# Qwen/Qwen3-8B, config.json (FLUX.2 klein 9B's text encoder)
QWEN3_8B: dict[str, Any] = dict(
    _zimage.QWEN3_4B, hidden_size=4096, intermediate_size=12288, num_attention_heads=32,
    tie_word_embeddings=False)
# Qwen/Qwen-Image-2.1, transformer/config.json: diffusers' QwenImage21Transformer2DModel
# defaults, which are the released model's
QWEN_IMAGE21: dict[str, Any] = dict(
    patch_size=1, in_channels=64, out_channels=64, num_layers=32, attention_head_dim=128,
    num_attention_heads=32, context_in_dim=4096, mlp_ratio=3, axes_dims_rope=(16, 56, 56))
# Qwen/Qwen3-VL-8B-Instruct, config.json's text_config (Qwen-Image 2.1's text encoder)
QWEN3VL_8B: dict[str, Any] = dict(
    model_type="qwen3_vl_text", vocab_size=151936, hidden_size=4096, intermediate_size=12288,
    num_hidden_layers=36, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
    rms_norm_eps=1e-6, max_position_embeddings=262144, tie_word_embeddings=False,
    attention_bias=False, hidden_act="silu",
    rope_parameters={"rope_type": "default", "rope_theta": 5_000_000.0,
                     "mrope_section": [24, 20, 20], "mrope_interleaved": True})
# Krea 2, transformer/config.json: diffusers' Krea2Transformer2DModel defaults (the released
# model's: 28 blocks 6144 wide, 48 query / 12 key-value heads; Qwen3-VL-4B's 12 taps)
KREA2: dict[str, Any] = dict(
    in_channels=64, num_layers=28, attention_head_dim=128, num_attention_heads=48,
    num_key_value_heads=12, intermediate_size=16384, timestep_embed_dim=256,
    text_hidden_dim=2560, num_text_layers=12, text_num_attention_heads=20,
    text_num_key_value_heads=20, text_intermediate_size=6912, axes_dims_rope=(32, 48, 48))
# Kandinsky 5 Image Lite (kandinskylab's configs/config_t2i.yaml dit_params: 50 visual blocks
# 2560 wide, heads 128 wide; Qwen2.5-VL's 3584-wide states, CLIP's 768-wide pooled vector)
KANDINSKY5: dict[str, Any] = dict(
    in_visual_dim=16, out_visual_dim=16, in_text_dim=3584, in_text_dim2=768, time_dim=512,
    patch_size=(1, 2, 2), model_dim=2560, ff_dim=10240, num_text_blocks=2,
    num_visual_blocks=50, axes_dims=(32, 48, 48), visual_cond=False, attention_type="regular")
# tencent/HunyuanImage-2.1, transformer/config.json as diffusers' converter writes it (the
# distilled checkpoint adds guidance_embeds and use_meanflow: two small embedders)
HUNYUANIMAGE: dict[str, Any] = dict(
    in_channels=64, out_channels=64, num_attention_heads=28, attention_head_dim=128,
    num_layers=20, num_single_layers=40, num_refiner_layers=2, patch_size=(1, 1),
    qk_norm="rms_norm", guidance_embeds=False, text_embed_dim=3584, text_embed_2_dim=1472,
    rope_theta=256.0, rope_axes_dim=(64, 64))
# tencent/HunyuanVideo-1.5's 480p text-to-video transformer/config.json as diffusers'
# converter writes it: its HunyuanVideo15Transformer3DModel defaults (54 double blocks 2048
# wide; 32 latent channels + 32 condition channels + their mask)
HUNYUANVIDEO15: dict[str, Any] = dict(
    in_channels=65, out_channels=32, num_attention_heads=16, attention_head_dim=128,
    num_layers=54, num_refiner_layers=2, mlp_ratio=4.0, patch_size=1, patch_size_t=1,
    qk_norm="rms_norm", text_embed_dim=3584, text_embed_2_dim=1472, image_embed_dim=1152,
    rope_theta=256.0, rope_axes_dim=(16, 56, 56), target_size=640, task_type="t2v")
# Lightricks/LTX-2's transformer/config.json as diffusers' converter writes it (version 2.0:
# 48 blocks, video 32 heads of 128, audio 32 heads of 64, Gemma 3's 3840-wide prompt states)
LTX2: dict[str, Any] = dict(
    in_channels=128, out_channels=128, patch_size=1, patch_size_t=1, num_attention_heads=32,
    attention_head_dim=128, cross_attention_dim=4096, vae_scale_factors=(8, 32, 32),
    pos_embed_max_pos=20, base_height=2048, base_width=2048, gated_attn=False,
    cross_attn_mod=False, audio_in_channels=128, audio_out_channels=128, audio_patch_size=1,
    audio_patch_size_t=1, audio_num_attention_heads=32, audio_attention_head_dim=64,
    audio_cross_attention_dim=2048, audio_scale_factor=4, audio_pos_embed_max_pos=20,
    audio_sampling_rate=16000, audio_hop_length=160, audio_gated_attn=False,
    audio_cross_attn_mod=False, num_layers=48, activation_fn="gelu-approximate",
    qk_norm="rms_norm_across_heads", norm_elementwise_affine=False, norm_eps=1e-6,
    caption_channels=3840, attention_bias=True, attention_out_bias=True, rope_theta=10000.0,
    rope_double_precision=True, causal_offset=1, timestep_scale_multiplier=1000,
    cross_attn_timestep_scale_multiplier=1000, rope_type="split", use_prompt_embeddings=True,
    perturbed_attn=False)
# Alpha-VLLM/Lumina-Image-2.0's transformer/config.json as diffusers' convert_lumina2_to_diffusers
# writes it (the 2B NextDiT: 26 layers 2304 wide, 24 query / 8 key-value heads; Gemma-2-2B's
# 2304-wide caption states)
LUMINA2: dict[str, Any] = dict(
    sample_size=128, patch_size=2, in_channels=16, out_channels=None, hidden_size=2304,
    num_layers=26, num_refiner_layers=2, num_attention_heads=24, num_kv_heads=8,
    multiple_of=256, ffn_dim_multiplier=None, norm_eps=1e-5, scaling_factor=1.0,
    axes_dim_rope=(32, 32, 32), axes_lens=(300, 512, 512), cap_feat_dim=2304)
# hunyuanvideo-community/HunyuanVideo's transformer/config.json (diffusers'
# HunyuanVideoTransformer3DModel defaults: 20 double and 40 single blocks 3072 wide, 1 x 2 x 2
# patches, llava-llama-3-8b's 4096-wide states, CLIP-L's 768-wide pooled, guidance embedded)
HUNYUANVIDEO: dict[str, Any] = dict(
    in_channels=16, out_channels=16, num_attention_heads=24, attention_head_dim=128,
    num_layers=20, num_single_layers=40, num_refiner_layers=2, mlp_ratio=4.0, patch_size=2,
    patch_size_t=1, qk_norm="rms_norm", guidance_embeds=True, text_embed_dim=4096,
    pooled_projection_dim=768, rope_theta=256.0, rope_axes_dim=(16, 56, 56))
# meituan-longcat/LongCat-Image's transformer/config.json: the 6B released checkpoint's 10
# double and 20 single blocks (diffusers' class defaults are FLUX.1's 19 and 38), 24 heads of
# 128, Qwen2.5-VL-7B's 3584-wide states
LONGCAT: dict[str, Any] = dict(
    patch_size=1, in_channels=64, num_layers=10, num_single_layers=20, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=3584, pooled_projection_dim=3584,
    axes_dims_rope=(16, 56, 56))
# briaai/FIBO's transformer/config.json: 8 double and 38 single FLUX.1 blocks 3072 wide (24
# heads of 128), 48 Wan 2.2 latent channels a token, SmolLM3-3B's 2048-wide states (4096: its
# last two side by side)
FIBO: dict[str, Any] = dict(
    patch_size=1, in_channels=48, num_layers=8, num_single_layers=38, attention_head_dim=128,
    num_attention_heads=24, joint_attention_dim=4096, text_encoder_dim=2048,
    axes_dims_rope=[16, 56, 56])
# briaai/BRIA-3.2's transformer/config.json (4B): 8 double and 28 single FLUX.1 blocks 2304
# wide (24 heads of 96, rotary axes 0 / 48 / 48), 2x2 patches of a 4-channel VAE packed to 16,
# T5 XXL's 4096-wide states, no pooled text
BRIA: dict[str, Any] = dict(
    patch_size=1, in_channels=16, num_layers=8, num_single_layers=28, attention_head_dim=96,
    num_attention_heads=24, joint_attention_dim=4096, pooled_projection_dim=None,
    axes_dims_rope=[0, 48, 48], rope_theta=10000, time_theta=10000, guidance_embeds=False)
# AIDC-AI/Ovis-Image-7B's transformer (its authors' `ovis-image-7b` args, diffusers'
# OvisImageTransformer2DModel defaults): 6 double and 27 single blocks 3072 wide with SwiGLU
# MLPs, 24 heads of 128, Qwen3's 2048-wide states
OVIS: dict[str, Any] = dict(
    patch_size=1, in_channels=64, out_channels=64, num_layers=6, num_single_layers=27,
    attention_head_dim=128, num_attention_heads=24, joint_attention_dim=2048,
    axes_dims_rope=(16, 56, 56))
# FenomAI/Nucleus-Image's transformer/config.json (diffusers' NucleusMoEImageTransformer2DModel)
NUCLEUS: dict[str, Any] = dict(
    patch_size=2, in_channels=64, out_channels=16, num_layers=32, attention_head_dim=128,
    num_attention_heads=16, num_key_value_heads=4, joint_attention_dim=4096,
    axes_dims_rope=(16, 56, 56), mlp_ratio=4.0, moe_enabled=True,
    dense_moe_strategy="leave_first_three_blocks_dense", num_experts=64,
    moe_intermediate_dim=1344, capacity_factors=[0.0] * 3 + [4.0] * 2 + [2.0] * 27,
    use_sigmoid=False, route_scale=2.5)
# Photoroom/prx-1024-t2i-beta's transformer (diffusers' PRXTransformer2DModel defaults: 16
# blocks 1792 wide, 28 heads of 64, T5Gemma 2B's 2304-wide states, FLUX.1's 16 channels)
PRX: dict[str, Any] = dict(
    in_channels=16, patch_size=2, context_in_dim=2304, hidden_size=1792, mlp_ratio=3.5,
    num_heads=28, depth=16, axes_dim=[32, 32])
# Efficient-Large-Model/Sana_1600M_1024px's transformer/config.json as diffusers'
# convert_sana_to_diffusers writes it (SanaMS_1600M_P1_D20: 20 blocks 2240 wide, 70
# linear-attention heads of 32, 20 cross-attention heads of 112; Gemma-2-2B's 2304-wide
# captions; DC-AE's 32 channels; Sana 1.0: no q/k norms, no positions at 1024 px)
SANA_1600M: dict[str, Any] = dict(
    in_channels=32, out_channels=32, num_attention_heads=70, attention_head_dim=32,
    num_layers=20, num_cross_attention_heads=20, cross_attention_head_dim=112,
    cross_attention_dim=2240, caption_channels=2304, mlp_ratio=2.5, attention_bias=False,
    sample_size=32, patch_size=1, norm_elementwise_affine=False, norm_eps=1e-6,
    interpolation_scale=None)
# Sana_1600M_4Kpx's: the same blocks, 128 x 128 latents with sin-cos positions (the converter's
# interpolation_scale 2.0 at 4096 px)
SANA_4K: dict[str, Any] = dict(SANA_1600M, sample_size=128, interpolation_scale=2.0)
# PixArt-alpha/PixArt-Sigma-XL-2-1024-MS's transformer/config.json: 28 blocks 1152 wide (16
# heads of 72), T5 XXL's 4096-wide states, 128 x 128 latents at interpolation scale 2, no size
# embeddings, the learned-sigma output
PIXART_SIGMA: dict[str, Any] = dict(
    num_attention_heads=16, attention_head_dim=72, in_channels=4, out_channels=8,
    num_layers=28, cross_attention_dim=1152, caption_channels=4096, attention_bias=True,
    sample_size=128, patch_size=2, interpolation_scale=2, use_additional_conditions=False,
    activation_fn="gelu-approximate", norm_type="ada_norm_single", norm_eps=1e-6,
    norm_elementwise_affine=False, num_embeds_ada_norm=1000)
# HiDream-ai/HiDream-I1-Full's transformer/config.json: 16 double and 32 single blocks 2560
# wide (20 heads of 128), 4 routed experts top 2; block i reads Llama 3.1 8B's layer i, blocks
# 32 on its last (31); T5's and Llama's 4096-wide states, the two CLIPs' 2048 pooled features
HIDREAM: dict[str, Any] = dict(
    patch_size=2, in_channels=16, out_channels=16, num_layers=16, num_single_layers=32,
    attention_head_dim=128, num_attention_heads=20, caption_channels=[4096, 4096],
    text_emb_dim=2048, num_routed_experts=4, num_activated_experts=2,
    axes_dims_rope=(64, 32, 32), max_resolution=(128, 128),
    llama_layers=list(range(32)) + [31] * 16)

# the text tokens of Qwen-Image-Edit's step: a 1024x1024 reference read by Qwen2.5-VL (1036 px
# in 28 px merged patches: 37 x 37 picture tokens) and a short instruction, the template's
# first 64 tokens dropped
EDIT_TEXT = 1385

# baidu/ERNIE-Image's transformer/config.json (8B): 36 shared-adaLN blocks of 32 heads of 128,
# Ministral 3's 3072-wide states
ERNIE: dict[str, Any] = dict(
    hidden_size=4096, num_attention_heads=32, num_layers=36, ffn_hidden_size=12288,
    in_channels=128, out_channels=128, patch_size=1, text_in_dim=3072, rope_theta=256,
    rope_axes_dim=(32, 48, 48), eps=1e-6, qk_layernorm=True)

# THUDM/CogView4-6B's transformer (diffusers' convert_cogview4_to_diffusers): 28 blocks of 32
# heads of 128, GLM-4-9B's 4096-wide states
COGVIEW4: dict[str, Any] = dict(
    patch_size=2, in_channels=16, out_channels=16, num_layers=28, attention_head_dim=128,
    num_attention_heads=32, text_embed_dim=4096, time_embed_dim=512, condition_dim=256,
    rope_axes_dim=(256, 256))
# nvidia/Cosmos-Predict2-2B-Text2Image's (the converter's Cosmos-2.0-Diffusion-2B-Text2Image):
# 28 blocks of 16 heads of 128, T5-11B's 1024-wide states, Wan 2.1's VAE
COSMOS2: dict[str, Any] = dict(
    in_channels=16, out_channels=16, num_attention_heads=16, attention_head_dim=128,
    num_layers=28, mlp_ratio=4.0, text_embed_dim=1024, adaln_lora_dim=256,
    max_size=(128, 240, 240), patch_size=(1, 2, 2), rope_scale=(1.0, 4.0, 4.0),
    concat_padding_mask=True, extra_pos_embed_type=None)

# Ideogram4Transformer2DModel's defaults, ideogram-ai/ideogram-v4's transformer (9B: 34 blocks
# of 18 heads of 256), Qwen3-VL-8B's 13 taps of 4096
IDEOGRAM4: dict[str, Any] = dict(
    in_channels=128, num_layers=34, attention_head_dim=256, num_attention_heads=18,
    intermediate_size=12288, adaln_dim=512, llm_features_dim=53248, rope_theta=5_000_000,
    mrope_section=(24, 20, 20), norm_eps=1e-5)
# fal/AuraFlow-v0.3's transformer/config.json: 4 joint and 32 single blocks of 12 heads of 256,
# Pile-T5 XL's 2048-wide states, a 96 x 96 position table
AURAFLOW: dict[str, Any] = dict(
    sample_size=64, patch_size=2, in_channels=4, num_mmdit_layers=4, num_single_dit_layers=32,
    attention_head_dim=256, num_attention_heads=12, joint_attention_dim=2048,
    caption_projection_dim=3072, out_channels=4, pos_embed_max_size=9216)

_TINY_DIT = dict(num_layers=1, attention_head_dim=16, num_attention_heads=2)
TINY: dict[str, dict[str, Any]] = {
    "qwenimage": dict(QWEN_IMAGE, **_TINY_DIT, joint_attention_dim=40, axes_dims_rope=(4, 6, 6)),
    "qwenimageedit": dict(QWEN_IMAGE, **_TINY_DIT, joint_attention_dim=40,
                          axes_dims_rope=(4, 6, 6)),
    "flux2klein": dict(FLUX2_KLEIN_9B, **_TINY_DIT, num_single_layers=1, joint_attention_dim=48,
                       axes_dims_rope=(4, 4, 4, 4)),
    "chroma": dict(CHROMA, **_TINY_DIT, num_single_layers=1, joint_attention_dim=40,
                   axes_dims_rope=(4, 6, 6), approximator_num_channels=8,
                   approximator_hidden_dim=32, approximator_layers=1),
    "kontext": dict(FLUX_DEV, **_TINY_DIT, num_single_layers=1, joint_attention_dim=40,
                    pooled_projection_dim=24, axes_dims_rope=(4, 6, 6)),
    "qwen25vl": dict(QWEN25VL_7B, vocab_size=512, hidden_size=48, intermediate_size=80,
                     num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2),
    "qwen3_8b": dict(_zimage.TINY_QWEN3, num_hidden_layers=28),
    "qwenimage21": dict(QWEN_IMAGE21, **_TINY_DIT, context_in_dim=40, axes_dims_rope=(4, 6, 6)),
    "kandinsky5": dict(KANDINSKY5, in_text_dim=40, in_text_dim2=24, time_dim=16, model_dim=32,
                       ff_dim=48, num_text_blocks=1, num_visual_blocks=1, axes_dims=(4, 6, 6)),
    "krea2": dict(KREA2, num_layers=1, attention_head_dim=16, num_attention_heads=4,
                  num_key_value_heads=2, intermediate_size=48, timestep_embed_dim=32,
                  text_hidden_dim=40, num_text_layers=3, text_num_attention_heads=4,
                  text_num_key_value_heads=2, text_intermediate_size=48,
                  axes_dims_rope=(4, 6, 6)),
    "hunyuanimage": dict(HUNYUANIMAGE, num_layers=1, num_single_layers=1, num_refiner_layers=1,
                         in_channels=8, out_channels=8, attention_head_dim=16,
                         num_attention_heads=2, text_embed_dim=40, text_embed_2_dim=24,
                         rope_axes_dim=(8, 8)),
    "hunyuanvideo15": dict(HUNYUANVIDEO15, num_layers=1, num_refiner_layers=1, in_channels=9,
                           out_channels=4, attention_head_dim=16, num_attention_heads=2,
                           text_embed_dim=40, text_embed_2_dim=24, image_embed_dim=24,
                           rope_axes_dim=(4, 6, 6)),
    # tests/ltx2_transformer_tiny.py's widths: each head's 10 features 3 frequencies an axis
    "ltx2": dict(LTX2, num_layers=1, num_attention_heads=2, attention_head_dim=10,
                 cross_attention_dim=20, audio_num_attention_heads=2, audio_attention_head_dim=6,
                 audio_cross_attention_dim=12, in_channels=8, out_channels=8,
                 audio_in_channels=6, audio_out_channels=6, caption_channels=20),
    # grouped-query attention kept (4 query heads for 2 key/value heads), head dim 12
    "lumina2": dict(LUMINA2, hidden_size=48, num_layers=1, num_refiner_layers=1,
                    num_attention_heads=4, num_kv_heads=2, multiple_of=16,
                    axes_dim_rope=(4, 4, 4), cap_feat_dim=40),
    "hunyuanvideo": dict(HUNYUANVIDEO, in_channels=4, out_channels=4, num_attention_heads=2,
                         attention_head_dim=16, num_layers=1, num_single_layers=1,
                         num_refiner_layers=1, text_embed_dim=40, pooled_projection_dim=24,
                         rope_axes_dim=(4, 6, 6)),
    "longcat": dict(LONGCAT, **_TINY_DIT, num_single_layers=1, joint_attention_dim=40,
                    pooled_projection_dim=40, axes_dims_rope=(4, 6, 6)),
    "ovis": dict(OVIS, **_TINY_DIT, num_single_layers=1, joint_attention_dim=40,
                 axes_dims_rope=(4, 6, 6)),
    "bria": dict(BRIA, **_TINY_DIT, num_single_layers=1, joint_attention_dim=40,
                 axes_dims_rope=[0, 8, 8]),
    # a dense block and a mixture of 4 experts each taking every token (capacity factor 4 of
    # 4 experts), so no near-equal float16 score can reorder a choice against torch's float32
    "nucleus": dict(NUCLEUS, in_channels=16, out_channels=4, num_layers=2, attention_head_dim=16,
                    num_attention_heads=2, num_key_value_heads=1, joint_attention_dim=40,
                    axes_dims_rope=(4, 6, 6), mlp_ratio=8.0,
                    dense_moe_strategy="leave_first_block_dense", num_experts=4,
                    moe_intermediate_dim=24, capacity_factors=[0.0, 4.0]),
    "fibo": dict(FIBO, **_TINY_DIT, num_single_layers=3, joint_attention_dim=40,
                 text_encoder_dim=20, axes_dims_rope=[4, 6, 6]),
    "prx": dict(PRX, hidden_size=48, num_heads=4, depth=1, context_in_dim=40, axes_dim=[6, 6]),

    "cogview4": dict(COGVIEW4, num_layers=1, attention_head_dim=16, num_attention_heads=2,
                     text_embed_dim=40, time_embed_dim=24, condition_dim=8),
    "cosmos2": dict(COSMOS2, num_layers=1, attention_head_dim=16, num_attention_heads=2,
                    text_embed_dim=40, adaln_lora_dim=8),
    "ideogram4": dict(IDEOGRAM4, num_layers=1, attention_head_dim=16, num_attention_heads=2,
                      intermediate_size=48, adaln_dim=24, llm_features_dim=520,
                      mrope_section=(2, 2, 2)),
    "auraflow": dict(AURAFLOW, num_mmdit_layers=1, num_single_dit_layers=1,
                     attention_head_dim=16, num_attention_heads=2, joint_attention_dim=40,
                     caption_projection_dim=32, pos_embed_max_size=64),
    "ernie": dict(ERNIE, hidden_size=32, num_attention_heads=2, num_layers=1,
                  ffn_hidden_size=48, in_channels=16, out_channels=16, text_in_dim=40,
                  rope_axes_dim=(4, 6, 6)),
    # 4 experts top 2 kept; a stack of 3 Llama layers read out of order (T5 24 wide, Llama 20)
    "hidream": dict(HIDREAM, num_layers=1, num_single_layers=1, attention_head_dim=8,
                    num_attention_heads=4, caption_channels=[24, 20], text_emb_dim=16,
                    axes_dims_rope=(4, 2, 2), llama_layers=[2, 0]),
    "pixart": dict(PIXART_SIGMA, num_attention_heads=2, attention_head_dim=12, num_layers=1,
                   cross_attention_dim=24, caption_channels=40, sample_size=8),
    # Sana's cross-attention heads wider than its linear-attention heads, as the real model's
    "sana": dict(SANA_1600M, num_attention_heads=2, attention_head_dim=8, num_layers=1,
                 num_cross_attention_heads=2, cross_attention_head_dim=12,
                 cross_attention_dim=16, caption_channels=24, sample_size=8),
    "sana4k": dict(SANA_4K, num_attention_heads=2, attention_head_dim=8, num_layers=1,
                   num_cross_attention_heads=2, cross_attention_head_dim=12,
                   cross_attention_dim=16, caption_channels=24, sample_size=12),
    # heads 16 wide: mrope_section's three axes each turn some of the 8 frequencies
    "qwen3vl_8b": dict(QWEN3VL_8B, vocab_size=512, hidden_size=48, intermediate_size=80,
                       num_hidden_layers=3, num_attention_heads=4, num_key_value_heads=2,
                       head_dim=16, rope_parameters=dict(QWEN3VL_8B["rope_parameters"],
                                                         mrope_section=[4, 2, 2])),
}


@dataclass(frozen=True)
class Model:
    """A row's model: how each side builds it and calls it on the inputs."""

    config: dict[str, Any]
    reference: Callable[[Any, Any, dict[str, Any]], Any]  # (diffusers, transformers, config)
    # the torch call of (reference, inputs on torch's device)
    torch_call: Callable[[Any, dict[str, Any]], Any]
    ours: Callable[[dict[str, Any], Any, gpucore.Device], Any]  # (config, dtype, device)
    ours_call: Callable[[Any, dict[str, Any], Any], Any]  # (model, numpy inputs, dtype)
    # a prompt's part computed once before the steps (Qwen-Image 2.1's keys and values):
    # torch's keeps its result in its inputs, ours returns what ours_call reads as "prefix"
    torch_prefix: Callable[[Any, dict[str, Any]], Any] | None = None
    ours_prefix: Callable[[Any, dict[str, Any], Any], Any] | None = None
