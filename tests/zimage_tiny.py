"""Tiny random Z-Image components built in-process (transformers, diffusers, tokenizers): a
Qwen3 text model, a Qwen-shaped byte-level BPE tokenizer.json with Qwen3's chat template, a
Z-Image transformer, and a whole ZImagePipeline folder."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from flow_tiny import CORPUS
from sd_tiny import VAE_TINY, randomized

QWEN3_TINY: dict[str, Any] = dict(
    vocab_size=300, hidden_size=40, intermediate_size=56, num_hidden_layers=3,
    num_attention_heads=4, num_key_value_heads=2, head_dim=12, rms_norm_eps=1e-6,
    max_position_embeddings=1024, tie_word_embeddings=False)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>"]
# Qwen3's chat template, the branches one user message and the generation prompt take
# (system prompts, tools and assistant turns left out)
QWEN3_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) %}"
    "{{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}")


def tiny_qwen3(seed: int = 3, config: dict[str, Any] | None = None) -> Any:
    import transformers

    return randomized(transformers.Qwen3Model(transformers.Qwen3Config(
        **{**QWEN3_TINY, **(config or {})})), seed)


def tiny_qwen_tokenizer(folder: Path, vocab_size: int = QWEN3_TINY["vocab_size"]) -> Path:
    """A Qwen-shaped tokenizer.json (byte-level BPE over CORPUS, Qwen's special tokens after
    the merges, <|endoftext|> the padding) and its tokenizer_config.json in `folder`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from tokenizers.trainers import BpeTrainer

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(CORPUS * 10, BpeTrainer(
        vocab_size=vocab_size - len(SPECIAL),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tokenizer.add_special_tokens(SPECIAL)
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "pad_token": "<|endoftext|>", "eos_token": "<|im_end|>", "model_max_length": 512,
        "chat_template": QWEN3_TEMPLATE, "tokenizer_class": "Qwen2Tokenizer"}))
    return folder


def tiny_qwen_tokenizer_with(folder: Path, words: list[str], *, special: bool = False) -> Path:
    """tiny_qwen_tokenizer's with `words` added after its own tokens (the vocabulary stays
    QWEN3_TINY's) in `folder`: a template's words as whole tokens, as Qwen's real BPE holds
    them (so a template splits into as many tokens as the pipeline drops), or `special`
    tokens (Qwen-VL's vision tokens)."""
    from tokenizers import Tokenizer

    tiny_qwen_tokenizer(folder, vocab_size=QWEN3_TINY["vocab_size"] - len(words))
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    (tokenizer.add_special_tokens if special else tokenizer.add_tokens)(words)
    tokenizer.save(str(folder / "tokenizer.json"))
    return folder


def transformers_tokenizer(folder: Path) -> Any:
    """transformers' tokenizer of `folder` (tiny_qwen_tokenizer's), as pipelines load it."""
    import transformers

    return transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(folder / "tokenizer.json"), pad_token="<|endoftext|>",
        eos_token="<|im_end|>", chat_template=QWEN3_TEMPLATE, model_max_length=512)


ZIMAGE_TINY: dict[str, Any] = dict(
    all_patch_size=(2,), all_f_patch_size=(1,), in_channels=4, dim=48, n_layers=2,
    n_refiner_layers=1, n_heads=4, n_kv_heads=4, norm_eps=1e-5, qk_norm=True,
    cap_feat_dim=QWEN3_TINY["hidden_size"], rope_theta=256.0, t_scale=1000.0,
    axes_dims=(4, 4, 4), axes_lens=(600, 64, 64))


def tiny_zimage_transformer(seed: int = 7) -> Any:
    """diffusers' ZImageTransformer2DModel of ZIMAGE_TINY, random weights scaled so the
    caption visibly matters."""
    import diffusers

    return randomized(diffusers.ZImageTransformer2DModel(**ZIMAGE_TINY), seed, scale=0.3)


ZIMAGE_OMNI_TINY: dict[str, Any] = {**ZIMAGE_TINY, "siglip_feat_dim": 24}


def tiny_zimage_omni_transformer(seed: int = 8) -> Any:
    """diffusers' ZImageTransformer2DModel of ZIMAGE_OMNI_TINY (Omni's SigLIP parts), random
    weights scaled as tiny_zimage_transformer's."""
    import diffusers

    return randomized(diffusers.ZImageTransformer2DModel(**ZIMAGE_OMNI_TINY), seed, scale=0.3)


