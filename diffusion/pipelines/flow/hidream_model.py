"""`HiDreamModel`: HiDream-I1 (Full, Dev, Fast) behind the `generate(request)` every door
calls, the flow family's `FlowModel` with HiDream's guidance, and the registry's loader and
defaults for it.

The request's CFG scale is diffusers' `guidance_scale` (HiDream's CFG is `uncond + g (cond -
uncond)`): above 1 a negative-prompt pass, 1 none (Dev and Fast, guidance-distilled). The
"diffusers" sampler, every variant's default, runs HiDreamImagePipeline's own loop with the
folder's scheduler (Full: UniPC on flow sigmas, shift 3; Dev: FlowMatchLCMScheduler, shift
6); the WebUI's samplers for flow models run over the Simple schedule shifted by
the folder's shift. Llama-3.1-8B-Instruct comes
from the folder's text_encoder_4/ or a folder given as --text-encoder.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from ...loaders.flow.text_encoder_file import module_stem
from ...loaders.formats.diffusers_folder import read_json
from ...models.step_cache import StepCache
from ...sampling.kdiffusion import DIFFUSERS
from ..contract import Capabilities, LoadOptions, SamplingDefaults
from ..observer import Observer
from ..request import GenerationRequest
from .flow_memory import MemoryLayout
from .flow_model import LLMFlowModel
from .flow_sampling import FLOW_SAMPLERS, FLOW_SCHEDULES
from .start import base_folder

__all__ = ["HIDREAM_DEFAULTS", "HiDreamModel", "hidream_capabilities", "hidream_defaults",
           "hidream_variant", "load_hidream_model"]

# the model cards' settings, each on its folder's scheduler as diffusers runs it: Full 50
# steps at guidance 5 (UniPC); Dev 28 steps and Fast 16, both without guidance (Dev's folder
# names FlowMatchLCMScheduler, shift 6)
HIDREAM_DEFAULTS = {
    "full": SamplingDefaults(steps=50, sampler=DIFFUSERS, cfg_scale=5.0,
                             why="HiDream-I1 Full's settings (its UniPC scheduler, CFG 5)"),
    "dev": SamplingDefaults(steps=28, sampler=DIFFUSERS, cfg_scale=1.0,
                            why="HiDream-I1 Dev's settings (its folder's scheduler); CFG 1 "
                                "runs without a negative pass"),
    "fast": SamplingDefaults(steps=16, sampler=DIFFUSERS, cfg_scale=1.0,
                             why="HiDream-I1 Fast's settings (its folder's scheduler); CFG 1 "
                                 "runs without a negative pass")}


class HiDreamModel(LLMFlowModel):
    """A loaded HiDream-I1 pipeline (`family` "hidream", a `HiDreamImagePipeline` as
    `pipe`)."""

    @property
    def capabilities(self) -> Capabilities:
        """The WebUI samplers defined for flow models over the Simple schedule, CFG with a
        negative prompt, plain-text prompts, img2img by those samplers (diffusers has no
        HiDream img2img pipeline), First Block Cache, the memory modes (flow_memory),
        variation seeds; no ControlNets or refiner yet."""
        return hidream_capabilities(self.family)

    def memory_layout(self) -> MemoryLayout:
        """What the memory modes move: the four text encoders as one unit (the CLIPs'
        `forward_pooled`, T5's `forward`, Llama's `hidden_states_of`), the transformer's
        double- and single-stream blocks, the VAE."""
        pipe, transformer = self.pipe, self.pipe.transformer
        clips = [clip for clip, _ in pipe.clips]
        return _HiDreamLayout(
            transformer=transformer,
            blocks=(transformer.double_stream_blocks, transformer.single_stream_blocks),
            text_encoders=(*clips, pipe.text_encoder_3, pipe.text_encoder_4),
            text_calls=(*((clip, "forward_pooled") for clip in clips),
                        (pipe.text_encoder_3, "forward"),
                        (pipe.text_encoder_4, "hidden_states_of")),
            vae=pipe.vae)

    def _diffusers(self, request: GenerationRequest, prompts: list[str], seed: int,
                   width: int, height: int, observer: Observer,
                   cache: StepCache | None = None) -> np.ndarray:
        """HiDreamImagePipeline's loop; an init image refused in one line (diffusers draws
        HiDream from noise alone)."""
        if request.init_image is not None:
            raise ValueError("HiDream-I1 draws img2img and inpainting with the WebUI's "
                             "samplers only (diffusers has no HiDream img2img pipeline): "
                             "choose Euler, Euler a or DPM++ 2M")
        return super()._diffusers(request, prompts, seed, width, height, observer, cache)

    def _guidance(self, request: GenerationRequest) -> dict[str, Any]:
        """diffusers' guidance_scale (the CFG scale itself) and the negative prompt."""
        return {"guidance_scale": float(request.cfg_scale),
                "negative_prompt": request.negative_prompt}


