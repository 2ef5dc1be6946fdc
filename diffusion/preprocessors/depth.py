"""`depth_anything_v2`: a depth map by Depth Anything V2 (diffusion.models.depth_anything), made
as the ControlNet extension's `annotator/depth_anything_v2.py` makes it.

The extension's steps: the picture's channels reversed (it converts its RGB picture with
cv2.COLOR_BGR2RGB, so the network sees BGR; kept, so maps match the extension's), scaled to
[0, 1], resized with OpenCV's bicubic so that both sides are at least 518 and multiples of 14
(the aspect kept), normalized with ImageNet's mean and std; the network's depth resized back
bilinearly (torch, align_corners=False), stretched to 0..255 between its minimum and maximum
and truncated to uint8. Everything up to the last stretch runs on the GPU.

The model is a file given by path (Depth-Anything-V2-Small-hf's model.safetensors or its
folder): `set_model_path(path)`, or the environment variable DEPTH_ANYTHING_V2_MODEL.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import asarray

from ..models.resample import bilinear_matrix, cubic_matrix, resample
from .annotators import ReplayedNetwork, keep, make_room, network_cache

__all__ = ["ENV_VAR", "depth_anything_v2", "network_size", "set_model_path"]

ENV_VAR = "DEPTH_ANYTHING_V2_MODEL"
_SIZE, _MULTIPLE = 518, 14
_MEAN = np.array([0.485, 0.456, 0.406], np.float32)
_STD = np.array([0.229, 0.224, 0.225], np.float32)
_paths: dict[str, str] = {}
_models = network_cache()


def set_model_path(path: str | os.PathLike[str] | None) -> None:
    """Where `depth_anything_v2` finds its model (None: the environment variable's)."""
    if path is None:
        _paths.pop("depth_anything_v2", None)
    else:
        _paths["depth_anything_v2"] = os.fspath(path)


def network_size(height: int, width: int) -> tuple[int, int]:
    """The size the picture is resized to: the Depth Anything transform's "lower_bound" resize
    (both sides >= 518, aspect kept, each rounded to a multiple of 14, up where rounding would
    go below 518)."""
    scale = max(_SIZE / height, _SIZE / width)

    def side(x: float) -> int:
        y = int(np.round(x / _MULTIPLE) * _MULTIPLE)
        return y if y >= _SIZE else int(np.ceil(x / _MULTIPLE) * _MULTIPLE)

    return side(scale * height), side(scale * width)


def _model(device: Device, model_path: str | None) -> Any:
    path = model_path or _paths.get("depth_anything_v2") or os.environ.get(ENV_VAR)
    if not path:
        raise ValueError("depth_anything_v2 needs its model: set DEPTH_ANYTHING_V2_MODEL (or "
                         "call diffusion.preprocessors.depth.set_model_path) to "
                         "Depth-Anything-V2-Small-hf's model.safetensors or folder")
    key = (os.path.abspath(path), id(device))
    model = _models.get(key)
    if model is None:
        from ..loaders.control.depth_anything_file import load_depth_anything

        # one kept per device: a preprocessor's weights are not worth pinning more
        make_room(_models, device, 0)
        model = ReplayedNetwork(load_depth_anything(path, device=device))
    model.reclaim()
    keep(_models, key, model)
    return model


def depth_anything_v2(image: np.ndarray, *, device: Device | None = None,
                      model_path: str | None = None) -> np.ndarray:
    """The extension's depth_anything_v2 map of a uint8 HxWx3 picture: uint8 HxWx3 (gray)."""
    device = device or default_device()
    model = _model(device, model_path)
    height, width = image.shape[:2]
    rows, cols = network_size(height, width)
    pixels = asarray(np.ascontiguousarray(
        image[:, :, ::-1].transpose(2, 0, 1)[None], np.float32) / np.float32(255),
        device=device)
    pixels = resample(pixels, cubic_matrix(height, rows), cubic_matrix(width, cols))
    mean = asarray((_MEAN / _STD).reshape(1, 3, 1, 1), device=device)
    pixels = pixels * asarray((1 / _STD).reshape(1, 3, 1, 1), device=device) - mean
    depth = model(pixels)
    depth = resample(depth.reshape(1, 1, rows, cols),
                     bilinear_matrix(rows, height, align_corners=False),
                     bilinear_matrix(cols, width, align_corners=False))
    values = depth.numpy().reshape(height, width)
    low, high = float(values.min()), float(values.max())
    scaled = (values - low) / (high - low) * 255.0 if high > low else np.zeros_like(values)
    gray = scaled.astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)
