"""A tiny random HunyuanVideo-I2V pipeline built in-process (diffusers, transformers):
diffusers' HunyuanVideoImageToVideoPipeline of a tiny LLaVA (transformers'
LlavaForConditionalGeneration: a 2-layer CLIP ViT/14 at 336 pixels, the real model's 576
picture tokens, the projector, hunyuan_video_tiny's Llama), hunyuan_video_text_tiny's Llama 3
shaped tokenizer holding the image-to-video template's words, its chat headers and <image> as
whole tokens (so that <image> is token 5 and the template's part before the prompt 103
tokens, as Llama 3's real tokenizer splits them), CLIP's image processor at 336, and
hunyuan_video_tiny's transformer (token_replace, 4 latent channels; latent_concat: 9) with
hunyuan_video_vae_tiny's VAE; saved by diffusers as a folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hunyuan_video_pipe_tiny import SHIFT
from hunyuan_video_text_tiny import tiny_hunyuan_video_text, tiny_llama_tokenizer
from hunyuan_video_tiny import LLAMA_TINY, tiny_hunyuan_video_transformer
from hunyuan_video_vae_tiny import tiny_hunyuan_video_vae
from sd_tiny import randomized

SPECIAL = ("<image>", "\n\n", "system", "user", "assistant")
VISION_TINY: dict[str, Any] = dict(
    hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=2,
    image_size=336, patch_size=14, projection_dim=32)


def tiny_llava(image_token_index: int, seed: int = 47) -> Any:
    """transformers' LlavaForConditionalGeneration of VISION_TINY and LLAMA_TINY, random
    weights (the projector scaled so that the picture visibly moves the prompt's states)."""
    import transformers

    config = transformers.LlavaConfig(
        vision_config=transformers.CLIPVisionConfig(**VISION_TINY),
        text_config=transformers.LlamaConfig(**LLAMA_TINY), image_token_index=image_token_index,
        projector_hidden_act="gelu", vision_feature_layer=-2,
        vision_feature_select_strategy="default", pad_token_id=LLAMA_TINY["pad_token_id"])
    return randomized(transformers.LlavaForConditionalGeneration(config), seed, scale=0.6)


def tiny_hunyuan_video_i2v_text(root: Path) -> dict[str, Any]:
    """The pipeline's text and picture parts by diffusers' names."""
    import transformers

    from diffusion.models.hunyuan_video_i2v_prompt import I2V_TEMPLATE

    parts = tiny_hunyuan_video_text(root)
    tokenizer = tiny_llama_tokenizer(root / "llava-tokenizer", I2V_TEMPLATE, SPECIAL)
    image_processor = transformers.CLIPImageProcessorPil(
        size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336})
    return {**parts, "tokenizer": tokenizer, "image_processor": image_processor,
            "text_encoder": tiny_llava(tokenizer.convert_tokens_to_ids("<image>"))}


def tiny_hunyuan_video_i2v_pipeline(root: Path, name: str = "hunyuan-video-i2v",
                                    condition: str = "token_replace") -> Any:
    """The tiny HunyuanVideoImageToVideoPipeline saved to `root / name`; returns it."""
    import diffusers

    channels = 4 if condition == "token_replace" else 2 * 4 + 1
    transformer = tiny_hunyuan_video_transformer(image_condition_type=condition,
                                                 in_channels=channels)
    pipe = diffusers.HunyuanVideoImageToVideoPipeline(
        transformer=transformer, vae=tiny_hunyuan_video_vae(),
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=SHIFT),
        **tiny_hunyuan_video_i2v_text(root))
    pipe.save_pretrained(root / name)
    return pipe
