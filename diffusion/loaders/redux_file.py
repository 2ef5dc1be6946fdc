"""FLUX Redux's weights wherever they come from: a FluxPriorReduxPipeline diffusers folder's
components (`image_encoder/`, `image_embedder/`), BFL's `flux1-redux-dev.safetensors` (the Redux
embedder alone: `redux_up.*`, `redux_down.*`), and the SigLIP image encoder as a transformers
folder (google/siglip-so400m-patch14-384) or one file (ComfyUI's
`sigclip_vision_patch14_384.safetensors`). A file's config is read from its shapes."""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from .errors import WeightsError
from .formats.diffusers_folder import read_json, weight_refs
from .formats.torch_file import open_weights_file
from .weights import ComponentWeights, TensorRef, resolve_dtype

__all__ = ["embedder_weights", "siglip_weights"]

# SigLIP's heads are 72 wide (so400m: 1152 = 16 x 72) or 64 (base, large)
_HEAD_WIDTHS = (72, 64)


def _refs(path: Path, stem: str, variant: str | None) -> tuple[dict[str, TensorRef], Any]:
    """A component folder's refs and config.json (None without one), or one file's refs."""
    if path.is_dir():
        refs, _ = weight_refs(path, stem, variant)
        config = read_json(path / "config.json") if (path / "config.json").is_file() else None
        return refs, config
    if not path.is_file():
        raise WeightsError(f"{path}: no such file or folder")
    file = open_weights_file(path)
    return {k: TensorRef(file, k, file.shape(k)) for k in file.keys()}, None


def embedder_weights(path: str | os.PathLike[str], *, dtype: Any = None,
                     variant: str | None = None) -> ComponentWeights:
    """The Redux embedder's weights (diffusers' ReduxImageEncoder names) from a folder's
    `image_embedder/` or BFL's single file, with its config (from the shapes for a file)."""
    refs, config = _refs(Path(path), "diffusion_pytorch_model", variant)
    if "redux_up.weight" not in refs or "redux_down.weight" not in refs:
        raise WeightsError(f"{path}: no redux_up / redux_down weights: not a FLUX Redux "
                           "embedder (flux1-redux-dev.safetensors)")
    if config is None:
        config = {"redux_dim": refs["redux_up.weight"].shape[1],
                  "txt_in_features": refs["redux_down.weight"].shape[0]}
    return ComponentWeights("image_embedder", config, refs, dtype=resolve_dtype(dtype))


def siglip_weights(path: str | os.PathLike[str], *, dtype: Any = None,
                   variant: str | None = None) -> ComponentWeights:
    """SigLIP's vision weights (transformers' `vision_model.*` names; the pooling head and a
    text tower left out) from a transformers folder or one file, with its config (from the
    shapes for a file: heads 72 wide, else 64)."""
    refs, config = _refs(Path(path), "model", variant)
    if not any(k.startswith("vision_model.") for k in refs):
        # transformers 5 saves a SiglipVisionModel without `vision_model.`
        refs = {f"vision_model.{k}": r for k, r in refs.items()}
    refs = {k: r for k, r in refs.items() if k.startswith("vision_model.")
            and not k.startswith("vision_model.head.") and not k.endswith("position_ids")}
    patch = refs.get("vision_model.embeddings.patch_embedding.weight")
    if patch is None:
        raise WeightsError(f"{path}: no vision_model.embeddings.patch_embedding.weight: not a "
                           "SigLIP image encoder (sigclip_vision_patch14_384.safetensors)")
    if config is None:
        hidden, channels, size = patch.shape[0], patch.shape[1], patch.shape[2]
        positions = refs["vision_model.embeddings.position_embedding.weight"].shape[0]
        head = next((w for w in _HEAD_WIDTHS if hidden % w == 0), None)
        if head is None:
            raise WeightsError(f"{path}: SigLIP width {hidden} is not a whole number of 72- or "
                               "64-wide heads; give its transformers folder (with config.json)")
        config = {
            "hidden_size": hidden, "num_channels": channels, "patch_size": size,
            "image_size": math.isqrt(positions) * size, "num_attention_heads": hidden // head,
            "intermediate_size": refs["vision_model.encoder.layers.0.mlp.fc1.weight"].shape[0],
            "num_hidden_layers": 1 + max(int(k.split(".")[3]) for k in refs
                                         if k.startswith("vision_model.encoder.layers.")),
        }
    return ComponentWeights("image_encoder", config, refs, dtype=resolve_dtype(dtype))
