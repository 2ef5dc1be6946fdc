"""`StableDiffusion`: an SD 1.x/2.x model and `generate(request)`, txt2img / img2img / inpaint:
the sequence every family runs (diffusion.pipelines.generation) with this family's part, its
checks (`check`), denoising (`denoise`, diffusion.pipelines.sd.denoise) and decode (`decode`).

The denoising itself is `run_kdiffusion` (the WebUI's samplers) or `run_scheduler` (diffusers'
loop), both starting from `prepare`'s inputs and seeing only the model's `unet_parts()`. The
models run on the GPU (gpustd); the sampler math runs in numpy float64 on latents that are a
few hundred KiB, so each step is: upload latents, one UNet pass, read the prediction.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial
from typing import Any

import numpy as np

from gpucore import phase
from gpustd import Tensor
from gpustd.nn.offload import restore

from ...models import AutoencoderKL, CLIPTextModel, UNet2DConditionModel
from ...models.tiled_vae import vae_decode, vae_encode
from ...models.vae_half import HalfPasses
from ...sampling.guidance import Weights
from ...sampling.model_sampling import DiscreteSchedule
from ...text import conditioning
from ...text.embeddings import EmbeddingDatabase, EmbeddingFinder, EncoderFinders
from ...text.tokenizer import CLIPTokenizer
from ..colorfix import colorfix_hook
from ..contract import Capabilities, Denoisers, GenerationResult, Placement, SamplingDefaults
from ..control import Control, ControlUnit, check_base
from ..finite import check_encoded, pictures_uint8
from ..generation import Denoised, PromptLoras, generate
from ..hires_pass import refiner_in_pass
from ..ip_adapter import use_ip_adapters
from ..observer import Observer, Progress, StepCallback
from ..reference import POSTERIOR_MEAN, split_references
from ..request import GenerationRequest
from ..vae_float32 import float32_copy
from .capture import ModelCapture, lent
from .decode_ahead import begin_decode
from .denoise import denoise
from .guided_unet import Contexts, GuidedUNet, unet_call
from .memory import MemoryMode, MemoryPlan, networks
from .prepare import Pass
from .refiner import HandOff, check_refiner
from .unet_model import Generator, UNetParts

__all__ = ["GenerationRequest", "GenerationResult", "SamplingDefaults", "StableDiffusion",
           "unet_capabilities"]


def unet_capabilities(family: str, *, sdxl: bool, inpainting: bool, turbo: bool
                      ) -> Capabilities:
    """Everything the WebUI does for SD models of `family` (SDXL: no textual inversion yet):
    a loaded model's, and the registry's before it loads (unet_load.unet_capabilities_of)."""
    return Capabilities(family=family, latent_space="sdxl" if sdxl else family,
                        textual_inversion=not sdxl, inpainting_model=inpainting, turbo=turbo,
                        hires_own_settings=True, noise_multiplier=True, tiling=True)


class StableDiffusion:
    """A Stable Diffusion 1.x/2.x model on the GPU: tokenizer, text encoder, UNet, VAE, the
    model's scheduler config and the sampling `defaults` it recommends (what the CLI and the
    web page start from; a GenerationRequest keeps its own defaults). Build with
    `diffusion.load_pipeline(path)`, which gives SDXL models as
    `diffusion.StableDiffusionXL` (this class with SDXL's text conditioning)."""

    family = "sd1"  # "sd1", "sd2" (diffusion.loaders' detection); "sdxl*" in the subclass
    is_sdxl = False
    diffusers_loras = False  # "diffusers" runs the model as loaded

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
        self.loras = PromptLoras(lambda: self)
        # a VAE loaded in place of the model's own (loaders.sd.vae_file.load_vae): its path,
        # for the infotext's "VAE hash" / "VAE"
        self.vae_path: str | os.PathLike[str] | None = None
        self.family = family or self.family
        # adversarially distilled (SD-Turbo, SDXL-Turbo; pipelines.load.is_turbo): 1-4 steps
        self.is_turbo = is_turbo
        # The UNet step and the text encoder's transformer, recorded once and replayed by
        # every generation. Each signature pins its activations (SD 1.5 f32, 512 px, CFG 2:
        # 726 MiB for the UNet): four UNet signatures cover a hires fix whose cond and uncond
        # differ in length. Encoded prompts outlive the next encoding: copied. The VAE decode
        # stays eager: a capture of it would pin 1.4 GiB at 512 px for ~30 ms an image.
        self._unet_capture = ModelCapture(unet_call, max_signatures=4)
        self._text_capture = ModelCapture(CLIPTextModel.encode_tokens, max_signatures=2,
                                          copy_outputs=True)
        # --medvram / --lowvram / --max-vram in effect (set_memory_mode), None: all on the GPU
        self.memory: MemoryPlan | None = None
        self._half_passes = HalfPasses()  # a float32 VAE's scaled float16 decodes, encodes

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

    @property
    def capabilities(self) -> Capabilities:
        """Everything the WebUI does for SD models (`unet_capabilities`)."""
        return unet_capabilities(self.family, sdxl=self.is_sdxl,
                                 inpainting=self.is_inpainting_model, turbo=self.is_turbo)

    @property
    def placement(self) -> Placement:
        weight = self.unet.conv_in.weight
        return Placement(weight.device, weight.dtype)

    @property
    def denoisers(self) -> Denoisers:
        return Denoisers((self.unet,), "UNet")

    def use_vae(self, path: str | os.PathLike[str]) -> None:
        """Decode and encode with the VAE file at `path` (diffusion.loaders.sd.vae_file), in the
        dtype of the VAE in place (an SDXL VAE kept in float32, force_upcast, or one made
        float32, --no-half-vae, stays so)."""
        from ...loaders.sd.vae_file import load_vae

        vae = load_vae(path, dtype=self.vae.decoder.conv_in.weight.dtype,
                       device=self.placement.device, config=self.vae.config)
        self._replace_vae(vae)
        self.vae_path = path

    def use_float32_vae(self) -> bool:
        """Decode and encode with the VAE in float32 (diffusion.pipelines.vae_float32: on
        matrix units by its scaled float16 twin); False where it runs float32 already."""
        vae = float32_copy(self.vae)
        if vae is self.vae:
            return False
        self._replace_vae(vae)
        return True

    def _replace_vae(self, vae: AutoencoderKL) -> None:
        if self.memory is not None:  # the mode's VAE unit follows
            self.memory.replace_vae(self.vae, vae)
        self.vae = vae

    # -- pieces -----------------------------------------------------------------------
    def encode_prompt(self, prompts: Sequence[str], *, clip_skip: int = 0) -> Tensor:
        ids = self.tokenizer(list(prompts))
        return self._text_encoder()(ids, clip_skip=clip_skip)

    def _kept_captures(self) -> tuple[Any, ...]:  # whose scratch the VAE borrows (`lent`)
        return self._unet_capture, self._text_capture

    def _text_encoder(self) -> Callable[..., Tensor]:
        """The text encoder with its transformer replayed from the kept capture (the token
        lookup and textual-inversion rows run as they are: host work per prompt)."""
        return partial(self.text_encoder, encode_tokens=self._text_capture.of(self.text_encoder))

    def _contexts(self, r: Pass, steps: int, *, webui: bool = True
                  ) -> tuple[Contexts, Weights | None]:
        """Step -> (uncond, cond) text conditioning, uncond None without guidance; and the
        guidance weights of the prompt's AND parts (None: plain classifier-free guidance).

        `webui`: the WebUI's prompt handling (emphasis, BREAK, prompts past 75 tokens, prompt
        editing over `steps` model evaluations, extra-network tags removed); else diffusers'
        (the text as it is, truncated to 77 tokens)."""
        batch = r.batch_size
        if not webui:  # diffusers guides only above 1
            cond = self.encode_prompt([r.prompt] * batch, clip_skip=r.clip_skip)
            uncond = None if r.cfg_scale <= 1.0 else self.encode_prompt(
                [r.negative_prompt] * batch, clip_skip=r.clip_skip)
            return (lambda step: (uncond, cond)), None
        # a hires pass's editing times count on from the first pass: [a:b:10] of 20 steps is
        # b all through it (the WebUI's get_learned_conditioning with hires_steps)
        first = r.first_pass_steps
        encode = partial(conditioning.encode, self.tokenizer, self._text_encoder(),
                         steps=first or steps, hires_steps=steps if first else None,
                         clip_skip=r.clip_skip,
                         embeddings=r.embeddings if isinstance(r.embeddings, EmbeddingFinder)
                         else None)
        conds = encode([r.prompt] * batch)
        unconds = None if r.cfg_scale == 1.0 and not conds.composable else encode(
            [r.negative_prompt] * batch, extra_networks=False, composable=False)
        return ((lambda step: (None if unconds is None else unconds.at(step), conds.at(step))),
                conds.weights if conds.composable else None)

    def _guided(self, r: Pass, steps: int, *, webui: bool = True,
                discrete: DiscreteSchedule | None = None) -> Any:
        """The guided UNet of a pass (a GuidedUNet); with a refiner and the WebUI's
        samplers one that hands over to the refiner's (diffusion.pipelines.sd.refiner.HandOff)."""
        with phase("encode"):  # first: --medvram's UNet next
            contexts, weights = self._contexts(r, steps, webui=webui)
        if self.memory is None and r.refiner is None and r.hires_stage is None:
            f = self.vae_scale_factor  # the decode's kernels begin with the UNet's
            with lent(*self._kept_captures()):
                begin_decode(partial(vae_decode, self.vae), self.vae,
                             (1, self.latent_channels, r.height // f, r.width // f))
        reference, units = split_references(
            r.control, self.unet, total_steps=steps, size=(r.width, r.height),
            encode=lambda pixels: self._encode(pixels, POSTERIOR_MEAN),
            scheduler_config=self.scheduler_config, low_vram=self.memory is not None,
            hires_stage=r.hires_stage, sdxl=self.unet.uses_added_cond)
        colorfix = colorfix_hook([u for u in units if isinstance(u, ControlUnit)],
                                 size=(r.width, r.height),
                                 encode=lambda pixels: self._encode(pixels, POSTERIOR_MEAN),
                                 scheduler_config=self.scheduler_config,
                                 hires_stage=r.hires_stage)
        check_base(units, self.unet)
        use_ip_adapters(self.unet, units)  # before the capture compares the UNet's weights
        step = (self._unet_capture.of(self.unet) if self.memory is None
                else self.memory.unet_step(self.unet))
        unet = GuidedUNet(step, contexts,
                                   dtype=self.unet.conv_in.weight.dtype,
                                   control=Control(units, total_steps=steps,
                                                   size=(r.width, r.height),
                                                   hires_stage=r.hires_stage)
                                   if units else None, weights=weights, reference=reference,
                                   colorfix=colorfix)
        if r.refiner is None or not webui or not refiner_in_pass(r.hires_stage,
                                                                 r.hires_refiner_pass):
            return unet
        other = r.refiner
        # the units' networks were made for this UNet: the refiner's steps run unguided by them
        return HandOff(unet, lambda: other._guided(replace(r, refiner=None, control=()), steps,
                                                   discrete=discrete), r.switch_at, discrete)

    def unet_parts(self) -> UNetParts:
        """What the UNet loops (run_kdiffusion, run_scheduler) need of this model."""
        return UNetParts(self.scheduler_config, self.is_sdxl, self.vae_scale_factor,
                         self.latent_channels, self.is_inpainting_model, self._guided,
                         self._encode, self._decode, self.placement.device)

    def _embedding_lookup(self) -> EmbeddingFinder | EncoderFinders | None:
        """The embeddings directory's textual-inversion finder for this model's text
        encoder (SDXL: one per encoder)."""
        if self.embeddings is None:
            return None
        width = int(self.text_encoder.config["hidden_size"])
        return self.embeddings.lookup(self.tokenizer, width=width)

    def _decode(self, latents: np.ndarray, vae: Any = None) -> list[np.ndarray]:
        """Pictures of the latents, one at a time, tiled where too large for the device
        (models.tiled_vae), a float32 VAE's in float16 (models.vae_half); by `vae` where
        given (a hires pass's), else the model's."""
        decode = self.memory.vae_decode if self.memory else partial(
            self._half_passes.decode_or, vae_decode, self.unet.conv_in.weight.dtype)
        vae = self.vae if vae is None else vae
        with lent(*self._kept_captures()):  # the VAE borrows their scratch
            images = [decode(vae, (latent[None] / vae.scaling_factor).astype(np.float32))
                      for latent in latents]
        return pictures_uint8(((image[0] / 2 + 0.5).transpose(1, 2, 0) for image in images),
                              vae)

    def _encode(self, pixels: np.ndarray, generator: Generator, vae: Any = None) -> np.ndarray:
        """A latent drawn from the VAE's (`vae`'s where given) posterior for `pixels`, scaled
        for the UNet (tiled where the picture is too large for the device, a float32 VAE's in
        float16: models.vae_half)."""
        encode = self.memory.vae_encode if self.memory else partial(
            self._half_passes.encode_or, vae_encode, self.unet.conv_in.weight.dtype)
        vae = self.vae if vae is None else vae
        with lent(*self._kept_captures()):  # idle until the steps
            mean, logvar = encode(vae, pixels.astype(np.float32))
        check_encoded(mean, vae)
        mean_np = mean.astype(np.float64)
        noise = generator.standard_normal(mean_np.shape)
        latent = AutoencoderKL.sample(mean_np, logvar.astype(np.float64), noise)
        return latent * vae.scaling_factor

    @property
    def memory_mode(self) -> MemoryMode | None:
        return None if self.memory is None else self.memory.mode

    def set_memory_mode(self, mode: MemoryMode) -> None:
        """Run in the WebUI's --medvram / --lowvram / --max-vram mode (a MemoryMode, all off:
        every weight on the GPU again); see diffusion.pipelines.sd.memory."""
        if self.memory is not None:
            self.memory.release()
            self.memory = None  # a plan refused below leaves none in effect
        self._half_passes.forget_twins()  # built again under the new mode, as its units
        if not mode:  # loaded to host memory for a mode (LoadOptions.offload): all up now
            for network in networks(self):
                restore(network)
        self.memory = MemoryPlan(self, mode, text_capture=self._text_capture,
                                 unet_capture=self._unet_capture,
                                 half=self._half_passes) if mode else None

    # -- pipelines --------------------------------------------------------------------
    def generate(self, request: GenerationRequest | str | None = None, /, *,
                 observer: Observer | None = None, progress: Progress | None = None,
                 on_step: StepCallback | None = None, **settings: Any) -> GenerationResult:
        """Run `request` (a GenerationRequest, diffusion.pipelines.request: txt2img, img2img
        or inpaint, and every setting): the pictures, their seeds and the settings that made
        them. `generate("a prompt", steps=20, ...)` builds the request from keywords (the
        GenerationRequest's fields); with a request, keywords replace its fields. Same seed
        and settings give the same image on the same adapter.

        With the WebUI's samplers image k of a batch has seed `seed + k` and its own
        generator, as in the WebUI; DDIM, PLMS, UniPC and "diffusers" draw the whole batch from
        the one seed, as diffusers does.

        `observer` (diffusion.pipelines.observer.Observer) sees every step and may stop the
        sampling there (the partly denoised latents are decoded: the WebUI's Interrupt/Skip);
        or the callbacks `progress(done, total)` and `on_step(done, total, latents)`
        (returning False stops). The equivalent in diffusers: `pipeline(prompt, ...)`.
        The sequence is diffusion.pipelines.generation's; this family's part follows."""
        return generate(self, request, settings, observer=observer, progress=progress,
                        on_step=on_step)

    def check(self, request: GenerationRequest, width: int, height: int) -> None:
        """The refiner: a loaded model that can take over from this one."""
        refiner = request.refiner
        if isinstance(refiner, str):  # a server resolves names; here it is too late
            raise ValueError(f"refiner must be a loaded model (diffusion.load_pipeline), got "
                             f"the name {refiner!r}")
        if refiner is not None:
            check_refiner(self, refiner, request.refiner_switch_at, request.mode)

    def denoise(self, request: GenerationRequest, seed: int, width: int, height: int,
                observer: Observer) -> Denoised:
        """The WebUI's samplers (run_kdiffusion) or a diffusers scheduler (run_scheduler):
        diffusion.pipelines.sd.denoise."""
        return denoise(self, request, seed, width, height, observer)

    def decode(self, latents: np.ndarray, request: GenerationRequest) -> list[np.ndarray]:
        """After the hand-off the refiner's VAE decodes, as in the WebUI and diffusers (after
        a hires pass, the VAE of its modules where they hold one, as in Forge)."""
        refiner = request.refiner
        with lent(*self._kept_captures()):  # the refiner's VAE too
            return (self if refiner is None else refiner)._decode(
                latents, getattr(request.hires_modules, "vae", None))

    def txt2img(self, prompt: str, **kwargs: Any) -> GenerationResult:
        """Text to image. Keywords as `generate`."""
        return self.generate(prompt, **kwargs)

    def img2img(self, init_image: Any, prompt: str, **kwargs: Any) -> GenerationResult:
        """Image to image: `strength` (0..1] says how much of the schedule re-noises it."""
        return self.generate(prompt, init_image=init_image, **kwargs)

    def inpaint(self, init_image: Any, mask: Any, prompt: str, **kwargs: Any) -> GenerationResult:
        """Repaint where `mask` is white: with the 9-channel inpainting UNet when the model has
        one, else the ordinary UNet; the init latents kept outside the mask."""
        kwargs.setdefault("strength", 1.0)
        return self.generate(prompt, init_image=init_image, mask=mask, **kwargs)
