"""`normal_bae`: surface normals by Bae et al.'s estimator (scannet.pt in the annotator
folder's `normal_bae/`), as the ControlNet extension's `annotator/normalbae` makes them: the
picture in 0..1, normalized with ImageNet's mean and std, through the network; the unit
normals (x, y, z) mapped from -1..1 to 0..255 as the map's red, green and blue, clipped and
truncated to uint8. A picture whose sides are not multiples of 32 (the network's stride) is run
with its last row and column repeated up to one and the map cut back (the extension pads to
64 first)."""

from __future__ import annotations

import math

import numpy as np

from gpucore import Device
from gpustd import asarray

from ..models.annotators.normal_bae import NormalBae
from .annotators import annotator_model, picture_tensor

__all__ = ["normal_bae", "normal_map"]

_MEAN = np.array([0.485, 0.456, 0.406], np.float32).reshape(1, 3, 1, 1)
_STD = np.array([0.229, 0.224, 0.225], np.float32).reshape(1, 3, 1, 1)


def normal_map(image: np.ndarray, *, device: Device | None = None) -> np.ndarray:
    """The normals of a uint8 HxWx3 picture as colours: float32 HxWx3 in 0..255, before
    rounding."""
    model = annotator_model("normal_bae", "normal_bae", "scannet.pt",
                            NormalBae.from_state_dict, device)
    height, width = image.shape[:2]
    rows, cols = (32 * math.ceil(side / 32) for side in (height, width))
    padded = np.pad(image, [(0, rows - height), (0, cols - width), (0, 0)], mode="edge")
    pixels = (picture_tensor(padded, model.device) - asarray(_MEAN, device=model.device)) * \
        asarray(1 / _STD, device=model.device)
    normals = model(pixels).numpy()[0, :, :height, :width].transpose(1, 2, 0)
    return np.clip((normals + 1) * np.float32(0.5), 0, 1) * np.float32(255)


def normal_bae(image: np.ndarray, *, device: Device | None = None) -> np.ndarray:
    """The extension's normal_bae map: uint8 HxWx3."""
    return np.clip(normal_map(image, device=device), 0, 255).astype(np.uint8)
