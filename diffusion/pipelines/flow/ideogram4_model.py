"""`Ideogram4Model`: Ideogram 4 behind the `generate(request)` every door calls, the flow
family's `FlowModel` with Ideogram 4's asymmetric guidance, and the registry's loader and
defaults for it.

The request's CFG scale is the pipeline's constant `guidance_scale` g: the prompt's velocity
weighed g against the unconditional transformer's (1 - g), no unconditional pass at 1.
Ideogram 4 reads no negative prompt (its unconditional model reads no text at all): one is
refused in one line. The "diffusers" sampler (the family's default) runs the pipeline's own
loop over the logit-normal sigmas (diffusers' default guidance schedule, 7 then 3 for the last
three of 48 steps, is the Python API's default; the request's scale is constant); the WebUI's
samplers for flow models run over the same sigmas (their one schedule type, "Automatic": the
Simple one of the scheduler's config is not what the model was trained for), from noise or an
init image (img2img, inpainting, the hires fix: FLUX.2's VAE encodes and decodes). The
optional prompt rewrite (diffusers' `prompt_upsampling`) is not run.

The unconditional transformer is a network of its own as large as the first: the memory
modes place it as they place a ControlNet (flow_memory's guests: with the transformer under
--medvram, its blocks streamed among the transformer's under --lowvram and --max-vram).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ...loaders.flow.text_encoder_file import module_stem
from ...sampling.kdiffusion import DIFFUSERS
from ...sampling.model_sampling import FlowSchedule
from ..contract import Capabilities, LoadOptions, SamplingDefaults
from ..finite import pictures_uint8
from ..request import GenerationRequest
from .flow_memory import MemoryLayout
from .flow_model import LLMFlowModel
from .flow_replay import lent_steps
from .flow_sampling import FLOW_SAMPLERS
from .ideogram4 import logit_normal_sigmas, schedule_mu

__all__ = ["IDEOGRAM4_DEFAULTS", "Ideogram4Model", "ideogram4_capabilities",
           "ideogram4_defaults", "load_ideogram4_model"]

# Ideogram4Pipeline's defaults: 48 steps at guidance 7 (its last three steps at 3) over its
# logit-normal sigmas, which the "diffusers" sampler runs (and the WebUI samplers)
IDEOGRAM4_DEFAULTS = SamplingDefaults(steps=48, sampler=DIFFUSERS, cfg_scale=7.0,
                                      why="diffusers' Ideogram 4 settings (its logit-normal "
                                          "schedule)")


class LogitNormalSchedule(FlowSchedule):
    """Ideogram 4's logit-normal sigmas (`logit_normal_sigmas`, their mean `mu` shifted by
    the picture's size, deviation 1.5) as the WebUI samplers' schedule, its terminal 0
    appended as k-diffusion's schedules end; the straight path's x0 and noise scaling of
    FlowSchedule. diffusers: `Ideogram4Pipeline`'s sigmas for FlowMatchEulerDiscreteScheduler."""

    label = "Automatic"

    def __init__(self, config: dict[str, Any], mu: float) -> None:
        super().__init__(config)
        self.mean = mu

    def __repr__(self) -> str:
        return f"LogitNormalSchedule(mu={self.mean!r})"

    def get_sigmas(self, steps: int) -> np.ndarray:
        return np.append(logit_normal_sigmas(steps, self.mean).astype(np.float64), 0.0)


