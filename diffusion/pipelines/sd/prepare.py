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

from ...noise.rng import make_generator
from ...text.embeddings import EmbeddingFinder
from ...upscalers.interpolation import HiresFix, crop_latents, upscale_image, upscale_latents
from ..masked_content import latent_content
from .unet_model import Generator, LatentCodec

__all__ = ["InpaintInputs", "Pass", "eight_bit", "fit_picture", "hires_latents", "latent_mask",
           "mask_picture", "overlay_original", "rgb_picture", "to_mask", "to_uint8",
           "to_unit_image"]


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
    # finds textual-inversion names while prompts are encoded; `.used` gives the TI hashes
    embeddings: EmbeddingFinder | None = None
    # a StableDiffusion that takes over at `switch_at` (diffusion.pipelines.sd.refiner)
    refiner: Any = None
    switch_at: float = 0.8
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


def eight_bit(image: Any) -> Any:
    """A PIL image of 16- or 32-bit integers (a 16-bit PNG, such as a depth map, opens as
    I;16) scaled to 8 bits ("L"): Pillow's convert() to L or RGB clips every value over 255,
    which turns such a picture white. Other images are returned as they are."""
    from PIL import Image

    if not image.mode.startswith("I"):
        return image
    values = np.asarray(image)
    if image.mode == "I" and values.size and values.max() <= 255:  # 8-bit values in 32 bits
        return Image.fromarray(values.clip(0, 255).astype(np.uint8))
    return Image.fromarray((values.clip(0, 65535).astype(np.uint32) >> 8).astype(np.uint8))


def _check_not_empty(name: str, image: Any) -> None:
    """Pillow resizes a 0-pixel image to a black one without a word."""
    if 0 in image.size:
        raise ValueError(f"{name} is empty ({image.size[0]}x{image.size[1]} pixels): give a "
                         "picture with pixels")


