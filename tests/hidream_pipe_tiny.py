"""A tiny random HiDream-I1 pipeline built in-process (diffusers, transformers): diffusers'
HiDreamImagePipeline of hidream_tiny's transformer (4 latent channels, max_resolution 8 x 8
latents), a VAE with FLUX's scale and shift (2x compression) and hidream_text_tiny's four
text encoders, with HiDream-I1 Full's scheduler (UniPC on flow sigmas, flow_shift 3) or a
flow-matching Euler one; saved by diffusers as a folder, which the pipeline under test
loads. `SIDE`: the picture side whose area diffusers keeps (its default_sample_size set to
it), so that both draw the same size."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hidream_text_tiny import tiny_hidream_text
from hidream_tiny import tiny_hidream_transformer
from sd_tiny import VAE_TINY, randomized

SIDE = 16  # pixels: 8 x 8 latents, the tiny transformer's max_resolution
FULL_SCHEDULER: dict[str, Any] = dict(
    num_train_timesteps=1000, prediction_type="flow_prediction", use_flow_sigmas=True,
    flow_shift=3.0)


def tiny_hidream_pipeline(root: Path, name: str = "hidream", *, euler_shift: float | None = None,
                          lcm: bool = False) -> Any:
    """The tiny HiDreamImagePipeline saved to `root / name` (UniPC as HiDream-I1 Full's, or
    FlowMatchEulerDiscreteScheduler(shift=euler_shift), or with `lcm` FlowMatchLCMScheduler of
    that shift, as Dev's folder now names); returns the pipeline, its default_sample_size made
    SIDE's."""
    import diffusers

    vae = randomized(diffusers.AutoencoderKL(
        **VAE_TINY, use_quant_conv=False, use_post_quant_conv=False, scaling_factor=0.3611,
        shift_factor=0.1159), 2)
    flow = diffusers.FlowMatchLCMScheduler if lcm else diffusers.FlowMatchEulerDiscreteScheduler
    scheduler = (diffusers.UniPCMultistepScheduler(**FULL_SCHEDULER) if euler_shift is None
                 else flow(shift=euler_shift))
    pipe = diffusers.HiDreamImagePipeline(transformer=tiny_hidream_transformer(), vae=vae,
                                          scheduler=scheduler, **tiny_hidream_text(root))
    pipe.save_pretrained(root / name)
    pipe.default_sample_size = SIDE // pipe.vae_scale_factor
    return pipe
