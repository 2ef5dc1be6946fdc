"""An SD 1.x/2.x/SDXL model from a GGUF file, as PipelineWeights: a whole-model GGUF
(`python -m diffusion quantize`'s, diffusion.loaders.sd.gguf_model) alone, or a UNet-only one
(ComfyUI-GGUF's, stable-diffusion.cpp's, `quantize --unet-only`'s; diffusion.loaders.sd.gguf_unet)
with the parts it lacks from a base model or from module files.

    weights = gguf_pipeline_weights("sd15-Q8_0.gguf")                       # whole model
    weights = gguf_pipeline_weights("unet-Q8_0.gguf", base="v1-5-pruned-emaonly.safetensors")
    weights = gguf_pipeline_weights("unet-Q8_0.gguf", modules=["clip_l.safetensors",
                                                                "vae-ft-mse.safetensors"])

A base model (a diffusers folder or a checkpoint of the same family) gives the text encoders,
VAE, tokenizers and scheduler, and its UNet config the UNet's (head counts the tensors do not
tell). Module files (Forge's VAE / Text Encoder list, the CLI's --vae and --text-encoder):
a VAE (4 latent channels) and an SD 1.x/2.x model's CLIP text encoder; the scheduler and
tokenizer are then those of single files (diffusion.loaders.keymaps.ldm_configs). The tensors are
read when indexed; pipelines keep the GGUF's quantized matrices quantized
(diffusion.loaders.component).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import WeightsError
from ..flow.module_file import module_roles, vae_latent_channels
from ..flow.text_encoder_file import clip_text_refs
from ..formats.gguf_file import GGUFFile
from ..formats.safetensors import SafetensorsFile
from ..keymaps.expected_keys import clip_text_keys, unet_keys, vae_keys
from ..keymaps.ldm_configs import clip_text_config, scheduler_config
from ..keymaps.t5_gguf import gguf_kind
from ..weights import ComponentWeights, ModelInfo, PipelineWeights, require_keys
from .gguf_model import component_refs, read_model_metadata
from .gguf_unet import gguf_unet_weights
from .pipeline import load_pipeline_weights
from .vae import load_vae_weights

__all__ = ["gguf_pipeline_weights", "gguf_unet_facts", "is_unet_gguf"]

_EXPECTED = {"unet": unet_keys, "vae": vae_keys, "text_encoder": clip_text_keys,
             "text_encoder_2": clip_text_keys}
_UNET_MARKS = ("input_blocks.0.0.weight", "model.diffusion_model.input_blocks.0.0.weight",
               "conv_in.weight")
_SUPPLY = ("--base MODEL (a model of the same family: its VAE, text encoder and scheduler) or "
           "module files (--vae VAE.safetensors, --text-encoder clip_l.safetensors)")


def is_unet_gguf(path: str | os.PathLike[str]) -> bool:
    """Whether `path` is a UNet-only SD GGUF (reads the header; False for other files)."""
    if Path(path).suffix.lower() != ".gguf":
        return False
    file = GGUFFile(path)
    return read_model_metadata(file) is None and any(mark in file for mark in _UNET_MARKS)


def gguf_unet_facts(path: str | os.PathLike[str]) -> tuple[str, dict[str, Any], int]:
    """(family, UNet config, VAE latent channels) of the SD model in the GGUF `path` as
    `gguf_pipeline_weights` tells them, from the header alone: a whole-model file's metadata,
    a UNet-only file's tensor shapes (its family is its text width's, which a --base must
    share; its VAE, the base's or a module, has 4 channels). WeightsError for any other
    file."""
    file = GGUFFile(path)
    whole = read_model_metadata(file)
    if whole is not None:
        configs = whole["configs"]
        return whole["info"].family, configs["unet"], int(configs["vae"]["latent_channels"])
    _, _, config = gguf_unet_weights(path)
    return _family(config), config, 4


def gguf_pipeline_weights(path: str | os.PathLike[str], *, dtype: np.dtype | None = None,
                          prediction_type: str | None = None,
                          base: str | os.PathLike[str] | None = None,
                          modules: Sequence[str | os.PathLike[str]] = ()) -> PipelineWeights:
    """The model in the GGUF `path` (module docstring). A whole-model file needs nothing else
    (and takes no `base` or `modules`); a UNet-only one takes its other parts from `base`, else
    from `modules`. WeightsError in one line naming the file and what is missing, or what the
    GGUF is when it is no SD model (a T5 encoder, a FLUX transformer...), or that a
    whole-model file takes no `base` or `modules`."""
    file = GGUFFile(path)
    whole = read_model_metadata(file)
    if whole is not None:
        if base is not None or modules:
            raise WeightsError(f"{path}: a whole-model GGUF, with its own text encoders and VAE; "
                               "a base model and text encoder files are for UNet-only GGUFs "
                               "(--vae still replaces its VAE)")
        return _whole(file, whole, dtype, prediction_type)
    if not any(mark in file for mark in _UNET_MARKS):
        raise WeightsError(f"{path}: {gguf_kind(path)}; as a model this loads SD UNet and "
                           "whole-model GGUFs (python -m diffusion quantize) and city96's FLUX.1 "
                           "and SD 3.5 GGUFs")
    if base is not None:
        return _with_base(path, base, dtype, prediction_type)
    return _with_modules(path, [Path(m) for m in modules], dtype, prediction_type)


def _whole(file: GGUFFile, whole: dict[str, Any], dtype: np.dtype | None,
           prediction_type: str | None) -> PipelineWeights:
    parts = {}
    for name, config in whole["configs"].items():
        refs = require_keys(name, component_refs(file, name), _EXPECTED[name](config),
                            str(file.path))
        parts[name] = ComponentWeights(name, config, refs, dtype=dtype)
    info, scheduler = whole["info"], whole["scheduler"]
    if prediction_type is not None:
        info = dataclasses.replace(info, prediction_type=prediction_type)
        scheduler = {**scheduler, "prediction_type": prediction_type}
    return PipelineWeights(unet=parts["unet"], vae=parts["vae"],
                           text_encoder=parts.get("text_encoder"),
                           text_encoder_2=parts.get("text_encoder_2"), scheduler_config=scheduler,
                           info=info, pipeline_config=whole["pipeline"])


def _with_base(path: str | os.PathLike[str], base: str | os.PathLike[str],
               dtype: np.dtype | None, prediction_type: str | None) -> PipelineWeights:
    weights = load_pipeline_weights(base, dtype=dtype, prediction_type=prediction_type)
    try:
        _, refs, config = gguf_unet_weights(path, config=weights.unet.config)
    except WeightsError as exc:
        raise WeightsError(f"{exc} (with the UNet config of --base {base}: give a base model "
                           f"of the UNet's family, {weights.info.family} is not)") from None
    unet = ComponentWeights("unet", config, refs, dtype=dtype)
    return dataclasses.replace(weights, unet=unet)


def _family(config: dict[str, Any]) -> str:
    context = config.get("cross_attention_dim")
    return {2048: "sdxl", 1280: "sdxl-refiner", 1024: "sd2"}.get(context, "sd1")  # type: ignore


def _with_modules(path: str | os.PathLike[str], modules: list[Path], dtype: np.dtype | None,
                  prediction_type: str | None) -> PipelineWeights:
    prediction = prediction_type or "epsilon"
    _, refs, config = gguf_unet_weights(path, prediction_type=prediction)
    family = _family(config)
    vaes = [m for m in modules if "vae" in module_roles(m) and vae_latent_channels(m) == 4]
    clips = [m for m in modules if "clip_l" in module_roles(m)]
    missing = [part for part, found in (("VAE", vaes), ("text encoder", clips)) if not found]
    if family.startswith("sdxl"):
        raise WeightsError(f"{path}: an SDXL UNet-only GGUF; give the model's other parts "
                           "with --base MODEL (an SDXL model)")
    if missing:
        raise WeightsError(f"{path}: a UNet-only GGUF, without a {' or '.join(missing)}; give "
                           f"{_SUPPLY}")
    clip_file = SafetensorsFile(clips[-1])
    clip = clip_text_refs(clip_file) or {}
    clip_config = clip_text_config(clip, clip_file, family=family)
    if clip_config["hidden_size"] != config["cross_attention_dim"]:
        raise WeightsError(f"{clips[-1]}: a CLIP text encoder {clip_config['hidden_size']} wide; "
                           f"the UNet in {Path(path).name} attends to "
                           f"{config['cross_attention_dim']}-wide text ({family})")
    text = ComponentWeights("text_encoder", clip_config,
                            require_keys("text_encoder", clip, clip_text_keys(clip_config),
                                         str(clips[-1])), dtype=dtype)
    vae = load_vae_weights(vaes[-1], dtype=dtype)  # the last one named wins, as Forge's
    info = ModelInfo(family=family, inpainting=config["in_channels"] == 9,  # type: ignore
                     prediction_type=prediction, source="single_file")
    return PipelineWeights(unet=ComponentWeights("unet", config, refs, dtype=dtype), vae=vae,
                           text_encoder=text, scheduler_config=scheduler_config(family, prediction),
                           info=info)
