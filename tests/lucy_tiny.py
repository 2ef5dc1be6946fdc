"""A tiny random Lucy Edit folder built in-process (diffusers' LucyEditPipeline of Wan 2.2
TI2V 5B's layout: its VAE, per-token timesteps, UMT5), the transformer reading the noise and
the input video's latents side by side (in_channels twice the VAE's latent channels)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sd_tiny import randomized
from wan_tiny import WAN22_VAE_TINY, WAN_SCHEDULER, WAN_TINY, tiny_umt5, tiny_wan22_vae

# Lucy-Edit-Dev's scheduler: Wan 2.2 TI2V 5B's UniPC on flow sigmas, its shift 5
LUCY_SCHEDULER: dict[str, Any] = {**WAN_SCHEDULER, "flow_shift": 5.0}
LUCY_CHANNELS = WAN22_VAE_TINY["z_dim"]
VIDEO_GAIN = 3.0


def tiny_lucy_pipeline(root: Path) -> Any:
    """diffusers' LucyEditPipeline of tiny random parts saved to `root / "lucy"`; returns it
    (its prompt cleaning needs ftfy: the caller patches it where ftfy is missing)."""
    import diffusers
    import torch
    import transformers
    from flow_tiny import tiny_t5_tokenizer

    tiny_t5_tokenizer(root / "umt5-tokenizer")
    tokenizer = transformers.T5TokenizerFast(
        tokenizer_file=str(root / "umt5-tokenizer" / "tokenizer.json"))
    # scale 0.3 and the video's gain: the prompt and the video both visibly move the frames
    transformer = randomized(diffusers.WanTransformer3DModel(
        **{**WAN_TINY, "in_channels": 2 * LUCY_CHANNELS, "out_channels": LUCY_CHANNELS}),
        13, scale=0.3)
    with torch.no_grad():  # the video's latents read louder: the tiny VAE's are faint
        transformer.patch_embedding.weight[:, LUCY_CHANNELS:] *= VIDEO_GAIN
    pipe = diffusers.LucyEditPipeline(
        tokenizer=tokenizer, text_encoder=tiny_umt5(), transformer=transformer,
        vae=tiny_wan22_vae(), scheduler=diffusers.UniPCMultistepScheduler(**LUCY_SCHEDULER),
        expand_timesteps=True)
    pipe.save_pretrained(root / "lucy")
    return pipe
