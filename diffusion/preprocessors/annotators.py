"""What the model-based preprocessors share: their networks, built once from the annotator
file (diffusion.loaders.control.annotator_file finds and reads it), and the way the extension
hands them a picture and takes their map back."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray

from ..loaders.control.annotator_file import find_annotator, read_annotator
from ..loaders.errors import WeightsError
from ..models.resample import bilinear_matrix, resample

__all__ = ["annotator_model", "at_size", "picture_tensor", "to_uint8"]

_models: dict[tuple[str, int], Any] = {}


def annotator_model(module: str, subfolder: str, filename: str,
                    build: Callable[..., Any], device: Device | None, *,
                    read: Callable[[Path], Any] = read_annotator) -> Any:
    """The network of `module` from its annotator file, read by `read` (the safe PyTorch
    reader; an .onnx file's: its graph) and built by `build(state, device=...)`
    on `device` (None: the default one, opened once the file is found) and kept (the last
    three files used: openpose_full's three networks, or a user switching between two
    preprocessors, reload none)."""
    path = find_annotator(module, subfolder, filename)
    device = device or default_device()
    key = (str(path.resolve()), id(device))
    model = _models.pop(key, None)
    if model is None:
        state = read(path)
        try:
            model = build(state, device=device)
        except ValueError as exc:
            raise WeightsError(f"{path}: {exc}") from None
        while len(_models) >= 3:
            _models.pop(next(iter(_models)))  # the one used least recently
    _models[key] = model
    return model


def picture_tensor(image: np.ndarray, device: Device, *, scale: float = 1 / 255,
                   bgr: bool = False) -> Tensor:
    """uint8 HxWx3 -> float32 [1, 3, H, W] times `scale` (channels reversed with bgr), as the
    annotators' `rearrange(torch.from_numpy(image).float() * scale, 'h w c -> 1 c h w')`."""
    pixels = image[:, :, ::-1] if bgr else image
    planes = np.ascontiguousarray(pixels.transpose(2, 0, 1)[None], np.float32)
    return asarray(planes * np.float32(scale) if scale != 1 else planes, device=device)


def at_size(x: Tensor, height: int, width: int) -> Tensor:
    """[N, C, h, w] resized to height x width as cv2.resize(INTER_LINEAR) resizes float maps
    (as it is where the sizes are equal)."""
    h, w = x.shape[2:]
    if (h, w) == (height, width):
        return x
    return resample(x, bilinear_matrix(h, height, align_corners=False),
                    bilinear_matrix(w, width, align_corners=False))


def to_uint8(values: np.ndarray, *, invert: bool = False) -> np.ndarray:
    """A float map in 0..255 as the annotators round it (clipped, then truncated), as uint8
    HxWx3 (255 - it with invert: lineart's white lines on black)."""
    gray = np.clip(values, 0, 255).astype(np.uint8)
    return np.repeat((255 - gray if invert else gray)[:, :, None], 3, axis=2)
