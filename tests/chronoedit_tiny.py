"""Tiny random ChronoEdit components built in-process (diffusers, transformers): the
transformer (Wan 2.1 I2V's, its rotary positions of a 2-frame latent video spread apart) and
a whole ChronoEditPipeline folder (UMT5, CLIP vision, the Wan VAE, flow UniPC)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sd_tiny import randomized
from wan_tiny import CLIP_VISION_TINY, WAN_SCHEDULER, WAN_TINY, tiny_umt5, tiny_wan_vae

# Wan 2.1 I2V's transformer, tiny: the noise, the 4-channel mask and the picture's latents
# (4 + 4 + 4 channels), CLIP's states; the edit's last latent frame at rotary position 5
# (the real model's 8 would do as well: any skip other than 2 moves the positions)
CHRONOEDIT_TINY: dict[str, Any] = {
    **WAN_TINY, "in_channels": 12, "image_dim": CLIP_VISION_TINY["hidden_size"],
    "added_kv_proj_dim": 24, "rope_temporal_skip_len": 6}


def tiny_chronoedit_transformer(seed: int = 13) -> Any:
    """diffusers' ChronoEditTransformer3DModel of CHRONOEDIT_TINY, random weights scaled so
    the text and the picture visibly matter."""
    import diffusers
    import torch

    model = randomized(diffusers.ChronoEditTransformer3DModel(**CHRONOEDIT_TINY), seed,
                       scale=0.3)
    # the prompt's few tokens among 512 (the rest zero padding) barely move a random model:
    # its text states and cross-attention keys and values made larger until they do
    with torch.no_grad():
        model.condition_embedder.text_embedder.linear_2.weight.mul_(3)
        for block in model.blocks:
            block.attn2.to_k.weight.mul_(2)
            block.attn2.to_v.weight.mul_(2)
    return model


def tiny_chronoedit_pipeline(root: Path) -> Any:
    """diffusers' ChronoEditPipeline of tiny random parts saved to `root / "chronoedit"`;
    returns it."""
    import diffusers
    import transformers
    from flow_tiny import tiny_t5_tokenizer

    tiny_t5_tokenizer(root / "umt5-tokenizer")
    tokenizer = transformers.T5TokenizerFast(
        tokenizer_file=str(root / "umt5-tokenizer" / "tokenizer.json"))
    encoder = randomized(transformers.CLIPVisionModel(
        transformers.CLIPVisionConfig(**CLIP_VISION_TINY)), 14)
    processor = transformers.CLIPImageProcessor(
        size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    pipe = diffusers.ChronoEditPipeline(
        tokenizer=tokenizer, text_encoder=tiny_umt5(), image_encoder=encoder,
        image_processor=processor, transformer=tiny_chronoedit_transformer(),
        vae=tiny_wan_vae(), scheduler=diffusers.UniPCMultistepScheduler(**WAN_SCHEDULER))
    pipe.save_pretrained(root / "chronoedit")
    return pipe
