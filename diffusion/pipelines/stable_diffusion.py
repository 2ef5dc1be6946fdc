"""txt2img / img2img / inpaint: the denoising loop, visible in one place.

The models run on the GPU (gpustd); the scheduler math runs in numpy float64 on latents that
are a few hundred KiB, so each step is: upload latents, one UNet pass, read the prediction.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np

from gpustd import Tensor

from .. import samplers
from ..loaders.vae_file import vae_hash, vae_name
from ..lora import LORA_TAGS, LoraManager, lora_hashes, lora_uses
from ..models import AutoencoderKL, CLIPTextModel, UNet2DConditionModel
from ..models.tiled_vae import vae_decode, vae_encode
from ..noise.image_noise import ImageNoise
from ..noise.rng import RNG_SOURCES, TorchCPUGenerator, make_generator
from ..samplers.denoiser import DiscreteSchedule
from ..schedulers import get_scheduler, scheduler_from_config
from ..text import conditioning
from ..text.embeddings import EmbeddingDatabase, EmbeddingFinder, ti_hashes
from ..text.prompts import extract_extra_networks
from ..text.tokenizer import CLIPTokenizer
from ..upscalers.interpolation import HiresFix, upscale_image, upscale_latents
from . import sampling
from .capture import ModelCapture
from .control import Control, ControlUnit
from .refiner import HandOff, check_refiner, cutoff

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
    `diffusion.pipelines.load.read_defaults`); None where it recommends nothing."""

    steps: int | None = None
    sampler: str | None = None  # a WebUI sampler name as spelled in SAMPLERS
    cfg_scale: float | None = None


@dataclass(frozen=True)
class _Request:
    """One generate() call's validated settings."""

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
    cfg_pp: bool = False  # the timestep loop runs DDIM CFG++
    # finds textual-inversion names while prompts are encoded; `.used` gives the TI hashes
    embeddings: EmbeddingFinder | None = None
    # a StableDiffusion that takes over at `switch_at` (diffusion.pipelines.refiner)
    refiner: Any = None
    switch_at: float = 0.8
    # ControlNet / T2I-Adapter units (diffusion.pipelines.control.ControlUnit)
    control: tuple[Any, ...] = ()


@dataclass(frozen=True)
class _Seeds:
    """A batch's seeds as the WebUI gives them: image k has seed + k (all the same seed when a
    variation seed varies them), variation seed subseed + k, and the eta noise seed delta."""

    seeds: list[int]
    subseeds: list[int]
    subseed_strength: float
    eta_noise_seed_delta: int
    resize_from: tuple[int, int] | None = None  # latent (height, width) of "Seed resize from"

    @classmethod
    def webui(cls, seed: int, batch: int, subseed: int | None, subseed_strength: float,
              eta_noise_seed_delta: int, resize_from: tuple[int, int] | None = None) -> _Seeds:
        varied = subseed_strength != 0
        subseed = int(np.random.default_rng().integers(2**32)) if subseed is None else subseed
        return cls([seed + (0 if varied else k) for k in range(batch)],
                   [int(subseed) + k for k in range(batch)], float(subseed_strength),
                   int(eta_noise_seed_delta), resize_from)

    def noise(self, rng: str, shape: tuple[int, int, int], *,
              first_pass: bool = True) -> ImageNoise:
        """Fresh generators for one pass over latents of `shape` (C, H, W); seed resize
        applies to the first pass only (the hires pass draws at its own size)."""
        return ImageNoise(rng, self.seeds, shape, subseeds=self.subseeds,
                          subseed_strength=self.subseed_strength,
                          eta_noise_seed_delta=self.eta_noise_seed_delta,
                          resize_from=self.resize_from if first_pass else None)

    def fields(self, uses_ensd: bool) -> dict[str, Any]:
        """Settings for the infotext: variation seeds when used, ENSD where it matters."""
        fields: dict[str, Any] = {}
        if self.subseed_strength:
            fields.update(subseed=self.subseeds[0], subseeds=self.subseeds,
                          subseed_strength=self.subseed_strength)
        if self.eta_noise_seed_delta and uses_ensd:
            fields["ensd"] = self.eta_noise_seed_delta
        return fields


