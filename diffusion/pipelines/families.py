"""The model families `load_pipeline` knows: a line each, saying which files are the family's,
how to load them, and what the family samples with where a model's defaults.json is silent.

The first line whose `detect` claims a path loads it, so the last line is the catch-all (an SD
checkpoint is told from others only by reading its keys). A new family is its networks in
`models/`, its file readers and key map in `loaders/`, its pipeline (a `generation.Family`
whose `capabilities` say what it takes) and a line here, above the catch-all.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from ..loaders.flow.chroma import chroma_family
from ..loaders.flow.file import flow_model_family
from ..loaders.flux2 import flux2_family
from ..loaders.qwen_image import qwenimage_family
from ..loaders.wan import wan_family, wan_file_family
from ..loaders.z_image import zimage_family
from .contract import LoadOptions, Pipeline, SamplingDefaults
from .flow.fill_model import fill_defaults, fill_family, load_fill_model
from .flow.flow_model import flow_defaults, load_flow_model
from .flow.flux2_model import flux2_defaults, load_flux2_model
from .flow.kontext_model import kontext_defaults, kontext_family, load_kontext_model
from .flow.qwen_image_edit_model import (
    load_qwenimage_edit_model,
    qwenimage_edit_defaults,
    qwenimage_edit_family,
)
from .flow.qwen_image_model import load_qwenimage_model, qwenimage_defaults
from .flow.z_image_model import load_zimage_model, zimage_defaults
from .sd.unet_load import any_checkpoint, load_unet_model, unet_defaults
from .video import refuse_pictures

__all__ = ["FAMILIES", "FamilyLoader", "family_of"]

PathText = str | os.PathLike[str]


@dataclass(frozen=True)
class FamilyLoader:
    """One line of the registry."""

    models: str  # what it loads, for people ("FLUX.1, SD 3/3.5")
    # the family the files at a path hold ("flux-dev", "sd3", ...), None: not this line's
    detect: Callable[[PathText], str | None]
    load: Callable[[PathText, str, LoadOptions], Pipeline]  # (path, detected family, options)
    # the sampling a model of the family recommends where its folder says nothing
    defaults: Callable[[PathText, str], SamplingDefaults | None]
    latent_channels: int = 4  # its VAE's: a VAE module file must have as many
    # its text encoders and VAE come as module files (Forge's VAE / Text Encoder list): a
    # single file takes its VAE among them, a folder keeps its vae/ (--vae is refused)
    module_parts: bool = False
    # a single file of the family is its transformer alone: it runs with a diffusers folder of
    # the family giving the rest (LoadOptions.base: the CLI's --base; diffusion.pipelines.bases)
    single_file_base: bool = False


FAMILIES: tuple[FamilyLoader, ...] = (
    FamilyLoader("Chroma", chroma_family, load_flow_model, flow_defaults,
                 latent_channels=16, module_parts=True),
    FamilyLoader("FLUX.1 Kontext", kontext_family, load_kontext_model, kontext_defaults,
                 latent_channels=16, module_parts=True),
    FamilyLoader("FLUX.1 Fill", fill_family, load_fill_model, fill_defaults,
                 latent_channels=16, module_parts=True),
    FamilyLoader("FLUX.1, SD 3/3.5", flow_model_family, load_flow_model, flow_defaults,
                 latent_channels=16, module_parts=True),
    FamilyLoader("Z-Image (Turbo, Base)", zimage_family, load_zimage_model, zimage_defaults,
                 latent_channels=16, single_file_base=True),
    FamilyLoader("FLUX.2 (klein, dev)", flux2_family, load_flux2_model, flux2_defaults,
                 latent_channels=32, single_file_base=True),
    FamilyLoader("Qwen-Image", qwenimage_family, load_qwenimage_model, qwenimage_defaults,
                 latent_channels=16, single_file_base=True),
    FamilyLoader("Qwen-Image-Edit", qwenimage_edit_family, load_qwenimage_edit_model,
                 qwenimage_edit_defaults, latent_channels=16, single_file_base=True),
    # a video model: its folder or transformer file is told apart so that txt2img says to use
    # txt2vid
    FamilyLoader("Wan 2.1 / 2.2 (videos: txt2vid)",
                 lambda path: wan_family(path) or wan_file_family(path), refuse_pictures,
                 lambda path, family: None, latent_channels=16),
    FamilyLoader("SD 1.x/2.x, SDXL (base, refiner, Turbo)", any_checkpoint, load_unet_model,
                 unet_defaults),
)


def family_of(path: PathText) -> tuple[FamilyLoader, str]:
    """The registry's line that claims `path`, and the family it detected there."""
    for entry in FAMILIES:
        family = entry.detect(path)
        if family is not None:
            return entry, family
    raise AssertionError("the registry's last line claims every path")
