"""The model families `load_pipeline` knows: a line each, saying which files are the family's,
how to load them, and what the family samples with where a model's defaults.json is silent.

The first line whose `detect` claims a path loads it, so the last line is the catch-all (an SD
checkpoint is told from others only by reading its keys). A line's `capabilities` say what the
model will take before its weights load (`capabilities_of`: the command line refuses a setting
the family does not take without loading it), from the same functions its loaded pipeline's
`capabilities` call. A new family is its networks in
`models/`, its file readers and key map in `loaders/`, its pipeline (a `generation.Family`
whose `capabilities` say what it takes) and a line here, above the catch-all.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from ..loaders.auraflow import auraflow_family, auraflow_file_family
from ..loaders.bria import bria_family
from ..loaders.bria_fibo import bria_fibo_family
from ..loaders.bria_fibo2 import bria_fibo2_family
from ..loaders.cogview4 import cogview4_family
from ..loaders.cosmos import cosmos_family
from ..loaders.ernie_image import ernie_image_family, ernie_image_file_family
from ..loaders.flow.chroma import chroma_family
from ..loaders.flow.file import flow_model_family
from ..loaders.flux2 import flux2_distilled, flux2_family
from ..loaders.helios import helios_family
from ..loaders.hidream import hidream_family
from ..loaders.hunyuan_video.folder import hunyuan_video_family
from ..loaders.hunyuan_video.framepack import framepack_family
from ..loaders.hunyuan_video15.folder import hunyuan_video15_family
from ..loaders.hunyuanimage import (
    hunyuanimage_distilled,
    hunyuanimage_family,
    hunyuanimage_refiner_family,
)
from ..loaders.ideogram4 import ideogram4_family
from ..loaders.joyimage import joyimage_family
from ..loaders.kandinsky5 import kandinsky5_family, kandinsky5_video_family
from ..loaders.krea2 import krea2_family
from ..loaders.longcat_image import longcat_image_family
from ..loaders.ltx2.folder import ltx2_family
from ..loaders.lumina2 import lumina2_family, lumina2_file_family
from ..loaders.motif_video import motif_video_family
from ..loaders.nucleusmoe import nucleusmoe_family
from ..loaders.ovis_image import ovis_image_family
from ..loaders.pixart import pixart_family, pixart_file_family
from ..loaders.prx import prx_family
from ..loaders.qwen_image import qwenimage21_family, qwenimage_family, qwenimage_layered_family
from ..loaders.sana import sana_family, sana_file_family, sana_video_family
from ..loaders.sd.kolors import kolors_family
from ..loaders.wan import chronoedit_family, wan_family, wan_file_family
from ..loaders.z_image import zimage_family, zimage_omni_family
from .contract import Capabilities, LoadOptions, Pipeline, SamplingDefaults
from .flow.auraflow_model import auraflow_capabilities, auraflow_defaults, load_auraflow_model
from .flow.bria_fibo2_model import (
    bria_fibo2_capabilities,
    bria_fibo2_defaults,
    load_bria_fibo2_model,
)
from .flow.bria_fibo_model import bria_fibo_capabilities, bria_fibo_defaults, load_bria_fibo_model
from .flow.bria_model import bria_capabilities, bria_defaults, load_bria_model
from .flow.cogview4_model import cogview4_defaults, folder_capabilities, load_cogview4_model
from .flow.cosmos_model import cosmos_capabilities, cosmos_defaults, load_cosmos_model
from .flow.ernie_image_model import (
    ernie_image_capabilities,
    ernie_image_defaults,
    load_ernie_image_model,
)
from .flow.fill_model import fill_capabilities, fill_defaults, fill_family, load_fill_model
from .flow.flow_capabilities import flow_capabilities, transformer_config
from .flow.flow_model import flow_defaults, load_flow_model
from .flow.flux2_model import flux2_capabilities, flux2_defaults, load_flux2_model
from .flow.hidream_model import hidream_capabilities, hidream_defaults, load_hidream_model
from .flow.hunyuanimage_model import (
    hunyuanimage_capabilities,
    hunyuanimage_defaults,
    load_hunyuanimage_model,
)
from .flow.hunyuanimage_refiner_model import (
    hunyuanimage_refiner_capabilities,
    load_hunyuanimage_refiner_model,
    refiner_defaults,
)
from .flow.ideogram4_model import (
    ideogram4_capabilities,
    ideogram4_defaults,
    load_ideogram4_model,
)
from .flow.joyimage_model import joyimage_capabilities, joyimage_defaults, load_joyimage_model
from .flow.kandinsky5_model import (
    kandinsky5_capabilities,
    kandinsky5_defaults,
    load_kandinsky5_model,
)
from .flow.kontext_model import (
    kontext_capabilities,
    kontext_defaults,
    kontext_family,
    load_kontext_model,
)
from .flow.krea2_model import krea2_capabilities, krea2_defaults, load_krea2_model
from .flow.longcat_image_model import (
    load_longcat_image_model,
    longcat_image_capabilities,
    longcat_image_defaults,
)
from .flow.lumina2_model import load_lumina2_model, lumina2_capabilities, lumina2_defaults
from .flow.nucleusmoe_image_model import (
    load_nucleusmoe_model,
    nucleusmoe_capabilities,
    nucleusmoe_defaults,
)
from .flow.ovis_image_model import (
    load_ovis_image_model,
    ovis_image_capabilities,
    ovis_image_defaults,
)
from .flow.pixart_model import load_pixart_model, pixart_capabilities, pixart_defaults
from .flow.prx_model import load_prx_model, prx_capabilities, prx_defaults
from .flow.qwen_image21_model import (
    load_qwenimage21_model,
    qwenimage21_capabilities,
    qwenimage21_defaults,
)
from .flow.qwen_image_edit_model import (
    load_qwenimage_edit_model,
    qwenimage_edit_capabilities,
    qwenimage_edit_defaults,
    qwenimage_edit_family,
)
from .flow.qwen_image_model import load_qwenimage_model, qwenimage_capabilities, qwenimage_defaults
from .flow.sana_model import load_sana_model, sana_capabilities, sana_defaults
from .flow.z_image_model import load_zimage_model, zimage_capabilities, zimage_defaults
from .flow.z_image_omni_model import (
    load_zimage_omni_model,
    zimage_omni_capabilities,
    zimage_omni_defaults,
)
from .sd.kolors import kolors_capabilities_of, kolors_defaults, load_kolors_model
from .sd.unet_load import any_checkpoint, load_unet_model, unet_capabilities_of, unet_defaults
from .video import refuse_pictures
from .video.chronoedit_model import (
    chronoedit_capabilities,
    chronoedit_defaults,
    load_chronoedit_model,
)

__all__ = ["FAMILIES", "FamilyLoader", "capabilities_of", "family_of"]

PathText = str | os.PathLike[str]
Told = Callable[[PathText, str], Capabilities | None]


def _untold(path: PathText, family: str) -> None:
    """Only the loaded model can say what it takes."""
    return None


def _refuse_layers(path: PathText, family: str, options: LoadOptions) -> Pipeline:
    """The picture registry's loader for Qwen-Image-Layered: it splits a picture into layers
    rather than drawing one, so ValueError in one line saying which command does."""
    raise ValueError(f"{path} is Qwen-Image-Layered, which splits a picture into RGBA layers: "
                     f"use `python -m diffusion layers --model {path} --image IN.png --prompt "
                     "... --out DIR`")


def _flow(then: Callable[[Capabilities], Capabilities] = lambda caps: caps) -> Told:
    """A FLUX.1 / SD3 / Chroma model's Capabilities from its transformer's config
    (flow_capabilities): a folder's transformer/config.json, a single file's or GGUF's header
    read as its loader reads it (transformer_config); `then`: a family's changes."""
    def told(path: PathText, family: str) -> Capabilities | None:
        config = transformer_config(path, family)
        return None if config is None else then(flow_capabilities(family, config))
    return told


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
    # what a model of the family will take, told from its files before its weights load
    # (the loaded pipeline's `capabilities`); None where only loading can tell
    capabilities: Told = _untold


