"""load_pipeline: a model path -> a pipeline of its family on the GPU (a contract.Pipeline)."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, FeatureError, as_dtype, default_device
from gpustd import has_matrix_units
from gpustd.nn import Module, StateDictError, deferred

from ..loaders import ComponentWeights, SafetensorsFile, WeightsError, load_pipeline_weights
from ..loaders.component import load_component
from ..loaders.flow.file import flow_model_family
from ..loaders.flow.module_file import module_roles, vae_latent_channels
from ..loaders.sd.gguf_pipeline import gguf_pipeline_weights
from ..models import AutoencoderKL, CLIPTextModel, UNet2DConditionModel
from ..text.tokenizer import CLIPTokenizer
from .contract import Pipeline
from .flow_model import FLOW_DEFAULTS, load_flow_model
from .stable_diffusion import SamplingDefaults, StableDiffusion
from .stable_diffusion_xl import SDXL_FAMILIES, StableDiffusionXL, TextEncoders

__all__ = ["DEFAULTS_FILE", "DEFAULT_MODEL", "TURBO_DEFAULTS", "default_model_path", "is_turbo",
           "load_pipeline", "model_defaults", "read_defaults"]

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


# What a Turbo model samples with when its defaults.json does not say (SD-Turbo, SDXL-Turbo:
# adversarial diffusion distillation, trained for 1-4 steps at 512 px without guidance): one
# Euler a step on the SGM Uniform schedule (at one step: timestep 999, diffusers' trailing
# spacing), CFG scale 1 (no unconditional pass).
TURBO_DEFAULTS = SamplingDefaults(steps=1, sampler="Euler a SGM Uniform", cfg_scale=1.0)


def is_turbo(path: str | os.PathLike[str]) -> bool:
    """Whether the model at `path` says it is a Turbo model (SD-Turbo, SDXL-Turbo), read
    without loading it: "turbo" in its folder or file name (sd-turbo, sdxl-turbo,
    sd_xl_turbo_1.0_fp16.safetensors; for a Hugging Face cache snapshot the repository's
    folder, models--stabilityai--sdxl-turbo) or in a single file's ModelSpec title. Nothing
    else marks them: their weights and configs are those of SD 2.1 and SDXL, and trailing
    timestep spacing is no sign (zero-SNR models such as the bundled shapes-128 use it)."""
    path = Path(path)
    names = [path.name]
    if path.parent.name == "snapshots":
        names.append(path.parent.parent.name)
    if any("turbo" in name.lower() for name in names):
        return True
    if path.suffix.lower() == ".safetensors" and path.is_file():
        try:
            said = SafetensorsFile(path).metadata.get("modelspec.title", "")
        except WeightsError:
            return False  # loading names the bad file
        return "turbo" in said.lower()
    return False


def model_defaults(path: str | os.PathLike[str]) -> tuple[SamplingDefaults, list[str]]:
    """The sampling defaults of the model at `path`: its defaults.json (`read_defaults`), then
    for a Turbo model (`is_turbo`) TURBO_DEFAULTS, for FLUX / SD3 their family's
    (diffusion.pipelines.flow_model.FLOW_DEFAULTS: FLUX at CFG 1) where the file says nothing;
    also the names of the settings that came from those."""
    recommended = read_defaults(path)
    family = flow_model_family(path)
    if not is_turbo(path) and family is None:
        return recommended, []
    fallback = TURBO_DEFAULTS if family is None else FLOW_DEFAULTS[family]
    filled = {f.name: getattr(fallback, f.name) for f in fields(SamplingDefaults)
              if getattr(recommended, f.name) is None}
    return replace(recommended, **filled), list(filled)


def _filled(make: Callable[[], Module], weights: ComponentWeights) -> Any:
    """The model `make()` builds with `weights` loaded; a tensor that does not fit becomes a
    WeightsError that names the file as well as the key. Weights from a GGUF file: built
    under gpustd.nn.deferred(), quantized matrices kept quantized (load_component)."""
    try:
        if any(weights.source(key)[0].suffix.lower() == ".gguf" for key in weights):
            with deferred():
                model = make()
            return load_component(model, weights)
        model = make()
        model.load_state_dict(weights)
    except StateDictError as exc:
        files = sorted({str(weights.source(key)[0]) for key in weights})
        raise WeightsError(f"{weights.name} weights in {', '.join(files)} do not fit the "
                           f"model their config describes: {exc}") from None
    return model


def auto_dtype(device: Device) -> np.dtype:
    """float16 where `device` runs f16 on its matrix units, which makes it several times
    faster than float32 there; float32 elsewhere (f16 without matrix units saves memory, not
    time, and costs precision)."""
    return np.dtype(np.float16 if has_matrix_units(device) else np.float32)


def load_pipeline(path: str | os.PathLike[str] | None = None, *, dtype: Any = np.float32,
                  device: Device | None = None, prediction_type: str | None = None,
                  variant: str | None = None,
                  text_encoders: Sequence[str | os.PathLike[str]] = (),
                  base: str | os.PathLike[str] | None = None) -> Pipeline:
    """Load a Stable Diffusion 1.x/2.x, SDXL base or SDXL refiner model (diffusers folder or
    single-file `.safetensors`; None: the bundled default model, `default_model_path()`) onto
    `device` (default: the best adapter) with weights in `dtype`: float32; float16 where the
    adapter has shader-f16; or "auto", float16 where the adapter multiplies f16 on matrix units
    (tensor cores, `gpustd.has_matrix_units`: Dawn on a recent GPU), else float32. Tensors
    stream from disk to the GPU one at a time. The pipeline's `defaults` are
    `model_defaults(path)`: the folder's `defaults.json`, then Turbo's. An SDXL model gives a
    `diffusion.StableDiffusionXL`; its VAE stays float32 under float16 weights when its config
    says `force_upcast`, as diffusers' SDXL pipelines decode. A FLUX.1 or SD3/3.5 folder gives
    a `diffusion.pipelines.flow_model.FlowModel` (same `generate`), with `text_encoders`
    (t5xxl / clip_l / clip_g single files) in place of its own; so does a FLUX / SD3 single
    file (BFL's, Stability's, ComfyUI's), `text_encoders` then giving what it lacks (the VAE
    `ae.safetensors` too).

    Raises diffusion.loaders.WeightsError for missing/corrupt/unsupported files and keys.
    diffusers: `StableDiffusionPipeline.from_pretrained(path)` / `.from_single_file(path)`.
    """
    path = default_model_path() if path is None else path
    defaults, _ = model_defaults(path)  # before the weights: a bad file fails fast
    device = device or default_device()
    dtype = auto_dtype(device) if isinstance(dtype, str) and dtype == "auto" else as_dtype(dtype)
    if dtype == np.float16 and not device.has_f16:
        raise FeatureError("shader-f16", "float16 weights", device.info.label)
    family = flow_model_family(path)
    if family is not None:
        return load_flow_model(path, family, dtype=dtype, device=device, defaults=defaults,
                               variant=variant, text_encoders=text_encoders)
    if Path(path).suffix.lower() == ".gguf":  # not city96's FLUX / SD3.5 (those are flow)
        weights = gguf_pipeline_weights(path, dtype=dtype, prediction_type=prediction_type,
                                        base=base, modules=text_encoders)
    elif text_encoders or base is not None:
        given = ("text encoder files (--text-encoder) are" if text_encoders
                 else "a base model (--base) is")
        raise ValueError(f"{given} for FLUX / SD3 models and UNet-only GGUFs; "
                         f"{Path(path).name} is neither")
    else:
        weights = load_pipeline_weights(path, dtype=dtype, prediction_type=prediction_type,
                                        variant=variant)
    place = {"dtype": dtype, "device": device}
    family = weights.info.family
    unet = _filled(lambda: UNet2DConditionModel(weights.unet.config, **place), weights.unet)
    # AutoencoderKL.force_upcast, read before building the VAE so it is built once
    upcast = weights.vae.config.get("force_upcast", True)  # diffusers' default
    vae_dtype = np.float32 if family in SDXL_FAMILIES and dtype == np.float16 and upcast else dtype
    vae = _filled(lambda: AutoencoderKL(weights.vae.config, dtype=vae_dtype, device=device),
                  weights.vae)
    common: dict[str, Any] = dict(
        unet=unet, vae=vae, scheduler_config=weights.scheduler_config,
        name=Path(path).name.removesuffix(".safetensors").removesuffix(".gguf"),
        defaults=defaults, family=family, is_turbo=is_turbo(path))
    pipe: StableDiffusion
    if family in SDXL_FAMILIES:
        pipe = StableDiffusionXL(text_encoders=_sdxl_encoders(weights, place), **common)
    else:
        text_weights = weights.text_encoder
        assert text_weights is not None  # only an SDXL refiner comes without this encoder
        text_encoder = _filled(lambda: CLIPTextModel(text_weights.config, **place), text_weights)
        pipe = StableDiffusion(tokenizer=_tokenizer(weights.tokenizer_dir, family == "sd2"),
                               text_encoder=text_encoder, **common)
    # a UNet-only GGUF's VAE module is named in the infotext, as --vae's (the last one wins)
    vaes = [m for m in text_encoders if "vae" in module_roles(m)
            and vae_latent_channels(m) == pipe.latent_channels]
    pipe.vae_path = vaes[-1] if vaes else None
    return pipe


def _tokenizer(folder: Path | None, pads_with_bang: bool) -> CLIPTokenizer:
    """A folder's tokenizer; for a single file the bundled vocabulary, padding with "!" where
    the model's own tokenizer does (SD 2.x, SDXL's OpenCLIP encoder)."""
    if folder is not None:
        return CLIPTokenizer.from_pretrained(folder)
    return CLIPTokenizer(pad_token="!" if pads_with_bang else "<|endoftext|>")


def _sdxl_encoders(weights: Any, place: dict[str, Any]) -> TextEncoders:
    """The text encoders of an SDXL base (CLIP-L, OpenCLIP-G) or refiner (OpenCLIP-G)."""
    refiner = weights.info.family == "sdxl-refiner"
    second = _filled(lambda: CLIPTextModel(weights.text_encoder_2.config, with_projection=True,
                                           **place), weights.text_encoder_2)
    tokenizers = [_tokenizer(getattr(weights, "tokenizer_2_dir", None), True)]
    encoders = [second]
    if not refiner:
        encoders.insert(0, _filled(lambda: CLIPTextModel(weights.text_encoder.config, **place),
                                   weights.text_encoder))
        tokenizers.insert(0, _tokenizer(weights.tokenizer_dir, False))
    zeros = weights.pipeline_config.get("force_zeros_for_empty_prompt", not refiner)
    return TextEncoders(tokenizers, encoders, refiner=refiner,
                        force_zeros_for_empty_prompt=bool(zeros))
