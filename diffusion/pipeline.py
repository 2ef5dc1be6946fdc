"""txt2img / img2img / inpaint: the denoising loop, visible in one place.

The models run on the GPU (gpustd); the scheduler math runs in numpy float64 on latents that
are a few hundred KiB, so each step is: upload latents, one UNet pass, read the prediction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpustd import Tensor, asarray

from .models import AutoencoderKL, CLIPTextModel, UNet2DConditionModel
from .rng import RNG_SOURCES, TorchCPUGenerator, make_generator
from .schedulers import get_scheduler
from .tokenizer import CLIPTokenizer

__all__ = ["GenerationResult", "SamplingDefaults", "StableDiffusion"]

Progress = Callable[[int, int], None]  # (steps done, total steps)
# (steps done, total steps, current latents) -> False to stop sampling early
StepCallback = Callable[[int, int, np.ndarray], bool | None]
Generator = np.random.Generator | TorchCPUGenerator  # what `standard_normal` is drawn from


@dataclass
class GenerationResult:
    images: list[np.ndarray]  # (H, W, 3) uint8 each
    seeds: list[int]
    settings: dict[str, Any]  # what produced them (for the PNG infotext)


@dataclass(frozen=True)
class SamplingDefaults:
    """The sampling settings a model recommends (its folder's `defaults.json`, read by
    `diffusion.load.read_defaults`); None where it recommends nothing."""

    steps: int | None = None
    sampler: str | None = None  # a WebUI sampler name as spelled in SAMPLERS
    cfg_scale: float | None = None


def _check_size(width: int, height: int) -> None:
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, (int, np.integer)) or value < 8 or value % 8:
            lower = max(8, int(value) // 8 * 8) if isinstance(value, (int, float)) else 512
            raise ValueError(f"{name} must be a positive multiple of 8 (the VAE downsamples by "
                             f"8), got {value!r}; try {lower}")


def _to_unit_image(image: Any, width: int, height: int) -> np.ndarray:
    """An RGB image (PIL, or HxWx3 uint8 array) resized to (height, width), as
    (1, 3, H, W) float32 in [-1, 1]."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        array = np.asarray(image)
        if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (3, 4):
            raise ValueError(f"init image must be a PIL image or an HxWx3 uint8 array, got "
                             f"{array.dtype} {array.shape}")
        image = Image.fromarray(array[..., :3])
    image = image.convert("RGB")
    if image.size != (width, height):
        image = image.resize((width, height), Image.Resampling.LANCZOS)
    pixels = np.asarray(image, np.float32) / 127.5 - 1.0
    return pixels.transpose(2, 0, 1)[None]


def _to_mask(mask: Any, width: int, height: int) -> np.ndarray:
    """A mask (PIL / array; white = repaint) as (1, 1, H, W) float32 of 0 and 1."""
    from PIL import Image

    if not isinstance(mask, Image.Image):
        array = np.asarray(mask)
        if array.ndim == 3:
            array = array[..., 0]
        if array.ndim != 2:
            raise ValueError(f"mask must be a 2-D image, got shape {array.shape}")
        mask = Image.fromarray((array > (0.5 if array.dtype != np.uint8 else 127)).astype(
            np.uint8) * 255)
    mask = mask.convert("L")
    if mask.size != (width, height):
        mask = mask.resize((width, height), Image.Resampling.NEAREST)
    return (np.asarray(mask, np.float32) >= 127.5).astype(np.float32)[None, None]


def _to_uint8(images: np.ndarray) -> list[np.ndarray]:
    pixels = np.clip(images / 2 + 0.5, 0, 1).transpose(0, 2, 3, 1)
    return [np.round(p * 255).astype(np.uint8) for p in pixels]


