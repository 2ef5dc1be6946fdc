"""load_pipeline: a model path -> a StableDiffusion on the GPU."""

from __future__ import annotations

import json
import math
import os
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, FeatureError, as_dtype, default_device
from gpustd.nn import Module, StateDictError

from .loaders import ComponentWeights, WeightsError, load_pipeline_weights
from .models import AutoencoderKL, CLIPTextModel, UNet2DConditionModel
from .pipeline import SamplingDefaults, StableDiffusion
from .tokenizer import CLIPTokenizer

__all__ = ["DEFAULTS_FILE", "DEFAULT_MODEL", "default_model_path", "load_pipeline",
           "read_defaults"]

# The model that ships with the package (trained by tools/train_default_model.py on drawn
# shapes; see its README): what every entry point uses when no model is named.
DEFAULT_MODEL = Path(__file__).parent / "data" / "shapes-128"


def default_model_path() -> Path:
    """The bundled default model's folder; FileNotFoundError saying what to pass if this
    installation lacks it."""
    if not (DEFAULT_MODEL / "model_index.json").is_file():
        raise FileNotFoundError(
            f"the bundled default model is missing from this installation ({DEFAULT_MODEL}); "
            "pass a model path (a diffusers folder or a .safetensors checkpoint)")
    return DEFAULT_MODEL


# A model folder's recommended sampling settings, e.g. {"steps": 10, "sampler": "DDIM",
# "cfg_scale": 5.0}; every key optional. Not a diffusers file: diffusers ignores it.
DEFAULTS_FILE = "defaults.json"


def _defaults_value(key: str, value: Any) -> Any:
    """`value` of `key` as SamplingDefaults holds it; ValueError saying what it must be."""
    if key == "steps":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"steps must be a whole number >= 1, got {value!r}")
        return value
    if key == "cfg_scale":
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value)):
            raise ValueError(f"cfg_scale must be a finite number, got {value!r}")
        return float(value)
    if not isinstance(value, str):
        raise ValueError(f"sampler must be a sampler name (a string), got {value!r}")
    from .sampling import sampler_label

    return sampler_label(value)


def read_defaults(path: str | os.PathLike[str]) -> SamplingDefaults:
    """The sampling settings the model at `path` recommends: its folder's `defaults.json`
    (keys `steps`, `sampler`, `cfg_scale`, each optional). A folder without one, a path that is
    not a folder (single-file checkpoints carry none) -> all None.

    Raises WeightsError naming the file for bad JSON, unknown keys or wrong types.
    """
    file = Path(path) / DEFAULTS_FILE
    if not file.is_file():
        return SamplingDefaults()
    allowed = [field.name for field in fields(SamplingDefaults)]
    try:
        data = json.loads(file.read_bytes())
    except ValueError as exc:
        raise WeightsError(f"{file} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{file} must hold a JSON object with the optional keys "
                           f"{', '.join(allowed)}, got {type(data).__name__}")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise WeightsError(f"{file}: unknown key{'s' * (len(unknown) > 1)} "
                           f"{', '.join(map(repr, unknown))}; allowed: {', '.join(allowed)}")
    try:
        return SamplingDefaults(**{key: _defaults_value(key, value)
                                   for key, value in data.items()})
    except ValueError as exc:
        raise WeightsError(f"{file}: {exc}") from None


def _filled(model: Module, weights: ComponentWeights) -> Any:
    """`model` with `weights` loaded; a tensor that does not fit becomes a WeightsError that
    names the file as well as the key."""
    try:
        model.load_state_dict(weights)
    except StateDictError as exc:
        files = sorted({str(weights.source(key)[0]) for key in weights})
        raise WeightsError(f"{weights.name} weights in {', '.join(files)} do not fit the "
                           f"model their config describes: {exc}") from None
    return model


def load_pipeline(path: str | os.PathLike[str] | None = None, *, dtype: Any = np.float32,
                  device: Device | None = None, prediction_type: str | None = None,
                  variant: str | None = None) -> StableDiffusion:
    """Load a Stable Diffusion 1.x/2.x model (diffusers folder or single-file `.safetensors`;
    None: the bundled default model, `default_model_path()`) onto `device` (default: the best
    adapter) with weights in `dtype` (float32, or float16 where the adapter has shader-f16).
    Tensors stream from disk to the GPU one at a time. The pipeline's `defaults` are the
    folder's `defaults.json` (`read_defaults`).

    Raises diffusion.loaders.WeightsError for missing/corrupt/unsupported files and keys.
    diffusers: `StableDiffusionPipeline.from_pretrained(path)` / `.from_single_file(path)`.
    """
    path = default_model_path() if path is None else path
    defaults = read_defaults(path)  # before the weights: a bad file fails fast
    device = device or default_device()
    dtype = as_dtype(dtype)
    if dtype == np.float16 and not device.has_f16:
        raise FeatureError("shader-f16", "float16 weights", device.info.label)
    weights = load_pipeline_weights(path, dtype=dtype, prediction_type=prediction_type,
                                    variant=variant)
    place = {"dtype": dtype, "device": device}
    unet = _filled(UNet2DConditionModel(weights.unet.config, **place), weights.unet)
    vae = _filled(AutoencoderKL(weights.vae.config, **place), weights.vae)
    text_encoder = _filled(CLIPTextModel(weights.text_encoder.config, **place),
                           weights.text_encoder)
    if weights.tokenizer_dir is not None:
        tokenizer = CLIPTokenizer.from_pretrained(weights.tokenizer_dir)
    else:  # single file: the bundled vocabulary; SD 2.x pads with "!" as its tokenizer does
        tokenizer = CLIPTokenizer(pad_token="!" if weights.info.family == "sd2"
                                  else "<|endoftext|>")
    return StableDiffusion(tokenizer=tokenizer, text_encoder=text_encoder, unet=unet, vae=vae,
                           scheduler_config=weights.scheduler_config,
                           name=Path(path).name.removesuffix(".safetensors"),
                           defaults=defaults)
