"""FLUX.1 Kontext: editing a reference picture by an instruction, as diffusers'
FluxKontextPipeline draws it. The transformer is FLUX.1 dev's; the reference picture is encoded
by the VAE (its posterior's mean), packed into 2x2 patches like the noise, and its tokens are
appended after the noise tokens, with rotary positions whose first axis is 1 (the noise's is
0). Only the noise tokens' prediction steps the latents; the run starts from noise, or, to
inpaint (FluxKontextInpaintPipeline), from the picture inpainted noised by the strength, its
unmasked part put back after every step.

    pipe = KontextPipeline.from_pretrained("FLUX.1-Kontext-dev")
    images = pipe("make it night", image=Image.open("street.png"), height=1024, width=1024)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from ...imaging import rgb_picture, to_unit_image
from ...models.step_cache import StepCache
from ...models.tiled_vae import vae_encode
from ...noise.rng import make_generator
from ..finite import check_encoded
from .flow_control import FlowControl
from .flux import FluxPipeline, image_ids, pack_latents
from .start import StepCallback, check_call, flow_schedule, run_euler

__all__ = ["PREFERRED_KONTEXT_RESOLUTIONS", "KontextPipeline", "reference_size"]

# (width, height): the sizes Kontext was trained at, about a megapixel each (diffusers'
# PREFERRED_KONTEXT_RESOLUTIONS)
PREFERRED_KONTEXT_RESOLUTIONS = (
    (672, 1568), (688, 1504), (720, 1456), (752, 1392), (800, 1328), (832, 1248), (880, 1184),
    (944, 1104), (1024, 1024), (1104, 944), (1184, 880), (1248, 832), (1328, 800), (1392, 752),
    (1456, 720), (1504, 688), (1568, 672))


def reference_size(width: int, height: int, multiple: int, *, auto_resize: bool
                   ) -> tuple[int, int]:
    """(width, height) the reference picture of `width` x `height` is encoded at: with
    `auto_resize` the preferred resolution of the nearest aspect ratio, else its own size;
    either floored to `multiple`. diffusers: FluxKontextPipeline's `_auto_resize` step."""
    if auto_resize:
        aspect = width / height
        _, width, height = min((abs(aspect - w / h), w, h)
                               for w, h in PREFERRED_KONTEXT_RESOLUTIONS)
    width, height = width // multiple * multiple, height // multiple * multiple
    if width < multiple or height < multiple:
        raise ValueError(f"the reference picture must be at least {multiple}x{multiple} "
                         f"pixels, got {width}x{height}; give a larger one")
    return width, height