class _HiDreamLayout(MemoryLayout):
    """The layout whose streamed units are the blocks inside their `block` wrappers
    (diffusers' HiDreamBlock names): the transformer calls `wrapper.block(...)`, so that is
    the call that must bring a block in; the wrappers hold nothing else."""

    def streamed(self) -> list[Any]:
        return [wrapper.block for blocks in self.blocks for wrapper in blocks]


def hidream_capabilities(family: str) -> Capabilities:
    """What a HiDream-I1 model takes (HiDreamModel.capabilities says what): the loaded
    model's, and the registry's before the weights load."""
    return Capabilities(family=family, latent_space="flux", guidance="cfg",
                        samplers=tuple(FLOW_SAMPLERS), schedules=FLOW_SCHEDULES,
                        models="HiDream-I1 models", step_cache=("fbc",), prompt_syntax=False,
                        textual_inversion=False, refiner=False, control=False,
                        hires_with_diffusers=False, latent_masked_content=False,
                        memory_modes=True, hires_own_settings=True, noise_multiplier=True)


def hidream_variant(path: str | os.PathLike[str]) -> str:
    """"full", "dev" or "fast": the name's ("HiDream-I1-Dev"), else the folder's scheduler
    (Full's is UniPC; a flow-matching one shifted by 6 is Dev's, by 3 Fast's)."""
    name = Path(path).name.lower()
    for variant in ("fast", "dev", "full"):
        if variant in name:
            return variant
    file = Path(path) / "scheduler" / "scheduler_config.json"
    config = read_json(file) if file.is_file() else {}
    if config.get("_class_name") == "UniPCMultistepScheduler":
        return "full"
    return "dev" if float(config.get("shift", 3.0)) >= 5 else "fast"


def hidream_defaults(path: str | os.PathLike[str], family: str) -> SamplingDefaults:
    """What a HiDream-I1 model samples with where its defaults.json says nothing: its
    variant's (hidream_variant; a single file's by its name, Full's where it says none)."""
    if Path(path).is_file():
        name = Path(path).name.lower()
        return HIDREAM_DEFAULTS[next((v for v in ("fast", "dev") if v in name), "full")]
    return HIDREAM_DEFAULTS[hidream_variant(path)]


def load_hidream_model(path: str | os.PathLike[str], family: str, options: LoadOptions
                       ) -> HiDreamModel:
    """A HiDream-I1 diffusers folder, or a single-file transformer with `options.base` (a
    HiDream-I1 folder giving the rest), as a HiDreamModel; Llama-3.1-8B-Instruct from
    `options.text_encoders` (one folder, --text-encoder) or the folder's text_encoder_4/;
    `options.defaults` (the folder's defaults.json) over `hidream_defaults`. More than one
    --text-encoder, or a file, refused in one line."""
    from .hidream import HiDreamImagePipeline

    folder, transformer_file = base_folder(
        Path(path), options.base, "HiDream-I1",
        parts="text encoders, tokenizers, VAE and scheduler")
    if len(options.text_encoders) > 1:
        raise ValueError("HiDream-I1 takes one --text-encoder: the Llama-3.1-8B-Instruct "
                         f"folder; got {len(options.text_encoders)}")
    llama = options.text_encoders[0] if options.text_encoders else None
    if llama is not None and not Path(llama).is_dir():
        raise ValueError(f"--text-encoder {llama}: HiDream-I1 takes Llama-3.1-8B-Instruct as "
                         "a folder (config.json, its safetensors, tokenizer.json)")
    pipe = HiDreamImagePipeline.from_pretrained(folder, dtype=options.dtype,
                                                device=options.device, variant=options.variant,
                                                llama=llama, transformer_file=transformer_file,
                                                offload=options.offload)
    return HiDreamModel(pipe, family=family, name=module_stem(Path(path)),
                        defaults=options.defaults, modules=pipe.modules)
