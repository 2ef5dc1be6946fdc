"""`depth_midas` and `normal_midas`: MiDaS v3 DPT-Hybrid's relative depth (annotator file
`midas/dpt_hybrid-midas-501f0c75.pt`), and normals taken from it, as the ControlNet extension's
`annotator/midas` makes them.

The extension's steps: the picture (RGB, as given) scaled to -1..1 (x / 127.5 - 1) through the
network at its own size (the processor resolution's resize pads it to a multiple of 64 first;
a picture given at another size is padded here the same way, its last row and column
repeated, and the map cut back). depth_midas: the depth less its minimum, over its maximum
then, times 255, truncated to uint8. normal_midas: OpenCV's 3x3 Sobel of the raw depth along x
and y (float32, the border reflected without repeating the edge) and 2 pi as z, x and y zeroed
where the stretched depth is below the background threshold (threshold_a, 0.4), each vector
made unit length, mapped from -1..1 to 0..255 and truncated, its channels in the order z, y, x
(the extension reverses them). The network runs on the GPU, the stretch and the Sobel on the
host (one float map).
"""

from __future__ import annotations

import math

import numpy as np

from gpucore import Device
from gpustd import asarray

from ..models.annotators.midas import MidasDptHybrid
from .annotators import annotator_model

__all__ = ["NORMAL_Z", "depth_and_normals", "depth_midas", "normal_midas"]

NORMAL_Z = np.float32(2.0 * np.pi)  # the extension's `a`: the normals' z before normalizing


def _raw_depth(image: np.ndarray, device: Device | None) -> np.ndarray:
    """The network's depth of a uint8 HxWx3 picture padded to multiples of 64: float32, the
    padded size."""
    model = annotator_model("depth_midas", "midas", "dpt_hybrid-midas-501f0c75.pt",
                            MidasDptHybrid.from_state_dict, device)
    height, width = image.shape[:2]
    rows, cols = (64 * math.ceil(side / 64) for side in (height, width))
    padded = np.pad(image, [(0, rows - height), (0, cols - width), (0, 0)], mode="edge")
    planes = np.ascontiguousarray(padded.transpose(2, 0, 1)[None], np.float32)
    pixels = asarray(planes / np.float32(127.5) - np.float32(1), device=model.device)
    return model(pixels).numpy()[0]


def _stretched(depth: np.ndarray) -> np.ndarray:
    """(depth - min) / max of that, in float32 as the extension's torch does it (zeros for a
    flat map, where it divides by zero)."""
    shifted = depth - depth.min()
    top = shifted.max()
    return shifted / top if top > 0 else np.zeros_like(shifted)


def _gray(stretched: np.ndarray) -> np.ndarray:
    return (stretched * np.float32(255)).clip(0, 255).astype(np.uint8)


def _sobel(depth: np.ndarray, axis: int) -> np.ndarray:
    """cv2.Sobel(depth, cv2.CV_32F, dx, dy, ksize=3) along `axis` (1: x, 0: y), the border
    BORDER_REFLECT_101 (numpy's "reflect")."""
    p = np.pad(depth, 1, mode="reflect")
    if axis == 1:
        diff = p[:, 2:] - p[:, :-2]
        return diff[:-2] + np.float32(2) * diff[1:-1] + diff[2:]
    diff = p[2:] - p[:-2]
    return diff[:, :-2] + np.float32(2) * diff[:, 1:-1] + diff[:, 2:]


def depth_and_normals(image: np.ndarray, bg_threshold: float, *,
                      device: Device | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The extension's apply_midas(image, 2 pi, bg_threshold) at the picture's size: the uint8
    HxW depth map and the uint8 HxWx3 normal map."""
    height, width = image.shape[:2]
    depth = _raw_depth(image, device)
    stretched = _stretched(depth)
    x, y = _sobel(depth, 1), _sobel(depth, 0)
    background = stretched < bg_threshold
    x[background] = 0
    y[background] = 0
    normal = np.stack([x, y, np.full_like(x, NORMAL_Z)], axis=2)
    normal /= np.sum(normal ** 2, axis=2, keepdims=True) ** 0.5
    normal_map = (normal * np.float32(127.5) + np.float32(127.5)).clip(0, 255).astype(np.uint8)
    normal_map = np.ascontiguousarray(normal_map[:height, :width, ::-1])
    return _gray(stretched)[:height, :width], normal_map


def depth_midas(image: np.ndarray, *, device: Device | None = None) -> np.ndarray:
    """The extension's depth_midas map of a uint8 HxWx3 picture: uint8 HxWx3 (gray)."""
    gray = _gray(_stretched(_raw_depth(image, device)))
    height, width = image.shape[:2]
    return np.repeat(gray[:height, :width, None], 3, axis=2)


def normal_midas(image: np.ndarray, bg_threshold: float = 0.4, *,
                 device: Device | None = None) -> np.ndarray:
    """The extension's normal_midas map of a uint8 HxWx3 picture: uint8 HxWx3."""
    return depth_and_normals(image, bg_threshold, device=device)[1]
