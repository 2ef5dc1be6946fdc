"""Tiny random HunyuanVideo 1.5 pipelines built in-process (diffusers, transformers): the
text-to-video HunyuanVideo15Pipeline and the HunyuanVideo15ImageToVideoPipeline of the tiny
transformer (hunyuan_video15_tiny), VAE (hunyuan_video15_vae_tiny), Qwen2.5-VL text model,
tokenizer (hunyuan_video15_text_tiny) and ByT5 (hunyuanimage_parts_tiny); image to video adds
a one-layer SigLIP of 24-wide states on 28 x 28 pictures (4 tokens). Saved by diffusers as
a folder, which the pipelines under test load."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hunyuan_video15_text_tiny import tiny_qwen25vl_text, tiny_video_tokenizer
from hunyuan_video15_tiny import tiny_hunyuan_video15_transformer
from hunyuan_video15_vae_tiny import tiny_hunyuan_video15_vae
from hunyuanimage_parts_tiny import byt5_tokenizer, tiny_byt5
from sd_tiny import randomized

# the buckets of a 32-pixel target in 8-pixel patches (the tiny VAE's factor): 16 patches,
# e.g. 32 x 32, 24 x 40 (a 480p model's is 640)
TARGET_SIZE = 32
SIGLIP_TINY: dict[str, Any] = dict(hidden_size=24, intermediate_size=32, num_hidden_layers=1,
                                   num_attention_heads=2, image_size=28, patch_size=14)
SCHEDULER_TINY: dict[str, Any] = dict(shift=5.0)  # the 480p checkpoints' shift
GUIDANCE = 6.0  # the t2v and i2v checkpoints' guider scale


def tiny_siglip() -> Any:
    """transformers' SiglipVisionModel of SIGLIP_TINY, random, and its SiglipImageProcessor
    (28 x 28, bicubic, mean = std = 0.5)."""
    import transformers

    model = randomized(transformers.SiglipVisionModel(
        transformers.SiglipVisionConfig(**SIGLIP_TINY)), 41, scale=0.5)
    # the Pillow backend named: SiglipImageProcessor means torchvision's wherever torchvision is
    # installed (a GPU machine's torch), whose bicubic resize is not Pillow's (ours)
    processor = transformers.SiglipImageProcessorPil(size={"height": 28, "width": 28})
    return model, processor


def tiny_hunyuan_video15_pipeline(root: Path, *, image_to_video: bool = False,
                                  **transformer: Any) -> Any:
    """diffusers' HunyuanVideo15Pipeline (HunyuanVideo15ImageToVideoPipeline with
    `image_to_video`) of the tiny parts (the transformer's `transformer` overrides, e.g.
    use_meanflow), saved to `root / "hv15"`; returns the pipeline."""
    import diffusers
    from diffusers.guiders import ClassifierFreeGuidance

    parts: dict[str, Any] = dict(
        transformer=tiny_hunyuan_video15_transformer(target_size=TARGET_SIZE, **transformer),
        vae=tiny_hunyuan_video15_vae(), text_encoder=tiny_qwen25vl_text(),
        tokenizer=tiny_video_tokenizer(root / "qwen-tokenizer"), text_encoder_2=tiny_byt5(),
        tokenizer_2=byt5_tokenizer(),
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(**SCHEDULER_TINY),
        guider=ClassifierFreeGuidance(guidance_scale=GUIDANCE))
    if image_to_video:
        parts["image_encoder"], parts["feature_extractor"] = tiny_siglip()
        pipe = diffusers.HunyuanVideo15ImageToVideoPipeline(**parts)
    else:
        pipe = diffusers.HunyuanVideo15Pipeline(**parts)
    pipe.save_pretrained(root / "hv15")
    return pipe