def hires_fix(hires: HiresFix) -> dict[str, Any]:
    """The settings a hires pass adds (the infotext's Hires fields)."""
    fields: dict[str, Any] = {"hires_upscaler": hires.upscaler, "hires_denoise": hires.denoise}
    if hires.resize is not None:
        fields["hires_resize"] = hires.resize
    else:
        fields["hires_scale"] = hires.scale
    if hires.steps:
        fields["hires_steps"] = hires.steps
    return fields


def _timestep_scheduler(name: str, config: dict[str, Any]) -> Any:
    """The diffusers-style scheduler that runs WebUI timestep sampler `name` (DDIM CFG++ is
    DDIM with another step, see `_denoise`)."""
    return get_scheduler("DDIM" if name == "DDIM CFG++" else name, config)


def _latent_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The repaint mask (1, 1, H, W) at latent size, as the WebUI makes it for an ordinary
    UNet: Pillow's default (bicubic) resize of the mask image, rounded to 0/1."""
    from PIL import Image

    image = Image.fromarray((mask[0, 0] * 255).astype(np.uint8)).convert("RGB")
    small = image.resize((size[1], size[0]))
    return np.around(np.asarray(small, np.float32)[..., 0] / 255)[None, None]


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
    `diffusion.load_pipeline(path)`, which gives SDXL models as
    `diffusion.StableDiffusionXL` (this class with SDXL's text conditioning)."""

    family = "sd1"  # "sd1", "sd2" (diffusion.loaders' detection); "sdxl*" in the subclass
    is_sdxl = False

    def __init__(self, *, tokenizer: CLIPTokenizer, text_encoder: CLIPTextModel,
                 unet: UNet2DConditionModel, vae: AutoencoderKL,
                 scheduler_config: dict[str, Any], name: str = "model",
                 defaults: SamplingDefaults | None = None, family: str | None = None,
                 is_turbo: bool = False) -> None:
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.unet = unet
        self.vae = vae
        self.scheduler_config = dict(scheduler_config)
        self.name = name
        self.defaults = defaults or SamplingDefaults()
        # textual-inversion embeddings found by name in prompts (diffusion.text.embeddings)
        self.embeddings: EmbeddingDatabase | None = None
        # where <lora:NAME:...> tags find NAME.safetensors; the LoRAs patched in right now
        self.lora_dir: str | os.PathLike[str] | None = None
        self._loras: LoraManager | None = None
        # a VAE loaded in place of the model's own (diffusion.loaders.vae_file.load_vae): its path,
        # for the infotext's "VAE hash" / "VAE"
        self.vae_path: str | os.PathLike[str] | None = None
        self.family = family or self.family
        # an adversarially distilled model (SD-Turbo, SDXL-Turbo;
        # diffusion.pipelines.load.is_turbo): 512 px, 1-4 steps without guidance
        self.is_turbo = is_turbo
        # The UNet step and the text encoder's transformer, recorded once and replayed by
        # every generation. Each signature pins its activations on the device (SD 1.5 f32,
        # 512 px, CFG batch 2: 726 MiB for the UNet): four UNet signatures cover a hires fix
        # whose cond and uncond differ in length (two sizes, two lengths). Encoded prompts
        # outlive the next encoding: copied. The VAE decode stays eager: a kept capture of it
        # would pin 1.4 GiB at 512 px (5.5 at 1024) for ~30 ms an image.
        self._unet_capture = ModelCapture(sampling.unet_call, max_signatures=4)
        self._text_capture = ModelCapture(CLIPTextModel.encode_tokens, max_signatures=2,
                                          copy_outputs=True)

    @property
    def latent_channels(self) -> int:
        return int(self.vae.config["latent_channels"])

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per latent along each side (8 for SD's VAE)."""
        return 2 ** (len(self.vae.config["block_out_channels"]) - 1)

    @property
    def native_size(self) -> int:
        """The image side the model was trained at (512 for SD 1.x, 1024 for SDXL, at most 512
        for the Turbo models): the default width/height."""
        size = int(self.unet.config.get("sample_size", 64)) * self.vae_scale_factor
        return min(size, 512) if self.is_turbo else size

    @property
    def is_inpainting_model(self) -> bool:
        return int(self.unet.config["in_channels"]) == 2 * self.latent_channels + 1

    # -- pieces -----------------------------------------------------------------------
    def encode_prompt(self, prompts: Sequence[str], *, clip_skip: int = 0) -> Tensor:
        ids = self.tokenizer(list(prompts))
        return self._text_encoder()(ids, clip_skip=clip_skip)

    def _text_encoder(self) -> Callable[..., Tensor]:
        """The text encoder with its transformer replayed from the kept capture (the token
        lookup and textual-inversion rows run as they are: host work per prompt)."""
        return partial(self.text_encoder, encode_tokens=self._text_capture.of(self.text_encoder))

    def _denoise(self, latents: np.ndarray, unet: sampling.GuidedUNet, timesteps: np.ndarray,
                 scheduler: Any, cfg_scale: float, generator: Generator,
                 extra: np.ndarray | None = None,
                 after_step: Callable[[int, np.ndarray], np.ndarray] | None = None,
                 progress: Progress | None = None,
                 on_step: StepCallback | None = None, cfg_pp: bool = False) -> np.ndarray:
        """The diffusers pipelines' loop: guidance on the UNet's outputs, then the scheduler's
        step; step i uses the conditioning of WebUI step i (prompt editing). `cfg_pp`: the
        WebUI's DDIM CFG++ (guidance scale / 12.5 for x0, the unconditional noise for the
        direction)."""
        for i, t in enumerate(timesteps):
            model_in = scheduler.scale_model_input(latents, t)
            if extra is not None:
                model_in = np.concatenate([model_in, extra], axis=1)
            uncond, out = unet(model_in, float(t), i)
            if cfg_pp:  # x0 from guidance at scale / 12.5, the way back from the uncond noise
                guided = out if uncond is None else uncond + cfg_scale / 12.5 * (out - uncond)
                latents = scheduler.step(guided, t, latents, generator=generator,
                                         direction_output=out if uncond is None else uncond)
            else:
                if uncond is not None:
                    out = uncond + cfg_scale * (out - uncond)
                latents = scheduler.step(out, t, latents, generator=generator)
            if after_step is not None:
                latents = after_step(i, latents)
            if progress is not None:
                progress(i + 1, len(timesteps))
            if on_step is not None and on_step(i + 1, len(timesteps), latents) is False:
                break
        return latents

    def _contexts(self, r: _Request, steps: int, *, webui: bool = True) -> sampling.Contexts:
        """Step -> (uncond, cond) text conditioning, uncond None without guidance.

        `webui`: the WebUI's prompt handling (emphasis, BREAK, prompts past 75 tokens, prompt
        editing over `steps` model evaluations, extra-network tags removed); else diffusers'
        (the text as it is, truncated to 77 tokens)."""
        batch = r.batch_size
        if not webui:  # diffusers guides only above 1
            cond = self.encode_prompt([r.prompt] * batch, clip_skip=r.clip_skip)
            uncond = None if r.cfg_scale <= 1.0 else self.encode_prompt(
                [r.negative_prompt] * batch, clip_skip=r.clip_skip)
            return lambda step: (uncond, cond)
        encode = partial(conditioning.encode, self.tokenizer, self._text_encoder(), steps=steps,
                         clip_skip=r.clip_skip, embeddings=r.embeddings)
        conds = encode([r.prompt] * batch)
        unconds = None if r.cfg_scale == 1.0 else encode([r.negative_prompt] * batch,
                                                          extra_networks=False)
        return lambda step: (None if unconds is None else unconds.at(step), conds.at(step))

    def _guided(self, r: _Request, steps: int, *, webui: bool = True,
                discrete: DiscreteSchedule | None = None) -> Any:
        """The guided UNet of a pass (a sampling.GuidedUNet); with a refiner and the WebUI's
        samplers one that hands over to the refiner's (diffusion.pipelines.refiner.HandOff)."""
        unet = sampling.GuidedUNet(self._unet_capture.of(self.unet),
                                   self._contexts(r, steps, webui=webui),
                                   dtype=self.unet.conv_in.weight.dtype,
                                   control=Control(r.control, total_steps=steps)
                                   if r.control else None)
        if r.refiner is None or not webui:
            return unet
        other = r.refiner
        return HandOff(unet, lambda: other._guided(replace(r, refiner=None), steps,
                                                   discrete=discrete), r.switch_at, discrete)

    def _activate_loras(self, prompt: str) -> str | None:
        """Patch in exactly the LoRAs the prompt's `<lora:...>` tags name (removing earlier
        ones), before anything is encoded; the infotext's "Lora hashes", None for none."""
        _, networks = extract_extra_networks(prompt)
        wanted = [tag for tag in networks if tag.kind in LORA_TAGS]
        if wanted and self.lora_dir is None:
            raise ValueError(f"the prompt names <{wanted[0].kind}:{wanted[0].name}> but no LoRA "
                             "folder is set: pass --lora-dir DIR (pipe.lora_dir in Python)")
        if not wanted and self._loras is None:
            return None
        if self._loras is None:
            self._loras = LoraManager(self)
        uses = lora_uses(wanted, self.lora_dir, load=self._loras.load) if wanted else []
        self._loras.set(uses)
        return lora_hashes(uses) or None

    def _embedding_lookup(self) -> EmbeddingFinder | None:
        if self.embeddings is None:
            return None
        width = int(self.text_encoder.config["hidden_size"])
        return self.embeddings.lookup(self.tokenizer, width=width)

    def _decode(self, latents: np.ndarray) -> list[np.ndarray]:
        """Pictures of the latents, one at a time (the decoder's activations are large), tiled
        where a picture is too large for the device (diffusion.models.tiled_vae)."""
        images = [vae_decode(self.vae, (latent[None] / self.vae.scaling_factor).astype(
            np.float32)) for latent in latents]
        return _to_uint8(np.concatenate(images))

    def _encode(self, pixels: np.ndarray, generator: Generator) -> np.ndarray:
        """A latent drawn from the VAE's posterior for `pixels`, scaled for the UNet (tiled
        where the picture is too large for the device)."""
        mean, logvar = vae_encode(self.vae, pixels.astype(np.float32))
        mean_np = mean.astype(np.float64)
        noise = generator.standard_normal(mean_np.shape)
        latent = AutoencoderKL.sample(mean_np, logvar.astype(np.float64), noise)
        return latent * self.vae.scaling_factor

    # -- pipelines --------------------------------------------------------------------
    def generate(self, prompt: str, *, negative_prompt: str = "", steps: int = 20,
                 cfg_scale: float = 7.0, sampler: str = "Euler a",
                 scheduler: str = "Automatic", seed: int | None = None,
                 width: int | None = None, height: int | None = None, batch_size: int = 1,
                 clip_skip: int = 0, init_image: Any = None, strength: float = 0.75,
                 mask: Any = None, rng: str = "numpy", subseed: int | None = None,
                 subseed_strength: float = 0.0, eta_noise_seed_delta: int = 0,
                 hires: HiresFix | None = None,
                 sampler_options: sampling.SamplerOptions | None = None,
                 seed_resize_from: tuple[int, int] | None = None,
                 refiner: StableDiffusion | None = None, refiner_switch_at: float = 0.8,
                 progress: Progress | None = None,
                 on_step: StepCallback | None = None,
                 control: Sequence[ControlUnit] = ()) -> GenerationResult:
        """txt2img (no init image), img2img (`init_image`, `strength`) or inpaint
        (`init_image` + `mask`, white = repaint). Same seed and settings give the same image
        on the same adapter. Width and height default to the model's `native_size`.

        `sampler` is a WebUI or ComfyUI sampler name ("Euler a", "DPM++ 2M", "dpmpp_2m_sde",
        ...; old combined names like "DPM++ 2M Karras" carry their schedule type) and
        `scheduler` the WebUI's schedule type ("Automatic": the sampler's default). These run
        as the WebUI runs them: image k of a batch has seed `seed + k` and its own generator,
        whose later draws are the ancestral samplers' step noise (from `seed + k +
        eta_noise_seed_delta` when that is set); `subseed`/`subseed_strength` are the WebUI's
        variation seed. "DDIM", "PLMS" and "UniPC" run as diffusers' schedulers of those
        names, configured from the model's scheduler config; `sampler="diffusers"` runs the
        scheduler the model folder ships exactly as diffusers' pipelines do. Both of these
        draw a whole batch from the one seed, as diffusers does.

        `rng` picks the random source the seed drives: "numpy" or "torch", whose draws equal
        torch's CPU generator (the WebUI's "RNG: CPU"; diffusers with
        `generator=torch.Generator("cpu").manual_seed(seed)`).

        `refiner`: another loaded model (the SDXL refiner) that takes over at
        `refiner_switch_at` of the sampling, as the WebUI or, with "diffusers", as diffusers'
        `denoising_end` / `denoising_start` hand it over (diffusion.pipelines.refiner).

        `on_step(done, total, latents)` is called after each step with the current latents
        (for previews); returning False stops sampling there and the partly denoised latents
        are decoded (the WebUI's Interrupt/Skip).

        `control`: ControlNet / T2I-Adapter units guiding every step
        (diffusion.pipelines.control), their images at width x height."""
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
        request = _Request(
            prompt=prompt, negative_prompt=negative_prompt, steps=int(steps),
            cfg_scale=float(cfg_scale), seed=seed, width=width, height=height,
            batch_size=int(batch_size), clip_skip=clip_skip, strength=float(strength),
            rng=rng, mode="txt2img" if init_image is None else "img2img" if mask is None
            else "inpaint", embeddings=self._embedding_lookup(), control=tuple(control))
        if refiner is not None:
            switch = check_refiner(self, refiner, refiner_switch_at, request.mode)
            if hires is not None:
                raise ValueError("the refiner and the hires fix do not combine here; run the "
                                 "hires pass as img2img with the refiner instead")
            request = replace(request, refiner=refiner, switch_at=switch)
        if sampler == "diffusers":
            scheduler_ = scheduler_from_config(self.scheduler_config)
            label, schedule = "diffusers", None
        else:
            label, schedule = samplers.resolve(sampler, scheduler)
            info = samplers.lookup(label)
            if info.kind == "timestep":
                scheduler_ = _timestep_scheduler(label, self.scheduler_config)
                request = replace(request, cfg_pp=info.needs_uncond)
        # the WebUI's extra networks: the prompt's LoRAs in place before it is encoded (a
        # "diffusers" run leaves the model as loaded)
        loras = None if sampler == "diffusers" else self._activate_loras(prompt)
        if hires is not None and request.mode != "txt2img":
            raise ValueError("hires fix is a txt2img option; for img2img, raise the size instead")
        if sampler == "diffusers" or info.kind == "timestep":
            if subseed_strength or seed_resize_from or sampler_options:
                raise ValueError("variation seeds, seed resize and sampler options (eta, "
                                 f"churn) need a k-diffusion sampler; {label} draws the "
                                 "batch's noise from one seed, as diffusers does")
            latents = self._run_scheduler(request, scheduler_, init_image, mask, progress,
                                          on_step, webui=sampler != "diffusers", hires=hires)
            seeds = [seed] * request.batch_size
            extra: dict[str, Any] = {}
        else:
            resize = None
            if seed_resize_from is not None:
                f = self.vae_scale_factor
                resize = (int(seed_resize_from[1]) // f, int(seed_resize_from[0]) // f)
            image_seeds = _Seeds.webui(seed, request.batch_size, subseed, subseed_strength,
                                       eta_noise_seed_delta, resize)
            latents, extra = self._run_kdiffusion(
                request, label, schedule, init_image, mask, progress, on_step,
                seeds=image_seeds, hires=hires,
                options=sampler_options or sampling.SamplerOptions())
            if seed_resize_from is not None:
                extra["seed_resize_from"] = tuple(seed_resize_from)
            schedule, seeds = extra.pop("schedule"), image_seeds.seeds
        # after the hand-off the refiner's VAE decodes, as in the WebUI and diffusers
        images = (self if refiner is None else refiner)._decode(latents)
        settings = dict(mode=request.mode, prompt=prompt, negative_prompt=negative_prompt,
                        steps=steps, sampler=label, scheduler=schedule, cfg_scale=cfg_scale,
                        seed=seed, width=width, height=height, batch_size=batch_size,
                        clip_skip=clip_skip, model=self.name, rng=rng, **extra)
        if init_image is not None:
            settings["strength"] = strength
        if hires is not None:
            settings.update(hires_fix(hires))
        if refiner is not None:
            settings.update(refiner=refiner.name, refiner_switch_at=request.switch_at)
        if loras:
            settings["lora_hashes"] = loras
        if self.vae_path is not None:
            settings.update(vae_hash=vae_hash(self.vae_path), vae=vae_name(self.vae_path))
        if request.embeddings is not None and request.embeddings.used:
            # the prompt's names, then the negative prompt's, as the WebUI writes them
            settings["ti_hashes"] = ti_hashes(request.embeddings.used.values())
        return GenerationResult(images=images, seeds=seeds, settings=settings)

    def _run_scheduler(self, r: _Request, scheduler: Any, init_image: Any, mask: Any,
                       progress: Progress | None, on_step: StepCallback | None, *,
                       webui: bool, hires: HiresFix | None = None,
                       image_latents: np.ndarray | None = None) -> np.ndarray:
        """The diffusers pipelines' loop around a diffusers-style scheduler; the latents.
        `webui`: the prompt is read as the WebUI reads it (else as diffusers does).
        `image_latents`: img2img from these latents instead of encoding `init_image`.
        `hires`: then a second pass, img2img from the upscaled result, running the hires
        steps of a schedule stretched by 1 / strength (as the WebUI's hires pass)."""
        if r.refiner is not None and not webui:  # diffusers' denoising_end / denoising_start
            generator = make_generator(r.rng, r.seed)
            latents = self._scheduler_pass(r, scheduler, init_image, mask, progress, on_step,
                                           webui=False, image_latents=image_latents,
                                           generator=generator, end_at=r.switch_at)
            other = replace(r, refiner=None, mode="img2img")
            return r.refiner._scheduler_pass(
                other, scheduler_from_config(r.refiner.scheduler_config), None, None, progress,
                on_step, webui=False, image_latents=latents, generator=generator,
                start_at=r.switch_at)
        latents = self._scheduler_pass(r, scheduler, init_image, mask, progress, on_step,
                                       webui=webui, image_latents=image_latents)
        if hires is None:
            return latents
        start, r = self._hires_latents(r, latents, hires)
        steps = hires.steps or r.steps
        r = replace(r, steps=max(int(steps / min(hires.denoise, 0.999)), 1))
        again = type(scheduler).from_config(scheduler.config)
        return self._scheduler_pass(r, again, None, None, progress, on_step, webui=webui,
                                    image_latents=start)

    def _scheduler_pass(self, r: _Request, scheduler: Any, init_image: Any, mask: Any,
                        progress: Progress | None, on_step: StepCallback | None, *,
                        webui: bool, image_latents: np.ndarray | None,
                        generator: Generator | None = None, end_at: float | None = None,
                        start_at: float | None = None) -> np.ndarray:
        """One pass of `_run_scheduler`; `end_at` / `start_at`: diffusers' `denoising_end` /
        `denoising_start` (the second continues `image_latents` as they are)."""
        generator = generator or make_generator(r.rng, r.seed)
        scheduler.set_timesteps(r.steps)
        timesteps = np.asarray(scheduler.timesteps)
        unet = self._guided(r, r.steps, webui=webui)
        if start_at is not None:
            count = int((timesteps < cutoff(scheduler, start_at)).sum())
            if scheduler.order == 2 and count % 2 == 0:
                count += 1
            begin = len(timesteps) - count
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(begin)
            return self._denoise(image_latents, unet, timesteps[begin:], scheduler, r.cfg_scale,
                                 generator, progress=progress, on_step=on_step)
        scale = self.vae_scale_factor
        shape = (r.batch_size, self.latent_channels, r.height // scale, r.width // scale)
        inpaint9 = r.mode == "inpaint" and self.is_inpainting_model
        strength, steps = r.strength, r.steps
        extra = after_step = None
        # Random draws come in diffusers' order (image latents, noise, masked-image latents),
        # so the same draws reproduce its pipelines exactly.
        if r.mode != "txt2img":
            if image_latents is None:
                pixels = _to_unit_image(init_image, r.width, r.height)
            start = steps - min(int(steps * strength), steps)
            timesteps = timesteps[start * scheduler.order:]
            if len(timesteps) == 0:
                raise ValueError(f"strength {strength} with {steps} steps leaves no step to run; "
                                 "raise strength or steps")
            if hasattr(scheduler, "set_begin_index"):
                scheduler.set_begin_index(start * scheduler.order)
        if image_latents is None and (r.mode == "img2img" or (
                r.mode == "inpaint" and (not inpaint9 or strength < 1.0))):
            image_latents = np.repeat(self._encode(pixels, generator), r.batch_size, 0)
        noise = generator.standard_normal(shape)
        if r.mode == "txt2img" or (r.mode == "inpaint" and strength == 1.0):
            latents = noise * scheduler.init_noise_sigma
        else:
            latents = scheduler.add_noise(image_latents, noise, timesteps[:1])
        if r.mode == "inpaint":
            full_mask = _to_mask(mask, r.width, r.height)
            small = np.repeat(full_mask[:, :, ::scale, ::scale], r.batch_size, 0)  # nearest
            if inpaint9:
                masked = pixels * (full_mask < 0.5)
                masked_latents = np.repeat(self._encode(masked, generator), r.batch_size, 0)
                extra = np.concatenate([small, masked_latents], axis=1)
            else:
                def after_step(i: int, x: np.ndarray) -> np.ndarray:
                    # keep the unmasked region on the image's own noising trajectory
                    known = image_latents
                    if i + 1 < len(timesteps):
                        known = scheduler.add_noise(image_latents, noise, timesteps[i + 1:i + 2])
                    return (1 - small) * known + small * x

        if end_at is not None:
            timesteps = timesteps[timesteps >= cutoff(scheduler, end_at)]
        return self._denoise(latents, unet, timesteps, scheduler, r.cfg_scale, generator,
                             extra=extra, after_step=after_step, progress=progress,
                             on_step=on_step, cfg_pp=r.cfg_pp)

    def _run_kdiffusion(self, r: _Request, sampler: str, schedule: str, init_image: Any,
                        mask: Any, progress: Progress | None, on_step: StepCallback | None, *,
                        seeds: _Seeds, hires: HiresFix | None = None,
                        options: sampling.SamplerOptions) -> tuple[np.ndarray, dict]:
        """The WebUI's k-diffusion sampling (diffusion.pipelines.sampling), then its hires pass if
        asked; the latents and the infotext fields it adds."""
        discrete = DiscreteSchedule.from_config(self.scheduler_config)
        img2img = r.mode != "txt2img"
        if img2img and int(r.steps * r.strength) < 1:
            raise ValueError(f"strength {r.strength} with {r.steps} steps leaves no step to "
                             "run; raise strength or steps")
        plan = sampling.plan(sampler, schedule, r.steps, discrete, is_sdxl=self.is_sdxl,
                             strength=r.strength if img2img else None)
        extra = keep = init_latent = None
        if img2img:
            generator = make_generator(r.rng, r.seed)  # the VAE posterior's draws
            pixels = _to_unit_image(init_image, r.width, r.height)
            init_latent = np.repeat(self._encode(pixels, generator), r.batch_size, 0)
        if r.mode == "inpaint":
            full_mask = _to_mask(mask, r.width, r.height)
            scale = self.vae_scale_factor
            if self.is_inpainting_model:
                small = np.repeat(full_mask[:, :, ::scale, ::scale], r.batch_size, 0)
                masked = pixels * (full_mask < 0.5)
                masked_latents = np.repeat(self._encode(masked, generator), r.batch_size, 0)
                extra = np.concatenate([small, masked_latents], axis=1)
            else:
                keep = 1.0 - _latent_mask(full_mask, (r.height // scale, r.width // scale))
        # the WebUI counts prompt-editing steps in model evaluations: twice per step for the
        # second-order samplers
        evaluations = r.steps * (2 if plan.info.second_order else 1)
        x = self._kdiffusion_pass(r, plan, discrete, seeds, init_latent, evaluations, progress,
                                  on_step, extra=extra, keep=keep, options=options)
        fields: dict[str, Any] = {"seeds": seeds.seeds, "schedule": plan.schedule_label,
                                  **seeds.fields(plan.info.uses_ensd),
                                  "sampler_fields": options.infotext(plan.info)}
        if hires is not None:
            x, r = self._hires_latents(r, x, hires)
            steps = hires.steps or r.steps
            total = int(steps / min(hires.denoise, 0.999))
            plan = sampling.plan(sampler, schedule, total, discrete, t_enc=steps - 1,
                                 is_sdxl=self.is_sdxl)
            x = self._kdiffusion_pass(r, plan, discrete, seeds, x, steps * (
                2 if plan.info.second_order else 1), progress, on_step, options=options,
                first_pass=False)
        return x, fields

    def _kdiffusion_pass(self, r: _Request, plan: sampling.SamplingPlan,
                         discrete: DiscreteSchedule, seeds: _Seeds,
                         init_latent: np.ndarray | None, evaluations: int,
                         progress: Progress | None, on_step: StepCallback | None, *,
                         extra: np.ndarray | None = None, keep: np.ndarray | None = None,
                         options: sampling.SamplerOptions,
                         first_pass: bool = True) -> np.ndarray:
        """One sampling pass at r's size from pure noise or from `init_latent` + noise."""
        scale = self.vae_scale_factor
        noise = seeds.noise(r.rng, (self.latent_channels, r.height // scale, r.width // scale),
                            first_pass=first_pass)
        first = noise.first() * plan.sigmas[0]
        x = first if init_latent is None else init_latent + first
        unet = self._guided(r, evaluations, discrete=discrete)
        model = sampling.CFGDenoiser(unet, discrete, r.cfg_scale, extra=extra, keep=keep,
                                     init_latent=init_latent)
        total = len(plan.sigmas) - 1

        def callback(i: int, latents: np.ndarray) -> bool | None:
            if progress is not None:
                progress(i + 1, total)
            return None if on_step is None else on_step(i + 1, total, latents)

        x = sampling.sample(plan, model, x, seeds=seeds.seeds, image_noise=noise,
                            discrete=discrete, callback=callback,
                            options=options.kwargs(plan.info))
        if keep is not None:
            x = init_latent * keep + (1 - keep) * x
        return x

    def _hires_latents(self, r: _Request, latents: np.ndarray,
                       hires: HiresFix) -> tuple[np.ndarray, _Request]:
        """The hires pass's starting latents (upscaled latents, or the upscaled picture
        through the VAE) and its request (the new size, img2img at the hires strength)."""
        width, height = hires.target(r.width, r.height)
        scale = self.vae_scale_factor
        if hires.is_latent:
            start = upscale_latents(latents, (height // scale, width // scale), hires.upscaler)
        else:
            images = [upscale_image(image, (width, height), hires.upscaler)
                      for image in self._decode(latents)]
            generator = make_generator(r.rng, r.seed)  # the VAE posterior's draws
            start = np.concatenate([self._encode(_to_unit_image(image, width, height),
                                                 generator) for image in images])
        return start, replace(r, width=width, height=height, mode="img2img",
                              strength=hires.denoise)

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
