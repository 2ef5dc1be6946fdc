"""`load_pipeline_weights`: one entry point for diffusers folders and single-file checkpoints."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

from ..errors import PICKLE_SUFFIXES, WeightsError
from ..formats.diffusers_folder import read_json
from ..keymaps.expected_keys import clip_text_keys, unet_keys, vae_keys
from ..keymaps.ldm_configs import PREDICTION_TYPES
from ..weights import ComponentWeights, PipelineWeights, require_keys, resolve_dtype
from .folder import load_folder
from .single_file import load_single_file

__all__ = ["load_pipeline_weights"]


def load_pipeline_weights(path: str | os.PathLike[str], *, dtype: Any = None,
                          prediction_type: str | None = None,
                          variant: str | None = None,
                          config: str | os.PathLike[str] | None = None) -> PipelineWeights:
    """Open a Stable Diffusion 1.x/2.x or SDXL model for loading, reading only file headers.

    `path` is either a diffusers pipeline folder (model_index.json, unet/, vae/, text_encoder/,
    scheduler/, tokenizer/; safetensors weights, `variant` picks e.g. the ".fp16" files, and a
    folder holding only one variant uses it) or a single-file original checkpoint
    (`.safetensors` with `model.diffusion_model.*` / `first_stage_model.*` /
    `cond_stage_model.*` keys), whose keys are converted to diffusers names and whose configs are
    inferred (SD1 vs SD2, inpainting, v-prediction; see `detect_prediction_type`). SDXL:
    folders with text_encoder_2/ and tokenizer_2/ (the refiner without text_encoder/), single
    files with `conditioner.embedders.*` keys (base vs refiner from which encoders are there).

    `config` (single files only): a diffusers folder of the same architecture whose component
    configs, scheduler, tokenizers and pipeline settings replace the inferred ones (what the
    tensors cannot tell: head counts, GroupNorm groups); diffusers' `from_single_file(path,
    config=folder)`. The file's tensors must be the ones those configs name.

    `dtype`: None keeps tensors as stored (bfloat16 is widened to float32); "float16" or
    "float32" converts floating-point tensors as they are read. `prediction_type` ("epsilon",
    "v_prediction" or "sample") overrides what the model declares or what is detected.

    Returns PipelineWeights; tensors are read only when indexed (see ComponentWeights).
    Raises WeightsError (a ValueError) for missing/corrupt/unsupported files, naming the file and
    key. PyTorch checkpoints (.ckpt/.pt/.pth/.bin) are read without running their pickle (a
    global outside the tensor-rebuilding allowlist is refused: `formats.torch_pickle`).
    Equivalent to diffusers' `StableDiffusionPipeline.from_pretrained(folder)` /
    `.from_single_file(path)`, without building the models.
    """
    path = Path(path).expanduser()
    resolved = resolve_dtype(dtype)
    if prediction_type is not None and prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}, got "
                         f"{prediction_type!r}")
    if path.name == "model_index.json":
        path = path.parent
    if path.is_dir():
        return load_folder(path, dtype=resolved, prediction_type=prediction_type, variant=variant)
    if not path.exists():
        raise WeightsError(f"{path}: no such file or folder; expected a diffusers pipeline folder "
                           "(with model_index.json) or a single-file .safetensors checkpoint")
    if path.suffix.lower() not in (".safetensors", *PICKLE_SUFFIXES):
        raise WeightsError(f"{path}: unsupported file type {path.suffix!r}; expected a diffusers "
                           "pipeline folder or a .safetensors (or PyTorch .ckpt) checkpoint")
    if variant is not None:
        raise ValueError("variant= selects files inside a diffusers folder; "
                         f"{path.name} is a single file")
    weights = load_single_file(path, dtype=resolved, prediction_type=prediction_type)
    if config is None:
        return weights
    try:
        return _with_folder_configs(weights, Path(config).expanduser(), prediction_type)
    except WeightsError as error:
        raise WeightsError(f"{path} with config={config}: {error}; config= must be the "
                           "diffusers folder of the same model architecture") from None


_EXPECTED = {"unet": unet_keys, "vae": vae_keys, "text_encoder": clip_text_keys,
             "text_encoder_2": clip_text_keys}


def _with_folder_configs(weights: PipelineWeights, folder: Path,
                         prediction_type: str | None) -> PipelineWeights:
    """`weights` with the configs of the diffusers folder `folder` (see `config=`)."""
    if not (folder / "model_index.json").is_file():
        raise WeightsError(f"{folder}: config= must be a diffusers pipeline folder (with "
                           "model_index.json)")
    index = read_json(folder / "model_index.json")
    swapped: dict[str, Any] = {}
    for name, expected in _EXPECTED.items():
        component: ComponentWeights | None = getattr(weights, name)
        if component is None:
            continue
        config_path = folder / name / "config.json"
        config = read_json(config_path)
        where = f"{component.source(next(iter(component)))[0]} (with {config_path})"
        try:
            keys = expected(config)
        except (KeyError, TypeError, ValueError) as error:
            raise WeightsError(f"{config_path}: bad or missing field {error}") from None
        swapped[name] = ComponentWeights(name, config,
                                         require_keys(name, component.refs, keys, where),
                                         dtype=component.dtype)
    scheduler = read_json(folder / "scheduler" / "scheduler_config.json")
    prediction = prediction_type or scheduler.get("prediction_type", "epsilon")
    scheduler = {**scheduler, "prediction_type": prediction}
    info = dataclasses.replace(weights.info, prediction_type=prediction)
    tokenizers = [folder / n if (folder / n).is_dir() else None
                  for n in ("tokenizer", "tokenizer_2")]
    settings = {k: v for k, v in index.items() if not k.startswith("_") and not isinstance(v, list)}
    return dataclasses.replace(weights, **swapped, scheduler_config=scheduler, info=info,
                               tokenizer_dir=tokenizers[0], tokenizer_2_dir=tokenizers[1],
                               pipeline_config=settings)
