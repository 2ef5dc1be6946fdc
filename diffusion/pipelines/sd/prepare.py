"""What both denoising paths start from: one pass's settings, the img2img / inpaint inputs and
the hires pass's latents.

`run_scheduler` (diffusers' loop) and `run_kdiffusion` (the WebUI's samplers) differ in their
loop and in the order of their random draws, not in how a picture, a mask or a hires pass
become latents: that lives here once.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ...imaging import latent_mask, rgb_picture, to_mask, to_unit_image
from ...noise.rng import make_generator
from ...text.embeddings import EmbeddingFinder, EncoderFinders
from ...upscalers.interpolation import HiresFix, crop_latents, upscale_image, upscale_latents
from ..hires_pass import hires_prompts
from ..masked_content import latent_content
from .unet_model import Generator, LatentCodec

__all__ = ["InpaintInputs", "Pass", "hires_latents"]


@dataclass(frozen=True)
class Pass:
    """One sampling pass's settings: a GenerationRequest resolved for the loaded model (seed
    drawn, size chosen), changed by a hires pass (size, img2img at its own strength)."""

    prompt: str
    negative_prompt: str
    steps: int
    cfg_scale: float
    seed: int
    width: int
    height: int
    batch_size: int
    clip_skip: int
    strength: float
    rng: str
    mode: str  # "txt2img", "img2img" or "inpaint"
    # the WebUI's masked content left to do on the init latents: 2 latent noise, 3 latent
    # nothing (diffusion.pipelines.masked_content); 1: none ("fill" is done on the picture)
    masked_content: int = 1
    # the seed of the batch whose "latent noise" this pass takes: the job's first batch's, as
    # the WebUI fills the init latents once a job (processing.py, Img2Img.init:
    # all_seeds[0:batch_size]); None: this pass's own seed
    latent_noise_seed: int | None = None
    # the WebUI's mask_round: the latent mask and a 9-channel UNet's mask rounded to 0 and 1;
    # False keeps the levels of the blurred edge (its soft inpainting)
    mask_round: bool = True
    # resize mode 3, "Just resize (latent upscale)": the init image encoded at its own size,
    # its latents resized to the pass's (bilinear, processing.py's F.interpolate)
    resize_latents: bool = False
    cfg_pp: bool = False  # the timestep loop runs DDIM CFG++
    # finds textual-inversion names while prompts are encoded (SDXL: one finder per text
    # encoder); `.used` gives the TI hashes
    embeddings: EmbeddingFinder | EncoderFinders | None = None
    # a StableDiffusion that takes over at `switch_at` (diffusion.pipelines.sd.refiner)
    refiner: Any = None
    switch_at: float = 0.8
    # with a hires fix, the passes the refiner takes over in (hires_pass.refiner_in_pass)
    hires_refiner_pass: str = "second pass"
    # ControlNet / T2I-Adapter units guiding every step (diffusion.pipelines.control), their
    # maps fitted to this pass's size; a hires fix's second pass runs the units meant for it
    control: tuple[Any, ...] = ()
    hires_stage: str | None = None  # "first" / "second" pass of a hires fix
    # a hires fix's second pass: the first pass's steps (model evaluations), which its prompt
    # editing counts on from (the WebUI's hires_steps scheduling); None: not a second pass
    first_pass_steps: int | None = None
    # the VAE a hires fix's second pass encodes and decodes with (Forge's
    # hr_additional_modules: module_load.HiresModules.vae); None: the model's
    hires_vae: Any = None
    # img2img / inpaint: the noise laid over the init latents times this (the WebUI's
    # initial_noise_multiplier); 1 for txt2img and a hires pass
    noise_multiplier: float = 1.0


class InpaintInputs:
    """A pass's init image and mask, at its size, and the latents made from them. The caller
    chooses when each is encoded: the draws from `generator` come in its path's order."""

    def __init__(self, codec: LatentCodec, r: Pass, init_image: Any, mask: Any, *,
                 inpainting_model: bool = False) -> None:
        self.codec, self.batch = codec, r.batch_size
        self.scale = codec.vae_scale_factor
        self.latent_size = (r.height // self.scale, r.width // self.scale)
        self.resize_latents = r.resize_latents
        size = (r.width, r.height)
        if r.resize_latents:  # resize mode 3: encoded at its own size
            size = rgb_picture(init_image).size
            if min(size) < self.scale:
                raise ValueError(f"init image {size[0]}x{size[1]} is smaller than one latent "
                                 f"pixel ({self.scale}x{self.scale}): resize mode 3 encodes it "
                                 "at its own size; give a larger picture or resize mode 0-2")
            if mask is not None and inpainting_model:
                raise ValueError("resize mode 3 (latent upscale) with an inpainting model "
                                 "(9-channel UNet): its masked-picture input would be encoded "
                                 "at the picture's size, not the latents' (the WebUI fails "
                                 "there too); give resize mode 0, 1 or 2")
        self.pixels = None if init_image is None else to_unit_image(init_image, *size)
        self.mask = None if mask is None else to_mask(mask, r.width, r.height,
                                                      rounded=r.mask_round)
        # the WebUI's latent mask, from the mask picture with its blurred edge
        self.repaint = None if mask is None else latent_mask(mask, self.latent_size,
                                                             rounded=r.mask_round)
        self.content, self.rng = r.masked_content, r.rng
        # "latent noise" draws for the job's first batch: this batch's seeds moved back by this
        self.noise_shift = 0 if r.latent_noise_seed is None else r.latent_noise_seed - r.seed

    def image_latents(self, generator: Generator) -> np.ndarray:
        """The init image's latents (B, C, h, w), drawn from the VAE's posterior (resize mode 3:
        at the picture's own size, then resized as the WebUI's "Latent" upscaler resizes)."""
        assert self.pixels is not None  # the runs ask for these only with an init image
        latents = self.codec.encode_latents(self.pixels, generator)
        if self.resize_latents:
            latents = upscale_latents(latents, self.latent_size, "Latent")
        return np.repeat(latents, self.batch, 0)

    def start(self, latents: np.ndarray, seeds: Sequence[int]) -> np.ndarray:
        """The init latents the sampling starts from: `latents` with the WebUI's "latent
        noise" or "latent nothing" where the latent mask is, as the pass's masked content
        says; as they are otherwise (and without a mask). `seeds` are this batch's; image k's
        latent noise is drawn from seeds[k] moved back to the job's first batch."""
        if self.repaint is None:
            return latents
        return latent_content(latents, self.repaint, self.content, rng=self.rng,
                              seeds=[seed + self.noise_shift for seed in seeds])

    def small_mask(self) -> np.ndarray:
        """The mask at latent size (B, 1, h, w), nearest (diffusers' way)."""
        assert self.mask is not None  # the runs ask for it only when inpainting
        return np.repeat(self.mask[:, :, ::self.scale, ::self.scale], self.batch, 0)

    def nine_channel(self, generator: Generator) -> np.ndarray:
        """An inpainting UNet's extra inputs (B, 1 + C, h, w): the mask and the latents of
        the image with the repainted part blanked (times 1 - mask, processing.py's
        inpainting_image_conditioning)."""
        # the runs ask for these only when inpainting, which has an init image and a mask
        assert self.pixels is not None and self.mask is not None
        masked = self.pixels * (1.0 - self.mask)
        masked_latents = np.repeat(self.codec.encode_latents(masked, generator), self.batch, 0)
        return np.concatenate([self.small_mask(), masked_latents], axis=1)

    def keep(self) -> np.ndarray:
        """Where the sampling keeps the init image's latents (1, 1, h, w), the WebUI's latent
        mask inverted (its p.mask, which it blends with for every UNet, 9-channel too)."""
        assert self.repaint is not None  # the runs ask for it only when inpainting
        return 1.0 - self.repaint


def hires_latents(codec: LatentCodec, r: Pass, latents: np.ndarray,
                  hires: HiresFix) -> tuple[np.ndarray, Pass]:
    """The hires pass's starting latents (upscaled latents, or the upscaled picture through
    the VAE: the first pass's decodes, `r.hires_vae` encodes where set) and its settings (the
    new size, img2img at the hires strength, the hires fix's own prompts where it has them)."""
    width, height = hires.target(r.width, r.height)
    big_width, big_height = hires.cover(r.width, r.height)  # cropped to the target after
    scale = codec.vae_scale_factor
    if hires.is_latent:
        start = upscale_latents(latents, (big_height // scale, big_width // scale),
                                hires.upscaler)
    else:
        images = [upscale_image(image, (big_width, big_height), hires.upscaler, codec.device)
                  for image in codec.decode_latents(latents)]
        generator = make_generator(r.rng, r.seed)  # the VAE posterior's draws
        start = np.concatenate([codec.encode_latents(
            to_unit_image(image, big_width, big_height), generator, vae=r.hires_vae)
            for image in images])
    start = crop_latents(start, (height // scale, width // scale))
    prompt, negative_prompt = hires_prompts(hires, r.prompt, r.negative_prompt)
    return start, replace(r, width=width, height=height, mode="img2img",
                          strength=hires.denoise, hires_stage="second", prompt=prompt,
                          negative_prompt=negative_prompt, noise_multiplier=1.0)
