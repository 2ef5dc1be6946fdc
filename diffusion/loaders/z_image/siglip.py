"""Z-Image Omni's SigLIP2 vision tower from its diffusers folder: `siglip/` (transformers'
Siglip2VisionModel: config.json and model.safetensors, sharded or a `.fp16` variant as any
component) and `siglip_processor/preprocessor_config.json` (Siglip2ImageProcessor: its patch
size and max_num_patches).

    weights = siglip2_weights("Z-Image-Omni")
    tower = Siglip2Vision.from_state_dict(weights, weights.config, np.float16,
                                          max_num_patches=siglip2_max_patches("Z-Image-Omni"))
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ...models.siglip2 import siglip2_state
from ..errors import WeightsError
from ..formats.diffusers_folder import read_json, weight_refs
from ..weights import ComponentWeights, resolve_dtype

__all__ = ["siglip2_max_patches", "siglip2_weights"]

_MARK = "embeddings.patch_embedding.weight"
# what models.siglip2.siglip2_patches does; a processor config asking otherwise is refused
_PROCESSOR = {"image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 2,
              "do_resize": True, "do_rescale": True, "do_normalize": True}


def _component(path: Path, name: str) -> Path:
    """`path/name` for a pipeline folder (one with model_index.json), else `path` itself."""
    return path / name if (path / "model_index.json").is_file() else path


def siglip2_weights(path: str | os.PathLike[str], *, dtype: Any = None,
                    variant: str | None = None) -> ComponentWeights:
    """The SigLIP2 vision tower's lazy weights under models.siglip2's names (transformers 4's
    `vision_model.` prefix dropped, the pooling head left out), with its config.json. `path`:
    a Z-Image Omni folder (its `siglip/`) or that component folder. WeightsError naming the
    folder when it holds no SigLIP2 vision tower."""
    folder = _component(Path(path), "siglip")
    refs, source = weight_refs(folder, "model", variant)
    config = read_json(folder / "config.json")
    config = config.get("vision_config") or config
    weights = ComponentWeights("siglip", config, refs, dtype=resolve_dtype(dtype))
    state = siglip2_state(weights)
    assert isinstance(state, ComponentWeights)  # siglip2_state keeps it lazy
    if _MARK not in state:
        raise WeightsError(f"{source}: no {_MARK!r} tensor: not a SigLIP2 vision tower "
                           "(transformers' Siglip2VisionModel)")
    features = state.shape(_MARK)[1]
    patch = config.get("patch_size", 16)
    if features != config.get("num_channels", 3) * patch * patch:
        raise WeightsError(f"{source}: {_MARK} reads {features} features, not a "
                           f"{patch}x{patch} patch's; config.json does not fit these weights")
    table = state.shape("embeddings.position_embedding.weight")[0]
    if math.isqrt(table) ** 2 != table or table != config.get("num_patches", 256):
        raise WeightsError(f"{source}: {table} position embeddings; config.json's num_patches "
                           f"({config.get('num_patches', 256)}) must match, a square")
    return state


def siglip2_max_patches(path: str | os.PathLike[str]) -> int:
    """max_num_patches of a Z-Image Omni folder's `siglip_processor/preprocessor_config.json`
    (transformers' default 256 where unset). WeightsError naming the file when it is missing
    or asks for a preparation models.siglip2.siglip2_patches does not do."""
    file = _component(Path(path), "siglip_processor") / "preprocessor_config.json"
    config = read_json(file)
    for key, value in _PROCESSOR.items():
        if config.get(key, value) != value:
            raise WeightsError(f"{file}: {key} {config[key]!r} is not supported; SigLIP2's "
                               f"processor is read with {key} {value!r}")
    return int(config.get("max_num_patches", 256))