def tiny_zimage_pipeline(root: Path) -> Any:
    """diffusers' ZImagePipeline of tiny random parts (Qwen3 40 wide, 4-channel latents, a
    VAE without quant convs and with FLUX's shift, Turbo's constant shift 3), saved to
    `root / "z-image-turbo"` (a Turbo by its name); returns the pipeline."""
    import diffusers

    tokenizer = transformers_tokenizer(tiny_qwen_tokenizer(root / "qwen-tokenizer"))
    vae = randomized(diffusers.AutoencoderKL(
        **VAE_TINY, use_quant_conv=False, use_post_quant_conv=False, scaling_factor=0.3611,
        shift_factor=0.1159), 2)
    pipe = diffusers.ZImagePipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=tiny_qwen3(), tokenizer=tokenizer, transformer=tiny_zimage_transformer())
    pipe.save_pretrained(root / "z-image-turbo")
    return pipe


SIGLIP2_TINY: dict[str, Any] = dict(
    hidden_size=ZIMAGE_OMNI_TINY["siglip_feat_dim"], intermediate_size=32, num_hidden_layers=1,
    num_attention_heads=2, patch_size=8, num_patches=16)
VISION_TOKENS = ["<|vision_start|>", "<|vision_end|>"]


def tiny_zimage_omni_pipeline(root: Path) -> Any:
    """diffusers' ZImageOmniPipeline of tiny random parts (tiny_zimage_pipeline's, a VAE of 4x
    downsampling (diffusers takes condition pictures of 64 pixels a side or more), an Omni
    transformer, a SigLIP2 vision tower of 8-pixel patches reading at most 12 of them, Qwen's
    vision tokens in the tokenizer, the scheduler's default shifts by size), saved to
    `root / "z-image-omni"`; returns the pipeline."""
    import diffusers
    import transformers
    from transformers.models.siglip2.image_processing_pil_siglip2 import (
        Siglip2ImageProcessorPil,
    )

    folder = tiny_qwen_tokenizer_with(root / "omni-tokenizer", VISION_TOKENS, special=True)
    vae = randomized(diffusers.AutoencoderKL(**{
        **VAE_TINY, "block_out_channels": (32,) * 3, "down_block_types": (
            "DownEncoderBlock2D",) * 3, "up_block_types": ("UpDecoderBlock2D",) * 3},
        use_quant_conv=False, use_post_quant_conv=False, scaling_factor=0.3611,
        shift_factor=0.1159), 2)
    siglip = randomized(transformers.Siglip2VisionModel(
        transformers.Siglip2VisionConfig(**SIGLIP2_TINY)), 4, scale=0.6)
    pipe = diffusers.ZImageOmniPipeline(
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(use_dynamic_shifting=True),
        vae=vae, text_encoder=tiny_qwen3(), tokenizer=transformers_tokenizer(folder),
        transformer=tiny_zimage_omni_transformer(), siglip=siglip,
        siglip_processor=Siglip2ImageProcessorPil(patch_size=8, max_num_patches=12))
    pipe.save_pretrained(root / "z-image-omni")
    return pipe


def original_layout(transformer: Any, prefix: str = "model.diffusion_model.") -> dict[str, Any]:
    """A diffusers ZImageTransformer2DModel's tensors in the original repository's layout (what
    ComfyUI loads): fused attention.qkv, attention.out, q_norm / k_norm, x_embedder and
    final_layer, under `prefix`."""
    import torch

    state = {k: v.detach().clone().contiguous() for k, v in transformer.state_dict().items()}
    out = {}
    for key, value in state.items():
        if ".attention.to_k." in key or ".attention.to_v." in key:
            continue
        if ".attention.to_q." in key:
            parts = [state[key.replace("to_q", name)] for name in ("to_q", "to_k", "to_v")]
            key, value = key.replace("to_q", "qkv"), torch.cat(parts)
        for new, old in (("x_embedder.", "all_x_embedder.2-1."),
                         ("final_layer.", "all_final_layer.2-1."),
                         (".attention.out.", ".attention.to_out.0."),
                         (".attention.q_norm.", ".attention.norm_q."),
                         (".attention.k_norm.", ".attention.norm_k.")):
            key = key.replace(old, new)
        out[prefix + key] = value
    return out
