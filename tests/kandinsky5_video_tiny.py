"""A tiny random Kandinsky 5 Video Lite folder built in-process: diffusers' Kandinsky5T2VPipeline
of kandinsky5_tiny's transformer with a visual condition (its latents beside an empty
condition and mask, as the Lite video transformer reads them), hunyuan_video_vae_tiny's VAE
(4x spatial and temporal compression) and kandinsky5_text_tiny's text encoders and tokenizers,
saved as diffusers saves it. The tiny tokenizer (300 tokens) holds the picture template's words
and the video template's most frequent ones, not all: the video template splits into 289
tokens, not Qwen's 128, so the kept states start with its tail (both sides drop the same 128)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hunyuan_video_vae_tiny import HUNYUAN_VIDEO_VAE_TINY, tiny_hunyuan_video_vae
from kandinsky5_text_tiny import TEMPLATE_WORDS, tiny_kandinsky5_text_pipeline
from kandinsky5_tiny import tiny_kandinsky5_transformer

SHIFT = 5.0  # the Lite folders' scheduler shift
# as many of the video template's words as the tiny vocabulary leaves room for
VIDEO_WORDS = [*TEMPLATE_WORDS, "Describe", " video", " camera", " describe", " whether",
               " presented", " actions", " visual", " content", " postprocessing",
               " transitions", " dynamism", " location", " characters", " professional"]


def tiny_kandinsky5_video_pipeline(root: Path) -> Any:
    """The tiny Kandinsky5T2VPipeline, saved to `root / "kandinsky5-video"` (model_index.json
    naming the tokenizer as diffusers writes it for the real one); returns the pipeline."""
    import diffusers

    channels = HUNYUAN_VIDEO_VAE_TINY["latent_channels"]
    text = tiny_kandinsky5_text_pipeline(root, VIDEO_WORDS)
    pipe = diffusers.Kandinsky5T2VPipeline(
        transformer=tiny_kandinsky5_transformer(in_visual_dim=channels,
                                                out_visual_dim=channels, visual_cond=True),
        vae=tiny_hunyuan_video_vae(), text_encoder=text.text_encoder,
        tokenizer=text.tokenizer, text_encoder_2=text.text_encoder_2,
        tokenizer_2=text.tokenizer_2,
        scheduler=diffusers.FlowMatchEulerDiscreteScheduler(shift=SHIFT))
    processor = pipe.tokenizer
    # the processor's own save needs its image and video processors: its tokenizer's files
    pipe.register_modules(tokenizer=processor.tokenizer)
    folder = root / "kandinsky5-video"
    pipe.save_pretrained(folder)
    pipe.register_modules(tokenizer=processor)
    index = json.loads((folder / "model_index.json").read_text())
    index["tokenizer"] = ["transformers", "Qwen2VLProcessor"]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2))
    return pipe
