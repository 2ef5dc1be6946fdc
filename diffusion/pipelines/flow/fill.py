"""FLUX.1 Fill: inpainting and outpainting, as diffusers' FluxFillPipeline draws it. The
transformer is FLUX.1 dev's with a wider input: beside each packed 2x2 patch of the noisy
latents ride the same patch of the masked picture's latents (the picture with the repainted
part grey, through the VAE) and the 8x8 pixels of the mask under each latent pixel, packed the
same way (`fill_condition`): 64 + 64 + 256 = 384 channels at FLUX's 16-channel latents and 8x
VAE. The prediction is the noise's 64 channels alone. The run starts from the picture noised to
the strength's first sigma (1, diffusers' default: pure noise), and nothing is blended back: the
model itself keeps what the mask keeps.

    pipe = FluxFillPipeline.from_pretrained("FLUX.1-Fill-dev")
    images = pipe("a red sofa", image=room, mask_image=mask, height=1024, width=1024)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ...imaging import to_mask
from ...models.step_cache import StepCache
from ...noise.rng import make_generator
from ...sampling.model_sampling import calculate_shift
from ...sampling.scheduler_loop import scheduler_loop
from ..finite import check_encoded
from .flow_control import FlowControl
from .flux import FluxPipeline, pack_latents
from .start import FlowStart, StepCallback, check_call, decode, encode_image, flow_schedule

__all__ = ["FluxFillPipeline", "fill_condition", "fill_mask_channels"]


def fill_mask_channels(vae_scale_factor: int) -> int:
    """The packed mask's channels per token: the scale factor's square of pixels under each
    latent pixel, times the 2x2 patch (256 for FLUX's 8x VAE)."""
    return 4 * vae_scale_factor ** 2


def fill_condition(masked_latents: np.ndarray, mask: np.ndarray, vae_scale_factor: int
                   ) -> np.ndarray:
    """The tokens' Fill channels (B, h/2 * w/2, 4C + 4 s^2): the masked picture's latents
    (B, C, h, w) packed, then the mask (B or 1, 1, h s, w s; 1 = repaint) with each latent
    pixel's s x s pixels as channels, packed. diffusers: `FluxFillPipeline.
    prepare_mask_latents`' two outputs concatenated on the last axis."""
    b, _, h, w = masked_latents.shape
    s = vae_scale_factor
    pixels = np.broadcast_to(mask[:, 0], (b, h * s, w * s)).reshape(b, h, s, w, s)
    channels = pixels.transpose(0, 2, 4, 1, 3).reshape(b, s * s, h, w)
    return np.concatenate([pack_latents(masked_latents), pack_latents(channels)],
                          axis=2).astype(np.float32)


class FluxFillPipeline(FluxPipeline):
    """FLUX.1 Fill on gpustd: FluxPipeline's parts (a FluxFillPipeline folder or BFL's
    `flux1-fill-dev.safetensors` loads with `from_pretrained`), drawing from a picture and a
    mask."""

    def fill_tokens(self, pixels: np.ndarray, mask: np.ndarray, generator: Any = None
                    ) -> np.ndarray:
        """The Fill channels (1, N, 4C + 4 s^2) of `pixels` (1, 3, H, W) in [-1, 1] under
        `mask` (1, 1, H, W; 1 = repaint): the masked picture's latents a posterior draw from
        `generator`, or its mean without one."""
        masked = pixels * (mask < 0.5)
        if generator is None:
            from ...models.tiled_vae import vae_encode

            mean, _ = vae_encode(self.vae, masked.astype(np.float32))
            check_encoded(mean, self.vae)
            latents = (mean - np.float32(self.vae.shift_factor)) * np.float32(
                self.vae.scaling_factor)
        else:
            latents = encode_image(self.vae, masked, generator)
        return fill_condition(latents.astype(np.float32), mask, self.vae_scale_factor)

    def velocity(self, prompts: Sequence[str], *, height: int, width: int,
                 guidance_scale: float = 3.5, max_sequence_length: int = 512,
                 cache: StepCache | None = None, control: FlowControl | None = None,
                 control_latents: np.ndarray | None = None,
                 condition: np.ndarray | None = None
                 ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...], float]:
        """FluxPipeline.velocity with the Fill channels `condition` (1 or B, N, ...;
        `fill_tokens`) beside every call's noise tokens; the latents have the transformer's
        output channels / 4. No ControlNet units (`control`) or Canny/Depth maps
        (`control_latents`: Fill's own channels take their place) yet."""
        if control is not None or control_latents is not None:
            raise ValueError("ControlNet units and control maps: not supported for FLUX.1 Fill "
                             "models yet; leave them out")
        if condition is None:
            raise ValueError("FLUX.1 Fill draws from a picture and a mask: give both")
        return self.flow_with(prompts, height=height, width=width,
                              guidance_scale=guidance_scale,
                              max_sequence_length=max_sequence_length, cache=cache,
                              control=None, extra=condition, packed=True)

    def __call__(self, prompt: str | Sequence[str], *, image: Any = None,  # type: ignore[override]
                 mask_image: Any = None, height: int = 1024, width: int = 1024,
                 num_inference_steps: int = 50, guidance_scale: float = 30.0, seed: int = 0,
                 rng: str = "torch", max_sequence_length: int = 512,
                 latents: np.ndarray | None = None, strength: float = 1.0,
                 callback: StepCallback | None = None, output_type: str = "np",
                 cache: StepCache | None = None) -> np.ndarray:
        """Pictures for `prompt` (one or a list) repainting `image` (PIL or HxWx3 uint8)
        where `mask_image` is white, float images in [0, 1] (B, height, width, 3) ("np") or
        the final latents ("latent"). `strength` (1: from noise) starts from the picture
        noised to that point of the schedule; the rest as FluxPipeline's call.
        diffusers: `FluxFillPipeline(prompt, image=, mask_image=, height=, width=,
        num_inference_steps=, guidance_scale=, strength=,
        generator=torch.Generator().manual_seed(seed), output_type="np").images`."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        if image is None or mask_image is None:
            raise ValueError("FLUX.1 Fill draws from a picture and a mask: give image= and "
                             "mask_image=")
        device = self.transformer.x_embedder.weight.device
        scale = self.vae_scale_factor * 2
        h, w = 2 * (int(height) // scale), 2 * (int(width) // scale)
        channels = (self.transformer.config["out_channels"]
                    or self.transformer.config["in_channels"]) // 4
        shape = (len(prompts), channels, h, w)
        # 1. the schedule: sigmas 1 .. 1/n, shifted by the number of image tokens
        scheduler = flow_schedule(self.scheduler_config, num_inference_steps,
                                  calculate_shift((h // 2) * (w // 2), self.scheduler_config))
        # 2. the start, in diffusers' order of draws (the picture's posterior, the noise, the
        # masked picture's posterior: FlowStart's), keeping the masked picture's latents
        drawn: list[np.ndarray] = []

        def encode(pixels: np.ndarray, generator: Any) -> np.ndarray:
            drawn.append(encode_image(self.vae, pixels, generator))
            return drawn[-1]

        start = FlowStart(self.vae, scheduler, shape, generator=make_generator(rng, seed),
                          latents=latents, image=image, mask=mask_image, strength=strength,
                          encode=encode)
        mask = to_mask(mask_image, w * self.vae_scale_factor, h * self.vae_scale_factor)
        condition = fill_condition(drawn[-1], mask, self.vae_scale_factor)
        # 3. the prompt and the Fill channels as a flow; Euler steps, no blend
        flow, _, _ = self.velocity(prompts, height=height, width=width,
                                   guidance_scale=guidance_scale,
                                   max_sequence_length=max_sequence_length, cache=cache,
                                   condition=condition)
        x = scheduler_loop(start.latents, start.timesteps, scheduler,
                           lambda x, t, i: (flow(x, t), None), dtype=np.float32,
                           callback=callback)
        return x if output_type == "latent" else decode(self.vae, x, device)
