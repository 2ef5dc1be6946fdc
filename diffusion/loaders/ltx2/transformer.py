"""The `transformer/` of an LTX-2 diffusers folder (`LTX2Pipeline` and its siblings):
config.json naming an LTX2VideoTransformer3DModel and its safetensors (`.fp16` variants,
sharded `.safetensors.index.json`), read lazily and loaded into models.ltx2's model, whose
parameter names are diffusers' own.

    model = load_ltx2_transformer("LTX-2", dtype="float16")
    video, audio = model(video_tokens, audio_tokens, text, audio_text, timestep, ...)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device

from ...models.ltx2 import LTX2VideoTransformer3DModel
from ..errors import WeightsError
from ..formats.diffusers_folder import read_json, weight_refs
from ..weights import ComponentWeights, resolve_dtype

__all__ = ["load_ltx2_transformer", "ltx2_transformer_weights"]

_CLASS = "LTX2VideoTransformer3DModel"


def _folder(path: str | os.PathLike[str]) -> Path:
    """The transformer folder: `path` itself where it holds config.json, else its
    `transformer/`."""
    root = Path(path)
    return root if (root / "config.json").is_file() else root / "transformer"


def ltx2_transformer_weights(path: str | os.PathLike[str], *, dtype: Any = None,
                             variant: str | None = None) -> ComponentWeights:
    """Lazy weights (and config) of the LTX-2 transformer in `path`: a diffusers pipeline
    folder or its `transformer/` itself. `dtype`: None (as stored; bfloat16 read as float32),
    "float16" or "float32"; `variant`: e.g. "fp16". WeightsError naming the file when the
    folder is missing, holds another model or has no weights."""
    folder = _folder(path)
    config = read_json(folder / "config.json")
    found = config.get("_class_name")
    if found != _CLASS:
        what = found or "model without a _class_name"
        raise WeightsError(f"{folder / 'config.json'}: holds a {what}, not an {_CLASS}; "
                           "give an LTX-2 folder")
    refs, _ = weight_refs(folder, "diffusion_pytorch_model", variant)
    return ComponentWeights("transformer", config, refs, dtype=resolve_dtype(dtype))


def load_ltx2_transformer(path: str | os.PathLike[str], *, dtype: Any = np.float32,
                          device: Device | None = None, variant: str | None = None
                          ) -> LTX2VideoTransformer3DModel:
    """models.ltx2's transformer built from `path`'s config (ltx2_transformer_weights) in
    `dtype` on `device` (the default device where None), its weights loaded; a
    WeightsError naming the folder when its tensors do not fit the config."""
    weights = ltx2_transformer_weights(path, variant=variant)
    model = LTX2VideoTransformer3DModel(weights.config, dtype=dtype, device=device)
    try:
        model.load_state_dict(weights, dtype=dtype)
    except ValueError as error:
        raise WeightsError(f"{_folder(path)}: {error}") from None
    return model
