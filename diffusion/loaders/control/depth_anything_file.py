"""Depth Anything (V2 Small and the other ViT sizes) from a transformers folder (config.json +
model.safetensors) or one `.safetensors` file under transformers' names
(`backbone.encoder.layer.0.attention.attention.query.weight`, `neck.*`, `head.*`: the files
of depth-anything/Depth-Anything-V2-Small-hf), whose config is then read from the shapes."""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device
from gpustd.nn import StateDictError

from ...models.depth_anything import DepthAnythingForDepthEstimation
from ..errors import WeightsError
from ..formats.diffusers_folder import read_json
from ..formats.torch_file import open_weights_file
from ..weights import ComponentWeights, TensorRef, resolve_dtype

__all__ = ["load_depth_anything"]


def _config(refs: dict[str, TensorRef], where: str) -> dict[str, Any]:
    """transformers' DepthAnythingConfig of a file's tensors (the released models: heads of
    64, features from every quarter of the layers)."""
    def shape(key: str) -> tuple[int, ...]:
        if key not in refs:
            raise WeightsError(f"{where}: no tensor {key!r}: not a Depth Anything model under "
                               "transformers' names (DepthAnythingForDepthEstimation)")
        return refs[key].shape

    dim = shape("backbone.embeddings.cls_token")[-1]
    patch = shape("backbone.embeddings.patch_embeddings.projection.weight")[-1]
    positions = shape("backbone.embeddings.position_embeddings")[1]
    layers = len({m[1] for k in refs if (m := re.match(r"backbone\.encoder\.layer\.(\d+)\.", k))})
    necks = len({m[1] for k in refs if (m := re.match(r"neck\.convs\.(\d+)\.", k))})
    backbone = {
        "hidden_size": dim, "num_hidden_layers": layers, "num_attention_heads": max(1, dim // 64),
        "mlp_ratio": shape("backbone.encoder.layer.0.mlp.fc1.weight")[0] / dim,
        "image_size": math.isqrt(positions - 1) * patch, "patch_size": patch,
        "out_indices": [layers * (i + 1) // necks for i in range(necks)],
    }
    return {"backbone_config": backbone, "patch_size": patch, "reassemble_hidden_size": dim,
            "neck_hidden_sizes": [shape(f"neck.reassemble_stage.layers.{i}.projection.weight")[0]
                                  for i in range(necks)],
            "fusion_hidden_size": shape("neck.convs.0.weight")[0],
            "head_hidden_size": shape("head.conv2.weight")[0]}


def load_depth_anything(path: str | os.PathLike[str], *, dtype: Any = np.float32,
                        device: Device | None = None) -> DepthAnythingForDepthEstimation:
    """The Depth Anything model at `path` (a folder or one file). transformers:
    `DepthAnythingForDepthEstimation.from_pretrained(path)`."""
    path = Path(path)
    config = None
    if path.is_dir():
        if (path / "config.json").is_file():
            config = read_json(path / "config.json")
        path = path / "model.safetensors"
    if not path.is_file():
        raise WeightsError(f"{path}: no such Depth Anything file (e.g. the model.safetensors of "
                           "Depth-Anything-V2-Small-hf)")
    file = open_weights_file(path)
    refs = {k: TensorRef(file, k, tuple(file.shape(k))) for k in file.keys()}
    config = config or _config(refs, str(path))
    try:
        model = DepthAnythingForDepthEstimation(config, dtype=dtype, device=device)
        model.load_state_dict(ComponentWeights("depth_anything", config, refs,
                                               dtype=resolve_dtype(dtype)))
    except (ValueError, StateDictError) as exc:
        raise WeightsError(f"{path}: not a Depth Anything model this program reads: "
                           f"{exc}") from None
    return model