def rgb_picture(image: Any) -> Any:
    """An init image (PIL, or HxWx3 / HxWx4 uint8 array) as an RGB PIL picture."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        array = np.asarray(image)
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (3, 4):
            raise ValueError(f"init image must be a PIL image or an HxWx3 uint8 array, got "
                             f"{array.dtype} {array.shape}")
        image = Image.fromarray(array[..., :3])
    _check_not_empty("init image", image)
    return eight_bit(image).convert("RGB")


def to_unit_image(image: Any, width: int, height: int) -> np.ndarray:
    """An RGB image (PIL, or HxWx3 uint8 array) resized to (height, width), as
    (1, 3, H, W) float32 in [-1, 1]."""
    from PIL import Image

    image = rgb_picture(image)
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    pixels = np.asarray(image, np.float32) / 127.5 - 1.0
    return pixels.transpose(2, 0, 1)[None]


def mask_picture(mask: Any) -> Any:
    """A mask (PIL / array; white = repaint) as an 'L' picture: an array's values above half
    are white, the rest black; a picture keeps its grays (a blurred edge)."""
    from PIL import Image

    if not isinstance(mask, Image.Image):
        array = np.asarray(mask)
        if array.ndim == 3:
            array = array[..., 0]
        if array.ndim != 2:
            raise ValueError(f"mask must be a 2-D image, got shape {array.shape}")
        mask = Image.fromarray((array > (0.5 if array.dtype != np.uint8 else 127)).astype(
            np.uint8) * 255)
    _check_not_empty("mask", mask)
    return eight_bit(mask).convert("L")


def to_mask(mask: Any, width: int, height: int, *, rounded: bool = True) -> np.ndarray:
    """A mask (PIL / array; white = repaint) as (1, 1, H, W) float32: 0 and 1 (`rounded`, as
    the WebUI's inpainting conditioning rounds it), else its levels / 255."""
    from PIL import Image

    mask = mask_picture(mask)
    if mask.size != (width, height):
        mask = mask.resize((width, height), Image.Resampling.NEAREST)
    values = np.asarray(mask, np.float32) / 255
    return (np.round(values) if rounded else values)[None, None]


def latent_mask(mask: Any, size: tuple[int, int], *, rounded: bool = True) -> np.ndarray:
    """The repaint mask at latent size (h, w) as (1, 1, h, w), as the WebUI makes it (its
    latmask): the mask picture with its blurred edge (mask_picture) shrunk by Pillow's
    default (bicubic) resize, then rounded to 0 and 1 (`rounded`: its mask_round), so an edge
    counts where it is more than half white over the latent pixel's patch, not where most of
    its pixels are."""
    small = mask_picture(mask).convert("RGB").resize((size[1], size[0]))
    values = np.asarray(small, np.float32)[..., 0] / 255
    return (np.around(values) if rounded else values)[None, None]


def fit_picture(image: Any, width: int, height: int, mode: int) -> Any:
    """A PIL picture at width x height by the WebUI's resize mode (modules/images.py
    resize_image, Lanczos): 0 stretched; 1 scaled to cover, the middle kept (crop and resize);
    2 scaled to fit inside, the bands left filled by stretching its outer rows or columns
    (resize and fill). diffusers: VaeImageProcessor.resize(resize_mode="default" / "crop" /
    "fill")."""
    from PIL import Image

    lanczos = Image.Resampling.LANCZOS
    if mode == 0:
        return image.resize((width, height), lanczos)
    ratio, own = width / height, image.width / image.height
    by_width = ratio > own if mode == 1 else ratio < own  # the side that meets the target's
    src_w = width if by_width else image.width * height // image.height
    src_h = image.height * width // image.width if by_width else height
    resized = image.resize((src_w, src_h), lanczos)
    out = Image.new(image.mode, (width, height))
    left, top = width // 2 - src_w // 2, height // 2 - src_h // 2
    out.paste(resized, (left, top))
    # mode 2's bands: its edge row / column stretched (Pillow's default resampling, as the
    # WebUI's); none of 0 pixels, which Pillow cannot make (the WebUI would fail there)
    if mode == 2 and by_width and top > 0:
        out.paste(resized.resize((width, top), box=(0, 0, width, 0)), (0, 0))
        out.paste(resized.resize((width, top), box=(0, src_h, width, src_h)), (0, top + src_h))
    elif mode == 2 and ratio != own and left > 0:
        out.paste(resized.resize((left, height), box=(0, 0, 0, height)), (0, 0))
        out.paste(resized.resize((left, height), box=(src_w, 0, src_w, height)),
                  (left + src_w, 0))
    return out


def overlay_original(images: list[np.ndarray], init_image: Any, mask: Any, *,
                     paste_to: tuple[int, int, int, int] | None = None) -> list[np.ndarray]:
    """The WebUI's last step of inpainting (processing.apply_overlay): the original picture,
    fitted to the result's size as the init image is, laid over each result where the mask
    is under half (weight 1 - min(2 x mask, 1)), so what was not repainted keeps its own
    pixels rather than the VAE's round trip of them. diffusers:
    `VaeImageProcessor.apply_overlay` (which takes the mask as it is, not doubled).

    With `paste_to` (x, y, width, height; "Inpaint area: Only masked",
    diffusion.pipelines.inpaint_area) the results show that part of the picture: each is
    fitted back to it (resize mode 1, the WebUI's uncrop) and laid there, on the original at
    its own size, and the original over it with weight 1 - mask: in this mode the WebUI's
    mask_for_overlay is the blurred mask itself, not doubled. Outside that part the
    original's pixels are kept as they are."""
    from PIL import Image

    picture, mask = rgb_picture(init_image), mask_picture(mask)
    if paste_to is None:
        height, width = images[0].shape[:2]
        picture = picture.resize((width, height), Image.Resampling.LANCZOS) if (
            picture.size != (width, height)) else picture
    if mask.size != picture.size:
        mask = mask.resize(picture.size, Image.Resampling.LANCZOS)
    weight = np.asarray(mask, np.float32)[..., None]
    if paste_to is None:
        weight = np.minimum(weight * 2.0, 255.0)
    else:
        x, y, width, height = paste_to
        pasted = []
        for image in images:
            canvas = np.array(picture)
            canvas[y:y + height, x:x + width] = np.asarray(
                fit_picture(Image.fromarray(image), width, height, 1))
            pasted.append(canvas)
        images = pasted
    original, keep = np.asarray(picture, np.float32), 1.0 - weight / 255.0
    return [np.round(original * keep + image * (1.0 - keep)).clip(0, 255).astype(np.uint8)
            for image in images]


def to_uint8(images: np.ndarray) -> list[np.ndarray]:
    """(B, 3, H, W) in [-1, 1] -> B pictures (H, W, 3) uint8."""
    pixels = np.clip(images / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1)
    return [np.round(p * 255).astype(np.uint8) for p in pixels]


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
    new size, img2img at the hires strength)."""
    width, height = hires.target(r.width, r.height)
    big_width, big_height = hires.cover(r.width, r.height)  # cropped to the target after
    scale = codec.vae_scale_factor
    if hires.is_latent:
        start = upscale_latents(latents, (big_height // scale, big_width // scale),
                                hires.upscaler)
    else:
        images = [upscale_image(image, (big_width, big_height), hires.upscaler)
                  for image in codec.decode_latents(latents)]
        generator = make_generator(r.rng, r.seed)  # the VAE posterior's draws
        start = np.concatenate([codec.encode_latents(
            to_unit_image(image, big_width, big_height), generator, vae=r.hires_vae)
            for image in images])
    start = crop_latents(start, (height // scale, width // scale))
    return start, replace(r, width=width, height=height, mode="img2img",
                          strength=hires.denoise, hires_stage="second")