FAMILIES: tuple[FamilyLoader, ...] = (
    # first: Tencent's transformer file holds FLUX's block names (double_blocks, ...), which
    # the FLUX.1 line would claim
    FamilyLoader("HunyuanImage 2.1 (base, distilled)", hunyuanimage_family,
                 load_hunyuanimage_model, hunyuanimage_defaults, latent_channels=64,
                 single_file_base=True, capabilities=lambda path, family: hunyuanimage_capabilities(
                     family, distilled=hunyuanimage_distilled(path))),
    FamilyLoader("HunyuanImage 2.1 refiner", hunyuanimage_refiner_family,
                 load_hunyuanimage_refiner_model, refiner_defaults, latent_channels=32,
                 capabilities=lambda path, family: hunyuanimage_refiner_capabilities(family)),
    FamilyLoader("Chroma", chroma_family, load_flow_model, flow_defaults,
                 latent_channels=16, module_parts=True, capabilities=_flow()),
    FamilyLoader("FLUX.1 Kontext", kontext_family, load_kontext_model, kontext_defaults,
                 latent_channels=16, module_parts=True,
                 capabilities=_flow(kontext_capabilities)),
    FamilyLoader("FLUX.1 Fill", fill_family, load_fill_model, fill_defaults,
                 latent_channels=16, module_parts=True,
                 capabilities=_flow(fill_capabilities)),
    FamilyLoader("FLUX.1, SD 3/3.5", flow_model_family, load_flow_model, flow_defaults,
                 latent_channels=16, module_parts=True, capabilities=_flow()),
    FamilyLoader("Z-Image (Turbo, Base)", zimage_family, load_zimage_model, zimage_defaults,
                 latent_channels=16, single_file_base=True,
                 capabilities=lambda path, family: zimage_capabilities(family)),
    FamilyLoader("Z-Image Omni", zimage_omni_family, load_zimage_omni_model,
                 zimage_omni_defaults, latent_channels=16,
                 capabilities=lambda path, family: zimage_omni_capabilities(family)),
    FamilyLoader("FLUX.2 (klein, dev)", flux2_family, load_flux2_model, flux2_defaults,
                 latent_channels=32, single_file_base=True,
                 capabilities=lambda path, family: flux2_capabilities(
                     family, distilled=flux2_distilled(path))),
    FamilyLoader("Kandinsky 5", kandinsky5_family, load_kandinsky5_model, kandinsky5_defaults,
                 latent_channels=16, single_file_base=True,
                 capabilities=lambda path, family: kandinsky5_capabilities(family)),
    FamilyLoader("Krea 2", krea2_family, load_krea2_model, krea2_defaults, latent_channels=16,
                 single_file_base=True,
                 capabilities=lambda path, family: krea2_capabilities(family)),
    FamilyLoader("Lumina Image 2.0 (Neta Lumina)",
                 lambda path: lumina2_family(path) or lumina2_file_family(path),
                 load_lumina2_model, lumina2_defaults, latent_channels=16, single_file_base=True,
                 capabilities=lambda path, family: lumina2_capabilities(family)),
    FamilyLoader("Sana (1.0, 1.5, Sprint)",
                 lambda path: sana_family(path) or sana_file_family(path), load_sana_model,
                 sana_defaults, latent_channels=32, single_file_base=True,
                 capabilities=lambda path, family: sana_capabilities(family)),
    FamilyLoader("PixArt-Σ, PixArt-α",
                 lambda path: pixart_family(path) or pixart_file_family(path),
                 load_pixart_model, pixart_defaults, single_file_base=True,
                 capabilities=lambda path, family: pixart_capabilities(family)),
    FamilyLoader("Qwen-Image 2.1", qwenimage21_family, load_qwenimage21_model,
                 qwenimage21_defaults, latent_channels=64, single_file_base=True,
                 capabilities=lambda path, family: qwenimage21_capabilities(family)),
    FamilyLoader("Qwen-Image", qwenimage_family, load_qwenimage_model, qwenimage_defaults,
                 latent_channels=16, single_file_base=True,
                 capabilities=lambda path, family: qwenimage_capabilities(family)),
    FamilyLoader("Qwen-Image-Edit", qwenimage_edit_family, load_qwenimage_edit_model,
                 qwenimage_edit_defaults, latent_channels=16, single_file_base=True,
                 capabilities=lambda path, family: qwenimage_edit_capabilities(family)),
    FamilyLoader("Qwen-Image-Layered (layers: `layers`)", qwenimage_layered_family,
                 _refuse_layers, lambda path, family: None, latent_channels=16),
    FamilyLoader("LongCat-Image (Edit)", longcat_image_family, load_longcat_image_model,
                 longcat_image_defaults, latent_channels=16,
                 capabilities=lambda path, family: longcat_image_capabilities(family)),
    FamilyLoader("PRX", prx_family, load_prx_model, prx_defaults, latent_channels=16,
                 capabilities=lambda path, family: prx_capabilities(family)),
    FamilyLoader("Ideogram 4", ideogram4_family, load_ideogram4_model, ideogram4_defaults,
                 latent_channels=32,
                 capabilities=lambda path, family: ideogram4_capabilities(family)),
    FamilyLoader("Bria 3.2", bria_family, load_bria_model, bria_defaults, latent_channels=16,
                 capabilities=lambda path, family: bria_capabilities(family)),
    FamilyLoader("CogView4", cogview4_family, load_cogview4_model, cogview4_defaults,
                 latent_channels=16, capabilities=folder_capabilities),
    FamilyLoader("Ovis-Image", ovis_image_family, load_ovis_image_model, ovis_image_defaults,
                 latent_channels=16,
                 capabilities=lambda path, family: ovis_image_capabilities(family)),
    FamilyLoader("NucleusMoE-Image", nucleusmoe_family, load_nucleusmoe_model,
                 nucleusmoe_defaults, latent_channels=16,
                 capabilities=lambda path, family: nucleusmoe_capabilities(family)),
    FamilyLoader("ERNIE-Image (Turbo)",
                 lambda path: ernie_image_family(path) or ernie_image_file_family(path),
                 load_ernie_image_model, ernie_image_defaults, latent_channels=32,
                 single_file_base=True,
                 capabilities=lambda path, family: ernie_image_capabilities(family)),
    FamilyLoader("HiDream-I1 (Full, Dev, Fast)", hidream_family, load_hidream_model,
                 hidream_defaults, latent_channels=16, single_file_base=True,
                 capabilities=lambda path, family: hidream_capabilities(family)),
    FamilyLoader("AuraFlow", lambda path: auraflow_family(path) or auraflow_file_family(path),
                 load_auraflow_model, auraflow_defaults, latent_channels=4,
                 single_file_base=True,
                 capabilities=lambda path, family: auraflow_capabilities(family)),
    # a video model that edits pictures: img2img, its init image the picture to edit
    FamilyLoader("ChronoEdit (picture edits)", chronoedit_family, load_chronoedit_model,
                 chronoedit_defaults, latent_channels=16,
                 capabilities=lambda path, family: chronoedit_capabilities(family)),
    FamilyLoader("JoyImage Edit (Plus)", joyimage_family, load_joyimage_model, joyimage_defaults,
                 latent_channels=16,
                 capabilities=lambda path, family: joyimage_capabilities(family)),
    FamilyLoader("Cosmos Predict2 Text2Image",
                 lambda path: cosmos_family(path) if cosmos_family(path) == "cosmos2-t2i" else None,
                 load_cosmos_model,
                 cosmos_defaults, latent_channels=16,
                 capabilities=lambda path, family: cosmos_capabilities(family)),
    FamilyLoader("Bria FIBO (Edit)", bria_fibo_family, load_bria_fibo_model, bria_fibo_defaults,
                 latent_channels=48,
                 capabilities=lambda path, family: bria_fibo_capabilities(family)),
    FamilyLoader("Bria FIBO 2", bria_fibo2_family, load_bria_fibo2_model, bria_fibo2_defaults,
                 latent_channels=32,
                 capabilities=lambda path, family: bria_fibo2_capabilities(family)),
    # the video models: a folder or transformer file is told apart so that txt2img says to use
    # txt2vid
    FamilyLoader("Wan 2.1 / 2.2 (videos: txt2vid)",
                 lambda path: wan_family(path) or wan_file_family(path), refuse_pictures,
                 lambda path, family: None, latent_channels=16),
    FamilyLoader("Kandinsky 5 Video Lite (videos: txt2vid)", kandinsky5_video_family,
                 refuse_pictures, lambda path, family: None, latent_channels=16),
    FamilyLoader("HunyuanVideo 1.5 (videos: txt2vid, img2vid)", hunyuan_video15_family,
                 refuse_pictures, lambda path, family: None, latent_channels=32),
    FamilyLoader("LTX-2 (videos with audio: txt2vid)", ltx2_family, refuse_pictures,
                 lambda path, family: None, latent_channels=128),
    FamilyLoader("FramePack (videos: img2vid)", framepack_family, refuse_pictures,
                 lambda path, family: None, latent_channels=16),
    FamilyLoader("HunyuanVideo (videos: txt2vid)", hunyuan_video_family, refuse_pictures,
                 lambda path, family: None, latent_channels=16),
    FamilyLoader("Cosmos Predict2.5 (videos: txt2vid, img2vid)",
                 lambda path: cosmos_family(path) if cosmos_family(path) == "cosmos25" else None,
                 refuse_pictures, lambda path, family: None, latent_channels=16),
    FamilyLoader("Cosmos Predict2 Video2World (videos: img2vid, txt2vid --init-video)",
                 lambda path: cosmos_family(path) if cosmos_family(path) == "cosmos2-v2w"
                 else None, refuse_pictures, lambda path, family: None, latent_channels=16),
    FamilyLoader("SANA-Video (videos: txt2vid)", sana_video_family, refuse_pictures,
                 lambda path, family: None, latent_channels=16),
    FamilyLoader("Helios (videos: txt2vid)", helios_family, refuse_pictures,
                 lambda path, family: None, latent_channels=16),
    FamilyLoader("Motif-Video (videos: txt2vid, img2vid)", motif_video_family, refuse_pictures,
                 lambda path, family: None, latent_channels=16),
    FamilyLoader("Kolors", kolors_family, load_kolors_model, kolors_defaults,
                 single_file_base=True, capabilities=kolors_capabilities_of),
    FamilyLoader("SD 1.x/2.x, SDXL (base, refiner, Turbo)", any_checkpoint, load_unet_model,
                 unet_defaults, capabilities=unet_capabilities_of),
)


def family_of(path: PathText) -> tuple[FamilyLoader, str]:
    """The registry's line that claims `path`, and the family it detected there."""
    for entry in FAMILIES:
        family = entry.detect(path)
        if family is not None:
            return entry, family
    raise AssertionError("the registry's last line claims every path")


def capabilities_of(path: PathText) -> Capabilities | None:
    """What the model at `path` will take once loaded (its family's Capabilities, told from
    its configs and file headers, no weights read), None where only loading can tell (a
    broken file too: loading names what is wrong)."""
    entry, family = family_of(path)
    return entry.capabilities(path, family)
