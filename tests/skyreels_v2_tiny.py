"""Tiny random SkyReels V2 components built in-process (diffusers): the transformer (text-,
image-to-video and diffusion forcing, the last with the fps embedding) and whole pipeline
folders (SkyReelsV2Pipeline, SkyReelsV2ImageToVideoPipeline,
SkyReelsV2DiffusionForcingPipeline) of Wan's tiny VAE, UMT5 and CLIP vision (wan_tiny)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sd_tiny import randomized
from wan_tiny import CLIP_VISION_TINY, WAN_SCHEDULER, WAN_TINY, tiny_umt5, tiny_wan_vae

# Wan's tiny sizes; the diffusion forcing model adds the fps embedding
SKYREELS_TINY: dict[str, Any] = dict(WAN_TINY)
SKYREELS_DF_TINY: dict[str, Any] = dict(WAN_TINY, inject_sample_info=True)
SKYREELS_I2V_TINY: dict[str, Any] = dict(
    WAN_TINY, in_channels=12, image_dim=CLIP_VISION_TINY["hidden_size"], added_kv_proj_dim=24)


def tiny_skyreels_transformer(config: dict[str, Any] = SKYREELS_DF_TINY, seed: int = 21) -> Any:
    """diffusers' SkyReelsV2Transformer3DModel of `config`, random weights scaled so the text
    (and the image, the fps) visibly matter."""
    import diffusers

    return randomized(diffusers.SkyReelsV2Transformer3DModel(**config), seed, scale=0.3)


def _tokenizer(root: Path) -> Any:
    import transformers
    from flow_tiny import tiny_t5_tokenizer

    tiny_t5_tokenizer(root / "umt5-tokenizer")
    return transformers.T5TokenizerFast(
        tokenizer_file=str(root / "umt5-tokenizer" / "tokenizer.json"))


def tiny_skyreels_pipeline(root: Path, kind: str = "t2v") -> Any:
    """diffusers' SkyReels V2 pipeline of tiny random parts saved to `root / "skyreels-KIND"`
    (kind: "t2v" SkyReelsV2Pipeline, "i2v" SkyReelsV2ImageToVideoPipeline with a
    CLIPVisionModelWithProjection, "df" SkyReelsV2DiffusionForcingPipeline); returns it."""
    import diffusers
    import transformers

    scheduler = diffusers.UniPCMultistepScheduler(**{**WAN_SCHEDULER, "flow_shift": 8.0})
    parts = dict(tokenizer=_tokenizer(root), text_encoder=tiny_umt5(), vae=tiny_wan_vae(),
                 scheduler=scheduler)
    if kind == "i2v":
        encoder = randomized(transformers.CLIPVisionModelWithProjection(
            transformers.CLIPVisionConfig(**CLIP_VISION_TINY)), 12)
        processor = transformers.CLIPImageProcessor(
            size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
        pipe = diffusers.SkyReelsV2ImageToVideoPipeline(
            **parts, transformer=tiny_skyreels_transformer(SKYREELS_I2V_TINY, 22),
            image_encoder=encoder, image_processor=processor)
    elif kind == "df":
        pipe = diffusers.SkyReelsV2DiffusionForcingPipeline(
            **parts, transformer=tiny_skyreels_transformer(SKYREELS_DF_TINY, 23))
    else:
        pipe = diffusers.SkyReelsV2Pipeline(
            **parts, transformer=tiny_skyreels_transformer(SKYREELS_TINY, 24))
    pipe.save_pretrained(root / f"skyreels-{kind}")
    return pipe
