"""load_pipeline: a model path -> a pipeline of its family on the GPU (a contract.Pipeline),
the family found by walking the registry (`families.FAMILIES`)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, FeatureError, as_dtype, default_device
from gpustd import has_matrix_units

from .contract import SAMPLING_SETTINGS, LoadOptions, Pipeline, SamplingDefaults
from .families import family_of
from .model_defaults import DEFAULTS_FILE, TURBO_DEFAULTS, is_turbo, read_defaults

__all__ = ["DEFAULTS_FILE", "DEFAULT_MODEL", "TURBO_DEFAULTS", "auto_dtype", "default_model_path",
           "is_turbo", "load_pipeline", "model_defaults", "read_defaults"]


# The model that ships with the package (trained by tools/train_default_model.py on drawn
# shapes; see its README): what every entry point uses when no model is named.
DEFAULT_MODEL = Path(__file__).parents[1] / "data" / "shapes-128"


def default_model_path() -> Path:
    """The bundled default model's folder; FileNotFoundError saying what to pass if this
    installation lacks it."""
    if not (DEFAULT_MODEL / "model_index.json").is_file():
        raise FileNotFoundError(
            f"the bundled default model is missing from this installation ({DEFAULT_MODEL}); "
            "pass a model path (a diffusers folder or a .safetensors checkpoint)")
    return DEFAULT_MODEL


def model_defaults(path: str | os.PathLike[str]) -> tuple[SamplingDefaults, list[str]]:
    """The sampling defaults of the model at `path`: its defaults.json (`read_defaults`), then
    its family's where the file says nothing (`FamilyLoader.defaults`: a Turbo model's, FLUX's
    at CFG 1, ...); also the names of the settings that came from the family."""
    recommended = read_defaults(path)
    entry, family = family_of(path)
    fallback = entry.defaults(path, family)
    if fallback is None:
        return recommended, []
    filled = {name: getattr(fallback, name) for name in SAMPLING_SETTINGS
              if getattr(recommended, name) is None}
    return replace(recommended, **filled, preset=fallback.preset or family,
                   why=fallback.why), list(filled)


def auto_dtype(device: Device) -> np.dtype:
    """float16 where `device` runs f16 on its matrix units, which makes it several times
    faster than float32 there; float32 elsewhere (f16 without matrix units saves memory, not
    time, and costs precision)."""
    return np.dtype(np.float16 if has_matrix_units(device) else np.float32)


def load_pipeline(path: str | os.PathLike[str] | None = None, *, dtype: Any = np.float32,
                  device: Device | None = None, prediction_type: str | None = None,
                  variant: str | None = None,
                  text_encoders: Sequence[str | os.PathLike[str]] = (),
                  base: str | os.PathLike[str] | None = None, offload: bool = False
                  ) -> Pipeline:
    """Load a Stable Diffusion 1.x/2.x, SDXL base or SDXL refiner model (diffusers folder or
    single-file `.safetensors`; None: the bundled default model, `default_model_path()`) onto
    `device` (default: the best adapter) with weights in `dtype`: float32; float16 where the
    adapter has shader-f16; or "auto", float16 where the adapter multiplies f16 on matrix units
    (tensor cores, `gpustd.has_matrix_units`: Dawn on a recent GPU), else float32. Tensors
    stream from disk to the GPU one at a time. The pipeline's `defaults` are
    `model_defaults(path)`: the folder's `defaults.json`, then Turbo's. An SDXL model gives a
    `diffusion.StableDiffusionXL`; its VAE stays float32 under float16 weights when its config
    says `force_upcast`, as diffusers' SDXL pipelines decode. A FLUX.1 or SD3/3.5 folder gives
    a `diffusion.pipelines.flow.flow_model.FlowModel` (same `generate`), with `text_encoders`
    (t5xxl / clip_l / clip_g single files) in place of its own; so does a FLUX / SD3 single
    file (BFL's, Stability's, ComfyUI's), `text_encoders` then giving what it lacks (the VAE
    `ae.safetensors` too). `offload`: a memory mode will be set (`set_memory_mode`); a family
    that can (SD 1.x/2.x, SDXL and its refiner, UNet-only GGUFs; FLUX.1 with Kontext and Fill,
    SD3/3.5, Chroma, FLUX.2, Qwen-Image, Z-Image) loads each network straight to host memory,
    tensor by tensor, so the load takes next to no GPU memory.

    Raises diffusion.loaders.WeightsError for missing/corrupt/unsupported files and keys.
    diffusers: `StableDiffusionPipeline.from_pretrained(path)` / `.from_single_file(path)`.
    """
    path = default_model_path() if path is None else path
    defaults, _ = model_defaults(path)  # before the weights: a bad file fails fast
    device = device or default_device()
    dtype = auto_dtype(device) if isinstance(dtype, str) and dtype == "auto" else as_dtype(dtype)
    if dtype == np.float16 and not device.has_f16:
        raise FeatureError("shader-f16", "float16 weights", device.info.label)
    options = LoadOptions(dtype=dtype, device=device, defaults=defaults,
                          prediction_type=prediction_type, variant=variant,
                          text_encoders=tuple(text_encoders), base=base, offload=offload)
    entry, family = family_of(path)
    return entry.load(path, family, options)
