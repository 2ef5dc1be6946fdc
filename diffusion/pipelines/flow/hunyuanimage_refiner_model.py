"""`HunyuanImageRefinerModel`: HunyuanImage 2.1's refiner (HunyuanImageRefinerPipeline) behind
the `generate(request)` every door calls, and the registry's detection, loader, defaults and
capabilities for it.

The refiner refines a picture: as the --refiner of a HunyuanImage 2.1 model it runs on each
of the base's pictures after the base's sampling (`refine`: diffusers' refiner pipeline on
the decoded picture with the picture's seed, the refiner's own steps and guidance, as Tencent
runs the two); as the model itself it takes img2img's init image (resized to the size asked,
as diffusers resizes it). Its own sampler alone ("diffusers": 4 Euler steps from noise over
the picture's noised latents), its guidance embedded (--distilled-cfg-scale, CFG 1); the
denoising strength is not the WebUI's here (diffusers mixes a fixed quarter of noise into the
picture's latents): leave it at its default.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ...imaging import to_unit_image
from ...loaders.flow.text_encoder_file import module_stem
from ...sampling.kdiffusion import DIFFUSERS
from ...text.prompts import extract_extra_networks
from ..contract import Capabilities, LoadOptions, Placement, SamplingDefaults
from ..finite import pictures_uint8
from ..generation import Denoised
from ..observer import Observer
from ..request import GenerationRequest
from .flow_memory import MemoryLayout
from .flow_model import LLMFlowModel

__all__ = ["REFINER_DEFAULTS", "REFINER_GUIDANCE", "HunyuanImageRefinerModel",
           "hunyuanimage_refiner_capabilities", "load_hunyuanimage_refiner_model",
           "refiner_defaults"]

REFINER_GUIDANCE = 3.25  # diffusers' distilled_guidance_scale for the refiner
REFINER_DEFAULTS = SamplingDefaults(
    steps=4, sampler=DIFFUSERS, cfg_scale=1.0,
    why="diffusers' HunyuanImage 2.1 refiner settings; its guidance is --distilled-cfg-scale")
_DEFAULT_STRENGTH = 0.75  # GenerationRequest's


class HunyuanImageRefinerModel(LLMFlowModel):
    """A loaded HunyuanImage 2.1 refiner (`family` "hunyuanimage-2.1-refiner", a
    `HunyuanImageRefinerPipeline` as `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """img2img with the "diffusers" sampler, plain-text prompts, the embedded guidance,
        the memory modes; it takes over from a HunyuanImage 2.1 model as its refiner."""
        return hunyuanimage_refiner_capabilities(self.family)

    @property
    def native_size(self) -> int:
        """2048, the side HunyuanImage 2.1 draws at."""
        return 2048

    @property
    def distilled(self) -> bool:
        return True

    def memory_layout(self) -> MemoryLayout:
        """What the memory modes move: Qwen2.5-VL (its `hidden_states_of`, which
        `hidden_states` runs) as the text unit, the double and single blocks, the VAE (its
        `decode` and `encode`: the refiner's pipeline calls them itself); the transformer
        whole brought in by `prepare_text` too, the prompt's part of a run."""
        pipe, transformer = self.pipe, self.pipe.transformer
        return MemoryLayout(transformer=transformer,
                            blocks=(transformer.transformer_blocks,
                                    transformer.single_transformer_blocks),
                            text_encoders=(pipe.text_encoder,),
                            text_calls=((pipe.text_encoder, "hidden_states_of"),),
                            vae=pipe.vae, transformer_calls=("prepare_text",))

    @property
    def placement(self) -> Placement:
        placed = self.pipe.vae.decoder.conv_in.conv.bias  # (its kernels: taps)
        return Placement(placed.device, placed.dtype)

    def check(self, request: GenerationRequest, width: int, height: int) -> None:
        """An init image (no mask), no refiner of its own, CFG 1, the default strength, sides
        in whole latents (16 pixels); one line each otherwise."""
        if request.refiner is not None:
            raise ValueError("the HunyuanImage 2.1 refiner takes no --refiner: give it as the "
                             "--refiner of a HunyuanImage 2.1 model")
        if request.init_image is None:
            raise ValueError("the HunyuanImage 2.1 refiner refines a picture: run img2img with "
                             "--init-image, or give it as the --refiner of a HunyuanImage 2.1 "
                             "model")
        if float(request.cfg_scale) != 1.0:
            raise ValueError("the HunyuanImage 2.1 refiner embeds its guidance: leave "
                             "--cfg-scale at 1 and set --distilled-cfg-scale")
        if float(request.strength) != _DEFAULT_STRENGTH:
            raise ValueError("the HunyuanImage 2.1 refiner mixes a fixed quarter of noise into "
                             "the picture (diffusers'): leave the denoising strength at "
                             f"{_DEFAULT_STRENGTH}")
        multiple = self.vae_scale_factor
        for name, side in (("width", width), ("height", height)):
            if side % multiple:
                raise ValueError(f"{name} must be a multiple of {multiple} for the HunyuanImage "
                                 f"2.1 refiner, got {side}; try "
                                 f"{max(multiple, side // multiple * multiple)}")

    def refine(self, pictures: np.ndarray, prompts: list[str], seeds: list[int], *,
               steps: int, guidance: float, rng: str,
               observer: Observer | None = None) -> np.ndarray:
        """Each picture of `pictures` (B, H, W, 3) in [0, 1] refined for its prompt from its
        seed: the VAE latents (B, 32, 1, H/16, W/16) `decode` takes. `observer` sees one
        pass of B x steps steps, the pictures one after another (`_observed`)."""
        told = self._observed(observer or Observer(), steps, len(pictures))
        return np.concatenate([
            self.pipe(prompt, image=picture[None], num_inference_steps=steps,
                      distilled_guidance_scale=guidance, seed=seed, rng=rng,
                      callback=told(k), output_type="latent")
            for k, (picture, prompt, seed) in enumerate(zip(pictures, prompts, seeds))])

    def denoise(self, request: GenerationRequest, seed: int, width: int, height: int,
                observer: Observer) -> Denoised:
        """img2img: the init image at width x height, refined from `seed` (one picture a
        seed, as the batch's pictures are one picture's)."""
        batch = int(request.batch_size)
        prompt = extract_extra_networks(request.prompt)[0]
        picture = (to_unit_image(request.init_image, width, height)[0].transpose(1, 2, 0)
                   + 1) / 2
        steps = int(request.steps)
        latents = self.pipe([prompt] * batch, image=np.stack([picture] * batch),
                            num_inference_steps=steps,
                            distilled_guidance_scale=float(request.distilled_cfg_scale),
                            seed=seed, rng=request.rng,
                            callback=self._observed(observer, steps, 1)(0),
                            output_type="latent")
        return Denoised(latents, [seed] * batch, dict(
            scheduler=None, distilled_cfg_scale=float(request.distilled_cfg_scale),
            seeds=[seed] * batch, clip_skip=0, modules=self.modules))

    def _observed(self, observer: Observer, steps: int, runs: int
                  ) -> Callable[[int], Callable[[int, int, np.ndarray], bool]]:
        """The pipeline's callback for run k of `runs` of `steps` steps each, as one pass of
        the observer, begun here with the refiner's VAE decode: its latents are the VAE's
        (B, 32, h, w) (the sampled ones, 64 channels and a frame axis, neither decode nor
        the Approx cheap preview reads). Once it stops a run, later runs stop after their
        first step."""
        observer.on_begin(lambda latents: self.decode(latents[:, :, None]),
                          self.capabilities.latent_space)
        stopped = False

        def told(k: int) -> Callable[[int, int, np.ndarray], bool]:
            def step(done: int, _: int, latents: np.ndarray) -> bool:
                nonlocal stopped
                stopped = stopped or not observer.step(
                    k * steps + done, runs * steps, self.pipe.vae_latents(latents)[:, :, 0])
                return not stopped
            return step

        return told

    def decode(self, latents: np.ndarray, request: GenerationRequest | None = None
               ) -> list[np.ndarray]:
        """The pictures (H, W, 3) uint8 of the refiner's VAE latents (B, 32, 1, h, w)."""
        return pictures_uint8(self.pipe.decode(latents), self.pipe.vae)

    def begin_decode(self, request: GenerationRequest, shape: tuple[int, ...]) -> None:
        """Nothing: its latents are not the transformer's shape that this would decode."""


def hunyuanimage_refiner_capabilities(family: str) -> Capabilities:
    """What the HunyuanImage 2.1 refiner takes (HunyuanImageRefinerModel.capabilities): its
    latent space is the base's, whose pictures it takes over."""
    return Capabilities(family=family, latent_space="hunyuanimage", guidance="distilled",
                        samplers=(), schedules=(), models="the HunyuanImage 2.1 refiner",
                        prompt_syntax=False, textual_inversion=False, refiner=True,
                        control=False, variation_seeds=False, latent_upscale_resize=False,
                        hires=False, hires_with_diffusers=False, latent_masked_content=False)


def load_hunyuanimage_refiner_model(path: str | os.PathLike[str], family: str,
                                    options: LoadOptions) -> HunyuanImageRefinerModel:
    """A HunyuanImage 2.1 refiner diffusers folder as a HunyuanImageRefinerModel;
    `options.defaults` (the folder's defaults.json) over REFINER_DEFAULTS. --text-encoder and
    --base are refused in one line."""
    from .hunyuanimage_refiner import HunyuanImageRefinerPipeline

    if options.text_encoders or options.base:
        raise ValueError("the HunyuanImage 2.1 refiner reads every part from its diffusers "
                         "folder: leave --text-encoder and --base out")
    pipe = HunyuanImageRefinerPipeline.from_pretrained(
        Path(path), dtype=options.dtype, device=options.device, variant=options.variant,
        offload=options.offload)
    return HunyuanImageRefinerModel(pipe, family=family, name=module_stem(Path(path)),
                                    defaults=options.defaults or REFINER_DEFAULTS)


def refiner_defaults(path: Any, family: str) -> SamplingDefaults:
    """REFINER_DEFAULTS: 4 steps of its own sampler at CFG 1."""
    return REFINER_DEFAULTS
