"""What the FLUX.1, SD3/3.5 and Chroma families take (`Capabilities`), from the family and
its transformer's config: one function for a loaded FlowModel (its transformer's config) and
for the registry before the weights load (a folder's transformer/config.json, a single file's
header), so that the command line and the server refuse a setting with the loaded model's
words without loading it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ...loaders import WeightsError
from ...loaders.flow.flux_file import flux_file_config
from ...loaders.flow.sd3_file import sd3_file_config
from ...loaders.formats.diffusers_folder import read_json
from ...loaders.formats.gguf_file import tensor_file
from ...loaders.keymaps.chroma_keys import chroma_file_config
from ..contract import Capabilities
from .flow_passes import CFG_FAMILIES
from .flow_sampling import FLOW_SAMPLERS, FLOW_SCHEDULES

__all__ = ["CONTROL_FAMILIES", "flow_capabilities", "transformer_config"]

# the step caches each family runs (diffusion.models.step_cache): MagCache's and TeaCache's
# tables are FLUX's
_STEP_CACHES = {"flux-dev": ("fbc", "magcache", "teacache"),
                "flux-schnell": ("fbc", "magcache", "teacache"), "sd3": ("fbc",),
                "chroma": ("fbc",)}
# the families that run ControlNet units (diffusion.pipelines.flow.flow_control)
CONTROL_FAMILIES = ("flux-dev", "flux-schnell", "sd3")


def widened(family: str, config: Mapping[str, Any]) -> bool:
    """Whether a FLUX.1 transformer of `config` reads more channels than it writes: Canny /
    Depth dev's control map (FluxPipeline.control_channels)."""
    return family in CONTROL_FAMILIES[:2] and config.get("in_channels") not in (
        None, config.get("out_channels") or config.get("in_channels"))


def flow_capabilities(family: str, config: Mapping[str, Any]) -> Capabilities:
    """The WebUI samplers defined for flow models over the Simple schedule, prompts with
    LoRA tags, prompt editing (flow_schedule) and emphasis (T5 families), the hires fix,
    step caching on FLUX, SD3 and Chroma (First Block Cache; MagCache and TeaCache on
    FLUX, whose tables they have), ControlNet units on FLUX and SD3, the memory modes
    (flux1_memory); with the WebUI samplers variation seeds and seed resize
    (flow_sampling), a hires pass with its own prompts and sampler (flow_hires), img2img's
    noise multiplier and latent-upscale resize; no refiner. `config`: the transformer's
    (guidance_embeds: FLUX.1 dev's distilled guidance)."""
    guidance = ("cfg" if family in CFG_FAMILIES else
                "distilled" if config.get("guidance_embeds") else "none")
    no: dict[str, Any] = dict.fromkeys(("prompt_syntax", "textual_inversion", "refiner",
                        "hires_with_diffusers", "latent_masked_content"), False)
    return Capabilities(family=family, latent_space=family.split("-")[0],
                        guidance=guidance, samplers=tuple(FLOW_SAMPLERS),
                        schedules=FLOW_SCHEDULES, models="flow-matching models",
                        control=family in CONTROL_FAMILIES,
                        step_cache=_STEP_CACHES.get(family, ()),
                        redux=family.startswith("flux-"), **no, memory_modes=True,
                        hires_own_settings=True, noise_multiplier=True,
                        control_on_host=True, control_map=widened(family, config))


def transformer_config(path: str | os.PathLike[str], family: str) -> dict[str, Any] | None:
    """The transformer config the model of `family` at `path` will load with, no weights read:
    a diffusers folder's transformer/config.json, or what a single file's (or GGUF's) header
    gives through the loaders' own readers (flux_file_config, sd3_file_config,
    chroma_file_config). None for a folder without one or a file that is not whole (loading
    names what is wrong)."""
    try:
        if Path(path).is_dir():
            return read_json(Path(path) / "transformer" / "config.json")
        file = tensor_file(Path(path))
        read = (chroma_file_config if family == "chroma" else
                sd3_file_config if family == "sd3" else flux_file_config)
        return read(file)
    except WeightsError:
        return None
