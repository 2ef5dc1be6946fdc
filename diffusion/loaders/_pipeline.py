"""`load_pipeline_weights`: one entry point for diffusers folders and single-file checkpoints."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ._folder import load_folder
from ._ldm_configs import PREDICTION_TYPES
from ._single_file import load_single_file
from ._weights import PipelineWeights, resolve_dtype
from .errors import PICKLE_SUFFIXES, WeightsError, pickle_refused

__all__ = ["load_pipeline_weights"]


def load_pipeline_weights(path: str | os.PathLike[str], *, dtype: Any = None,
                          prediction_type: str | None = None,
                          variant: str | None = None) -> PipelineWeights:
    """Open a Stable Diffusion 1.x/2.x model for loading, reading only file headers.

    `path` is either a diffusers pipeline folder (model_index.json, unet/, vae/, text_encoder/,
    scheduler/, tokenizer/; safetensors weights, `variant` picks e.g. the ".fp16" files, and a
    folder holding only one variant uses it) or a single-file original checkpoint
    (`.safetensors` with `model.diffusion_model.*` / `first_stage_model.*` /
    `cond_stage_model.*` keys), whose keys are converted to diffusers names and whose configs are
    inferred (SD1 vs SD2, inpainting, v-prediction; see `detect_prediction_type`).

    `dtype`: None keeps tensors as stored (bfloat16 is widened to float32); "float16" or
    "float32" converts floating-point tensors as they are read. `prediction_type` ("epsilon",
    "v_prediction" or "sample") overrides what the model declares or what is detected.

    Returns PipelineWeights; tensors are read only when indexed (see ComponentWeights).
    Raises WeightsError (a ValueError) for missing/corrupt/unsupported files, naming the file and
    key; pickle checkpoints (.ckpt/.pt/.pth/.bin) are refused because loading them runs code.
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
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise pickle_refused(path)
    if path.suffix.lower() != ".safetensors":
        raise WeightsError(f"{path}: unsupported file type {path.suffix!r}; expected a diffusers "
                           "pipeline folder or a .safetensors checkpoint")
    if variant is not None:
        raise ValueError("variant= selects files inside a diffusers folder; "
                         f"{path.name} is a single file")
    return load_single_file(path, dtype=resolved, prediction_type=prediction_type)
