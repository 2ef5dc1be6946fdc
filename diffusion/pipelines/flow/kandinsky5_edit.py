"""Kandinsky 5 Image Lite's editing model, as diffusers' Kandinsky5I2IPipeline draws it: the
picture to edit is read twice. Qwen2.5-VL reads it at half its size with the instruction, in
the editing template (models.kandinsky5_prompt.encode_edit); and its VAE latents (FLUX's VAE
posterior drawn after the noise, times the scaling factor, no shift) ride beside the noise in
every transformer call, channels last: [noise (C), the picture's latents (C), a channel of
ones] (the transformer's `visual_cond`), only the noise's channels stepped. The rest is the
text-to-image pipeline's (Kandinsky5Pipeline): CLIP's pooled prompt, CFG `neg + g * (pos -
neg)` for `guidance_scale` g > 1, the scheduler's constant shift, the decode.

    pipe = Kandinsky5EditPipeline.from_pretrained("Kandinsky-5.0-I2I-Lite")
    images = pipe("make it night", image=picture, num_inference_steps=50,
                  guidance_scale=3.5, seed=7)

The picture is resized (Lanczos) to the output's size for the VAE, so the edit's latents lie
over the picture's. diffusers draws at the picture's size, snapped to its nearest trained
resolution by aspect where it is not one (`RESOLUTIONS`); `height` and `width` given are
drawn as given. With a mask (`init_image`, `mask_image`, `strength`), the picture inpainted
is noised by the strength and its kept part put back after every step, as the other flow
pipelines inpaint (diffusers has no Kandinsky 5 inpainting pipeline); the edit picture still
steers it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gpustd import Tensor, asarray

from ...imaging import see_through_picture, to_unit_image
from ...loaders.kandinsky5 import Kandinsky5Weights
from ...models.kandinsky5_prompt import MAX_SEQUENCE_LENGTH, encode_edit
from ...models.qwen_vision import Qwen2_5_VisionTransformer, pixel_limits
from ...models.step_cache import StepCache
from ...models.tiled_vae import vae_encode
from ...noise.rng import make_generator
from ...sampling.scheduler_loop import scheduler_loop
from ...sampling.schedulers.flow_match_euler import FlowMatchEulerDiscreteScheduler
from ..finite import check_encoded
from .kandinsky5 import Kandinsky5Pipeline
from .start import FlowStart, StepCallback, check_call, check_sides

__all__ = ["RESOLUTIONS", "Kandinsky5EditPipeline"]

# Kandinsky5I2IPipeline's trained (width, height)s
RESOLUTIONS = ((1024, 1024), (640, 1408), (1408, 640), (768, 1280), (1280, 768), (896, 1152),
               (1152, 896))


class Kandinsky5EditPipeline(Kandinsky5Pipeline):
    """Kandinsky 5 editing on gpustd: Kandinsky5Pipeline's parts, the text encoder's vision
    tower (`vision`) and its image processor's settings (`processor_config`, the folder's
    tokenizer/preprocessor_config.json)."""

    def __init__(self, *, vision: Qwen2_5_VisionTransformer, processor_config: dict[str, Any],
                 **parts: Any) -> None:
        super().__init__(**parts)
        self.vision = vision
        self.pixel_limits = pixel_limits(processor_config)

    @classmethod
    def _picture_reader(cls, path: str | Path, weights: Kandinsky5Weights,
                        load: Callable[..., Any], place: dict[str, Any]) -> dict[str, Any]:
        """The vision tower (loaded before the transformer, as the text encoders) and the
        image processor's settings; ValueError in one line for a text-to-image folder."""
        tower = weights.vision
        if tower is None or weights.processor_config is None:
            raise ValueError(f"{path} is Kandinsky 5 text to image (Kandinsky5T2IPipeline), not "
                             "its editing model: load it with Kandinsky5Pipeline")
        return {"vision": load(lambda: Qwen2_5_VisionTransformer(tower.config, **place), tower),
                "processor_config": weights.processor_config}

    def encode_edit_prompt(self, prompt: str, image: Any,
                           max_sequence_length: int = MAX_SEQUENCE_LENGTH
                           ) -> tuple[Tensor, Tensor]:
        """(the transformer's text tokens (1, L, dim), CLIP's pooled vector (1, D2)) of
        `prompt` read with the picture `image` (models.kandinsky5_prompt.encode_edit).
        diffusers: `Kandinsky5I2IPipeline.encode_prompt(prompt, image)`."""
        states, pooled = encode_edit(self.text_encoder, self.vision, self.tokenizer,
                                     self.text_encoder_2, self.tokenizer_2, prompt, image,
                                     pixel_limits=self.pixel_limits,
                                     max_sequence_length=max_sequence_length)
        transformer = self.transformer
        return (transformer.text(states),
                asarray(pooled, dtype=transformer.dtype, device=transformer.device))

    def picture_latents(self, image: Any, width: int, height: int,
                        generator: Any = None) -> np.ndarray:
        """The picture's latents (1, C, height/8, width/8): resized to width x height
        (Lanczos, as diffusers' VaeImageProcessor), FLUX's VAE posterior drawn from
        `generator` (diffusers' `latent_dist.sample`), or its mean without one (the WebUI
        samplers, which draw no picture noise), times the scaling factor."""
        pixels = to_unit_image(image, width, height)
        if generator is not None:
            return self.encode_image(pixels, generator)
        mean, _ = vae_encode(self.vae, pixels)
        check_encoded(mean, self.vae)
        return (mean * np.float32(self.vae.scaling_factor)).astype(np.float32)

    def velocity(self, prompts: Sequence[str], *, height: int, width: int,  # type: ignore[override]
                 guidance_scale: float = 3.5, negative_prompt: str | Sequence[str] = "",
                 max_sequence_length: int = MAX_SEQUENCE_LENGTH,
                 cache: StepCache | None = None, image: Any = None,
                 picture: np.ndarray | None = None
                 ) -> tuple[Callable[[np.ndarray, float], np.ndarray], tuple[int, ...], None]:
        """Kandinsky5Pipeline.velocity with the picture to edit `image`: each prompt read with
        it, its latents `picture` (1, C, h, w; None: `picture_latents`' mean at width x
        height) and a channel of ones after the noise's channels in every call."""
        if image is None:
            raise ValueError("Kandinsky 5's editing model edits a picture: give it as the image "
                             "(the CLI's --init-image, img2img's init_images)")
        if picture is None:
            picture = self.picture_latents(image, width, height)
        h, w = int(height) // self.vae_scale_factor, int(width) // self.vae_scale_factor
        if picture.shape[2:] != (h, w):
            raise ValueError(f"the picture's latents are {picture.shape[2:]}, the output's "
                             f"{(h, w)}: encode the picture at the output's size")
        condition = np.concatenate([picture[0].transpose(1, 2, 0),
                                    np.ones((h, w, 1), np.float32)], -1)
        return self._flow(prompts,
                          lambda p: self.encode_edit_prompt(p, image, max_sequence_length),
                          condition, height=height, width=width,
                          guidance_scale=guidance_scale, negative_prompt=negative_prompt,
                          cache=cache)

    def edit_size(self, image: Any) -> tuple[int, int]:
        """(width, height) diffusers draws an edit of `image` at: the picture's size where it
        is one of RESOLUTIONS, else the one nearest its aspect."""
        size = see_through_picture(image, "the picture to edit").size
        if size in RESOLUTIONS:
            return size
        aspect = size[0] / size[1]
        return min(RESOLUTIONS, key=lambda r: abs(r[0] / r[1] - aspect))

    def __call__(self, prompt: str | Sequence[str], *,  # type: ignore[override]
                 image: Any = None, height: int | None = None, width: int | None = None,
                 num_inference_steps: int = 50, guidance_scale: float = 3.5,
                 negative_prompt: str | Sequence[str] = "", seed: int = 0, rng: str = "torch",
                 max_sequence_length: int = MAX_SEQUENCE_LENGTH,
                 latents: np.ndarray | None = None, init_image: Any = None,
                 mask_image: Any = None, strength: float = 1.0,
                 callback: StepCallback | None = None, output_type: str = "np",
                 cache: StepCache | None = None) -> np.ndarray:
        """Edits of `image` (PIL or HxWx3 uint8) by the instruction `prompt` (one or a list):
        float images in [0, 1] (B, height, width, 3) ("np") or the final latents ("latent");
        height and width default to `edit_size`'s. `seed` and `rng` draw the noise (unless
        `latents`, (B, C, h, w), is given), then the picture's posterior, as diffusers draws
        them. Inpainting: `init_image` (height x width) the picture inpainted with
        `mask_image` (white = repaint) at `strength` (the module's docstring). diffusers:
        `Kandinsky5I2IPipeline(image=, prompt=, negative_prompt=, guidance_scale=, height=,
        width=, num_inference_steps=, generator=torch.Generator().manual_seed(seed),
        output_type="np").image` (one picture a call)."""
        prompts = check_call(prompt, rng=rng, output_type=output_type, steps=num_inference_steps)
        if image is None:
            raise ValueError("Kandinsky 5's editing model edits a picture: give it as the image "
                             "(the CLI's --init-image, img2img's init_images)")
        default_width, default_height = self.edit_size(image)
        height, width = int(height or default_height), int(width or default_width)
        check_sides(height, width, self.vae_scale_factor * 2, "Kandinsky 5")
        scheduler = FlowMatchEulerDiscreteScheduler.from_config(self.scheduler_config)
        scheduler.set_timesteps(num_inference_steps)
        scheduler.set_begin_index(0)
        generator = make_generator(rng, seed)
        shape = (len(prompts), self.transformer.config["in_visual_dim"],
                 height // self.vae_scale_factor, width // self.vae_scale_factor)
        if latents is None and init_image is None:
            latents = self._noise(shape, generator)
        start = FlowStart(self.vae, scheduler, shape, generator=generator, latents=latents,
                          image=init_image, mask=mask_image, strength=strength,
                          encode=self.encode_image, scale_factor=self.vae_scale_factor)
        picture = self.picture_latents(image, width, height, generator)  # after the noise
        flow, _, _ = self.velocity(prompts, height=height, width=width,
                                   guidance_scale=guidance_scale,
                                   negative_prompt=negative_prompt,
                                   max_sequence_length=max_sequence_length, cache=cache,
                                   image=image, picture=picture)
        x = scheduler_loop(start.latents, start.timesteps, scheduler,
                           lambda x, t, i: (flow(x, t), None), dtype=np.float32,
                           after_step=lambda i, x: start.blend(x, i), callback=callback)
        return x if output_type == "latent" else self.decode(x)