class KontextPipeline(FluxPipeline):
    """FLUX.1 Kontext on gpustd: FluxPipeline's parts (a FluxKontextPipeline folder loads with
    `from_pretrained`), conditioned on one reference picture besides the prompt."""

    def reference_tokens(self, image: Any, *, auto_resize: bool = True
                         ) -> tuple[np.ndarray, np.ndarray]:
        """The reference picture (PIL or HxWx3 uint8) as packed latent tokens (1, N, 4C)
        float32 in the transformer's space, and their rotary ids (N, 3) with first axis 1.
        diffusers: `prepare_latents(image, ...)`'s `image_latents, image_ids` (the VAE's
        mode, `sample_mode="argmax"`: no random draw)."""
        picture = rgb_picture(image)
        width, height = reference_size(picture.size[0], picture.size[1],
                                       self.vae_scale_factor * 2, auto_resize=auto_resize)
        latents = self.mean_latents(to_unit_image(picture, width, height))
        rows, columns = latents.shape[2] // 2, latents.shape[3] // 2
        ids = image_ids(rows, columns)
        ids[:, 0] = 1
        return pack_latents(latents), ids

    def mean_latents(self, pixels: np.ndarray, generator: Any = None) -> np.ndarray:
        """Latents (1, C, h, w) float32 of `pixels` (1, 3, H, W) in [-1, 1] in the
        transformer's space: the VAE posterior's mean, no draw (`generator`, which FlowStart's
        `encode` passes, unused). diffusers: FluxKontextPipeline's and
        FluxKontextInpaintPipeline's `_encode_vae_image` (`sample_mode="argmax"`)."""
        mean, _ = vae_encode(self.vae, pixels)
        check_encoded(mean, self.vae)
        latents = (mean - np.float32(self.vae.shift_factor)) * np.float32(self.vae.scaling_factor)
        return latents.astype(np.float32)

    def velocity(self, prompts: Sequence[str], *, height: int, width: int,
                 guidance_scale: float = 3.5, max_sequence_length: int = 512,
                 cache: StepCache | None = None, control: FlowControl | None = None,
                 control_latents: np.ndarray | None = None, image: Any = None,
                 auto_resize: bool = True
                 ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...], float]:
        """FluxPipeline.velocity with the reference `image` (None: none, FLUX.1 dev's flow):
        its tokens ride after the noise tokens in every call, and only the noise tokens'
        prediction comes back. The schedule's `mu` counts the noise tokens alone. ControlNet
        units (`control`, `control_latents`) are refused: not for Kontext yet."""
        if control is not None or control_latents is not None:
            raise ValueError("ControlNet units: not supported for FLUX.1 Kontext models yet; "
                             "leave them out")
        if image is None:
            return super().velocity(prompts, height=height, width=width,
                                    guidance_scale=guidance_scale,
                                    max_sequence_length=max_sequence_length, cache=cache)
        return self.flow_with(prompts, height=height, width=width,
                              guidance_scale=guidance_scale,
                              max_sequence_length=max_sequence_length, cache=cache,
                              control=None, extra=None,
                              references=self.reference_tokens(image, auto_resize=auto_resize))

    def __call__(self, prompt: str | Sequence[str], *, image: Any = None,  # type: ignore[override]
                 height: int = 1024, width: int = 1024, num_inference_steps: int = 28,
                 guidance_scale: float = 3.5, seed: int = 0, rng: str = "torch",
                 max_sequence_length: int = 512, latents: np.ndarray | None = None,
                 auto_resize: bool = True, callback: StepCallback | None = None,
                 output_type: str = "np", cache: StepCache | None = None,
                 init_image: Any = None, mask_image: Any = None,
                 strength: float = 1.0) -> np.ndarray:
        """Pictures for `prompt` (the instruction; one or a list) made from the reference
        `image` (PIL or HxWx3 uint8; None: FLUX.1 dev's txt2img), float images in [0, 1]
        (B, height, width, 3) ("np") or the final latents ("latent"). `auto_resize`: encode
        the reference at Kontext's preferred resolution nearest its aspect ratio (about a
        megapixel), else at its own size; either way floored to whole 2x2 patches. The rest as
        FluxPipeline's call (the run starts from noise: there is no strength).
        diffusers: `FluxKontextPipeline(image=, prompt=, height=, width=,
        num_inference_steps=, guidance_scale=, generator=torch.Generator().manual_seed(seed),
        max_area=height * width, _auto_resize=auto_resize, output_type="np").images`
        (its `max_area`, 1024² by default, rescales height and width; ours are taken as
        given). Inpainting: `init_image` (height x width) the picture inpainted with
        `mask_image` (white = repaint), its latents (the posterior's mean) noised to the
        first sigma `strength` keeps and the unmasked part put back after every step, `image`
        its reference. diffusers: `FluxKontextInpaintPipeline(image=init_image,
        image_reference=image, mask_image=, strength=, ...)` (with `image_reference=None`
        it reads `image` as its own reference: give `image=init_image`)."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        device = self.transformer.x_embedder.weight.device
        # 1. conditioning: the prompt and the reference's tokens, as a flow of the latents
        flow, shape, mu = self.velocity(prompts, height=height, width=width,
                                        guidance_scale=guidance_scale,
                                        max_sequence_length=max_sequence_length, cache=cache,
                                        image=image, auto_resize=auto_resize)
        # 2. the schedule: sigmas 1 .. 1/n, shifted by the number of noise tokens
        scheduler = flow_schedule(self.scheduler_config, num_inference_steps, mu)
        # 3. Euler steps from noise (or the picture inpainted, noised) along the flow, the
        # pictures out of the latent space
        return run_euler(self.vae, scheduler, shape, flow, generator=make_generator(rng, seed),
                         latents=latents, image=init_image, mask=mask_image, strength=strength,
                         callback=callback, output_type=output_type, device=device,
                         encode=self.mean_latents, posterior=False)