class Ideogram4Model(LLMFlowModel):
    """A loaded Ideogram 4 pipeline (`family` "ideogram4", an `Ideogram4Pipeline` as
    `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """The WebUI samplers defined for flow models over the logit-normal schedule, the
        asymmetric CFG, plain-text prompts with LoRA tags, img2img and inpainting, the hires
        fix, the memory modes (flow_memory), variation seeds; no negative prompt, no step
        cache, no ControlNets, no refiner."""
        return ideogram4_capabilities(self.family)

    @property
    def latent_channels(self) -> int:
        """The transformer's channels: the VAE's 2x2 patches of its latent channels."""
        return int(self.pipe.transformer.config["in_channels"])

    @property
    def latent_scale(self) -> int:
        """16: a latent is a 2x2 patch of the VAE's latents, each 8 pixels a side."""
        return 2 * self.vae_scale_factor

    def schedule(self, shape: tuple[int, ...], steps: int, mu: float | None
                 ) -> LogitNormalSchedule:
        """The WebUI samplers' sigmas over latents of `shape`: the pipeline's logit-normal
        schedule for the picture's size (mean 0 before the shift, as its defaults)."""
        scale = self.latent_scale
        return LogitNormalSchedule(self.pipe.scheduler_config,
                                   schedule_mu(shape[2] * scale, shape[3] * scale, 0.0))

    def memory_layout(self) -> MemoryLayout:
        """What the memory modes move: Qwen3-VL (its `hidden_states_of`), the transformer's
        blocks, the VAE; the unconditional transformer joins as a guest (`guests`)."""
        pipe, transformer = self.pipe, self.pipe.transformer
        return MemoryLayout(transformer=transformer, blocks=(transformer.layers,),
                            text_encoders=(pipe.text_encoder,),
                            text_calls=((pipe.text_encoder, "hidden_states_of"),), vae=pipe.vae)

    @contextmanager
    def guests(self, controlnets: Sequence[Any], readers: Sequence[Any]) -> Iterator[None]:
        """The generation's networks with the unconditional transformer among them, placed
        as a ControlNet is (the module doc)."""
        with super().guests([*controlnets, self.pipe.unconditional_transformer], readers):
            yield

    def check(self, request: GenerationRequest, width: int, height: int) -> None:
        """FlowModel's checks; no negative prompt."""
        super().check(request, width, height)
        if request.negative_prompt.strip():
            raise ValueError("Ideogram 4 reads no negative prompt (its unconditional model "
                             "reads no text); leave it empty and steer with the prompt and "
                             "the CFG scale")

    def decode(self, latents: np.ndarray, request: GenerationRequest) -> list[np.ndarray]:
        """The pictures: the VAE's batch norm undone, the patches unpacked, decoded (in tiles
        where --max-vram asks: FlowMemoryPlan.decode)."""
        with lent_steps(self.pipe):  # the VAE takes the step captures' scratch (flow_replay)
            pictures = self.pipe.decode(latents, run=self.memory_decode())
        return pictures_uint8(pictures, self.pipe.vae)

    def encode_init(self, pixels: np.ndarray, generator: Any) -> np.ndarray:
        """The init image's latents (1, 4C, h, w) for the WebUI samplers' img2img: the
        pipeline's posterior draw, patched and batch-normed (`Ideogram4Pipeline.
        encode_image`)."""
        return self.pipe.encode_image(pixels, generator)  # type: ignore[no-any-return]

    def _guidance(self, request: GenerationRequest) -> dict[str, Any]:
        """The CFG scale as the pipeline's constant guidance_scale."""
        return {"guidance_scale": float(request.cfg_scale)}


def ideogram4_capabilities(family: str) -> Capabilities:
    """What an Ideogram 4 model takes (Ideogram4Model.capabilities says what): the loaded
    model's, and the registry's before the weights load."""
    return Capabilities(family=family, latent_space="ideogram4", guidance="cfg",
                        samplers=tuple(FLOW_SAMPLERS), schedules=("Automatic",),
                        models="Ideogram 4 models", step_cache=(), prompt_syntax=False,
                        textual_inversion=False, refiner=False, control=False,
                        latent_upscale_resize=False, hires_with_diffusers=False,
                        latent_masked_content=False,
                        memory_modes=True, hires_own_settings=True, noise_multiplier=True)


def ideogram4_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What an Ideogram 4 model samples with where its defaults.json says nothing:
    diffusers' 48 steps at guidance 7, with the pipeline's own loop and schedule."""
    return IDEOGRAM4_DEFAULTS


def load_ideogram4_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                         ) -> Ideogram4Model:
    """An Ideogram 4 diffusers folder as an Ideogram4Model; `options.defaults` (the folder's
    defaults.json) over `ideogram4_defaults`. --base and --text-encoder files are refused in
    one line (the folder holds every part)."""
    from .ideogram4 import Ideogram4Pipeline

    path = Path(path)
    if options.base is not None or options.text_encoders:
        raise ValueError("an Ideogram 4 folder holds every part itself: drop --base and "
                         "--text-encoder")
    pipe = Ideogram4Pipeline.from_pretrained(path, dtype=options.dtype, device=options.device,
                                             variant=options.variant, offload=options.offload)
    return Ideogram4Model(pipe, family=family, name=module_stem(path), defaults=options.defaults,
                          modules=pipe.modules)