class StableDiffusion:
    """A Stable Diffusion 1.x/2.x model on the GPU: tokenizer, text encoder, UNet, VAE, the
    model's scheduler config and the sampling `defaults` it recommends (what the CLI and the
    web page start from; `generate` keeps its own keyword defaults). Build with
    `diffusion.load_pipeline(path)`."""

    def __init__(self, *, tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel,
                 unet: UNet2DConditionModel, vae: AutoencoderKL,
                 scheduler_config: dict[str, Any], name: str = "model",
                 defaults: SamplingDefaults | None = None) -> None:
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.unet = unet
        self.vae = vae
        self.scheduler_config = dict(scheduler_config)
        self.name = name
        self.defaults = defaults or SamplingDefaults()

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config["latent_channels"])

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent along each side (8 for SD's VAE)."""
        return 2 ** (len(self.vae.config["block_out_channels"]) - 1)

    @property
    def native_size(self) -> int:
        """The image side the model was trained at (512 for SD 1.x): the default width/height."""
        return int(self.unet.config.get("sample_size", 64)) * self.vae_scale_factor

    @property
    def is_inpainting_model(self) -> bool:
        return int(self.unet.config["in_channels"]) == 2 * self.latent_channels + 1

    # -- pieces -----------------------------------------------------------------------
    def encode_prompt(self, prompts: Sequence[str], *, clip_skip: int = 0) -> Tensor:
        ids = self.tokenizer(list(prompts))
        return self.text_encoder(ids, clip_skip=clip_skip)

    def _denoise(self, latents: np.ndarray, context: Tensor, timesteps: np.ndarray,
                 scheduler: Any, cfg_scale: float, generator: Generator,
                 extra: np.ndarray | None = None,
                 after_step: Callable[[int, np.ndarray], np.ndarray] | None = None,
                 progress: Progress | None = None,
                 on_step: StepCallback | None = None) -> np.ndarray:
        guided = cfg_scale != 1.0
        device = context.device
        for i, t in enumerate(timesteps):
            model_in = scheduler.scale_model_input(latents, t)
            if extra is not None:
                model_in = np.concatenate([model_in, extra], axis=1)
            if guided:
                model_in = np.concatenate([model_in, model_in])
            x = asarray(model_in.astype(np.float32), device=device)
            if x.dtype != context.dtype:
                x = x.astype(context.dtype)
            out = self.unet(x, np.full(x.shape[0], t, np.float32), context).numpy()
            out = out.astype(np.float64)
            if guided:
                uncond, cond = np.split(out, 2)
                out = uncond + cfg_scale * (cond - uncond)
            latents = scheduler.step(out, t, latents, generator=generator)
            if after_step is not None:
                latents = after_step(i, latents)
            if progress is not None:
                progress(i + 1, len(timesteps))
            if on_step is not None and on_step(i + 1, len(timesteps), latents) is False:
                break
        return latents

    def _context(self, prompt: str, negative_prompt: str, batch: int, cfg_scale: float,
                 clip_skip: int) -> Tensor:
        prompts = [prompt] * batch
        if cfg_scale != 1.0:  # classifier-free guidance: unconditional first, one batch of 2B
            prompts = [negative_prompt] * batch + prompts
        return self.encode_prompt(prompts, clip_skip=clip_skip)

    def _decode(self, latents: np.ndarray, dtype: Any) -> list[np.ndarray]:
        device = self.unet.conv_in.weight.device
        images = []
        for latent in latents:  # one at a time: the VAE decoder's activations are large
            z = asarray((latent[None] / self.vae.scaling_factor).astype(np.float32),
                        device=device)
            images.append(self.vae.decode(z.astype(dtype) if z.dtype != dtype else z)
                          .numpy().astype(np.float32))
        return _to_uint8(np.concatenate(images))

    def _encode(self, pixels: np.ndarray, generator: Generator) -> np.ndarray:
        """A latent drawn from the VAE's posterior for `pixels`, scaled for the UNet."""
        dtype = self.unet.conv_in.weight.dtype
        x = asarray(pixels, device=self.unet.conv_in.weight.device)
        mean, logvar = self.vae.encode(x.astype(dtype) if x.dtype != dtype else x)
        mean_np = mean.numpy().astype(np.float64)
        noise = generator.standard_normal(mean_np.shape)
        latent = AutoencoderKL.sample(mean_np, logvar.numpy().astype(np.float64), noise)
        return latent * self.vae.scaling_factor

    # -- pipelines --------------------------------------------------------------------
    def generate(self, prompt: str, *, negative_prompt: str = "", steps: int = 20,
                 cfg_scale: float = 7.0, sampler: str = "Euler a", seed: int | None = None,
                 width: int | None = None, height: int | None = None, batch_size: int = 1,
                 clip_skip: int = 0, init_image: Any = None, strength: float = 0.75,
                 mask: Any = None, rng: str = "numpy",
                 progress: Progress | None = None,
                 on_step: StepCallback | None = None) -> GenerationResult:
        """txt2img (no init image), img2img (`init_image`, `strength`) or inpaint
        (`init_image` + `mask`, white = repaint). Same seed and settings give the same image
        on the same adapter.

        `rng` picks the random source the seed drives: "numpy" (`np.random.default_rng`) or
        "torch", whose draws equal diffusers' with `generator=torch.Generator("cpu")
        .manual_seed(seed)` (the WebUI's "RNG: CPU"), so the same seed starts from the same
        noise there and here. Width and height default to the model's `native_size`.

        `on_step(done, total, latents)` is called after each step with the current latents
        (for previews); returning False stops sampling there and the partly denoised latents
        are decoded (the WebUI's Interrupt/Skip)."""
        width = self.native_size if width is None else width
        height = self.native_size if height is None else height
        _check_size(width, height)
        if not isinstance(steps, (int, np.integer)) or steps < 1:
            raise ValueError(f"steps must be a positive integer, got {steps!r}")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        if not 0.0 < strength <= 1.0:
            raise ValueError(f"strength must be in (0, 1], got {strength!r}")
        if mask is not None and init_image is None:
            raise ValueError("inpainting needs an init image as well as a mask")
        if self.is_inpainting_model and mask is None:
            raise ValueError("this is an inpainting model (9-channel UNet): give init_image and "
                             "mask")
        if rng not in RNG_SOURCES:
            raise ValueError(f"rng must be one of {list(RNG_SOURCES)}, got {rng!r}")
        seed = int(np.random.default_rng().integers(2**32)) if seed is None else int(seed)
        generator = make_generator(rng, seed)
        scheduler = get_scheduler(sampler, self.scheduler_config)
        scheduler.set_timesteps(steps)
        timesteps = np.asarray(scheduler.timesteps)
        context = self._context(prompt, negative_prompt, batch_size, cfg_scale, clip_skip)
        scale = self.vae_scale_factor
        shape = (batch_size, self.latent_channels, height // scale, width // scale)
        mode = "txt2img" if init_image is None else "img2img" if mask is None else "inpaint"
        inpaint9 = mode == "inpaint" and self.is_inpainting_model
        extra = after_step = None
        # Random draws come in diffusers' order (image latents, noise, masked-image latents),
        # so the same draws reproduce its pipelines exactly.
        if mode != "txt2img":
            pixels = _to_unit_image(init_image, width, height)
            start = steps - min(int(steps * strength), steps)
            timesteps = timesteps[start * scheduler.order:]
            if len(timesteps) == 0:
                raise ValueError(f"strength {strength} with {steps} steps leaves no step to run; "
                                 "raise strength or steps")
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(start * scheduler.order)
        if mode == "img2img" or (mode == "inpaint" and (not inpaint9 or strength < 1.0)):
            image_latents = np.repeat(self._encode(pixels, generator), batch_size, 0)
        noise = generator.standard_normal(shape)
        if mode == "txt2img" or (mode == "inpaint" and strength == 1.0):
            latents = noise * scheduler.init_noise_sigma
        else:
            latents = scheduler.add_noise(image_latents, noise, timesteps[:1])
        if mode == "inpaint":
            full_mask = _to_mask(mask, width, height)
            small = np.repeat(full_mask[:, :, ::scale, ::scale], batch_size, 0)  # nearest
            if inpaint9:
                masked = pixels * (full_mask < 0.5)
                masked_latents = np.repeat(self._encode(masked, generator), batch_size, 0)
                extra = np.concatenate([small, masked_latents], axis=1)
            else:
                def after_step(i: int, x: np.ndarray) -> np.ndarray:
                    # keep the unmasked region on the image's own noising trajectory
                    known = image_latents
                    if i + 1 < len(timesteps):
                        known = scheduler.add_noise(image_latents, noise, timesteps[i + 1:i + 2])
                    return (1 - small) * known + small * x

        latents = self._denoise(latents, context, timesteps, scheduler, cfg_scale, generator,
                                extra=extra, after_step=after_step, progress=progress,
                                on_step=on_step)
        images = self._decode(latents, self.unet.conv_in.weight.dtype)
        settings = dict(mode=mode, prompt=prompt, negative_prompt=negative_prompt, steps=steps,
                        sampler=sampler, cfg_scale=cfg_scale, seed=seed, width=width,
                        height=height, batch_size=batch_size, clip_skip=clip_skip,
                        model=self.name, rng=rng)
        if init_image is not None:
            settings["strength"] = strength
        return GenerationResult(images=images, seeds=[seed] * batch_size, settings=settings)

    def txt2img(self, prompt: str, **kwargs: Any) -> GenerationResult:
        """Text to image. Keywords as `generate`."""
        return self.generate(prompt, **kwargs)

    def img2img(self, init_image: Any, prompt: str, **kwargs: Any) -> GenerationResult:
        """Image to image: `strength` (0..1] says how much of the schedule re-noises it."""
        return self.generate(prompt, init_image=init_image, **kwargs)

    def inpaint(self, init_image: Any, mask: Any, prompt: str, **kwargs: Any) -> GenerationResult:
        """Repaint where `mask` is white: the 9-channel inpainting UNet when the model has one,
        else mask-blended latents with the ordinary UNet."""
        kwargs.setdefault("strength", 1.0)
        return self.generate(prompt, init_image=init_image, mask=mask, **kwargs)
