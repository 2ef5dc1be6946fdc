"""gpustd.canny: Canny edge detection as OpenCV's `cv2.Canny` computes it, on the GPU.

The kernel is shaders/image/canny.wgsl (gradient, non-maximum suppression and double
threshold, hysteresis): integer arithmetic as OpenCV's, so the edges are OpenCV's.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpucore import Buffer, Device, Kernel, default_device

__all__ = ["canny"]

_TILE = 16
_MAX_SWEEPS = 100_000  # hysteresis settles long before; a guard against a hang


def _thresholds(low: float, high: float, l2: bool) -> tuple[int, int]:
    """OpenCV's integer thresholds: swapped when low > high, squared for the L2 gradient."""
    for name, value in (("low", low), ("high", high)):
        if not math.isfinite(value):
            raise ValueError(f"canny: the {name} threshold must be a finite number, got {value}")
    if low > high:
        low, high = high, low
    if l2:
        low, high = min(32767.0, low), min(32767.0, high)
        low, high = (low * low if low > 0 else low), (high * high if high > 0 else high)
    return math.floor(low), math.floor(high)


def canny(image: Any, low: float, high: float, *, l2_gradient: bool = False,
          device: Device | None = None) -> np.ndarray:
    """Edges of `image` (uint8, HxW or HxWxC; colour images take each pixel's strongest
    channel), as a uint8 HxW array of 0 and 255. Gradient: 3x3 Sobel, |dx| + |dy| (or the
    Euclidean norm with `l2_gradient`); pixels above `high` start edges, those above `low`
    connected to them continue them. OpenCV: `cv2.Canny(image, low, high,
    L2gradient=l2_gradient)` (apertureSize 3)."""
    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim not in (2, 3) or 0 in array.shape:
        raise ValueError(f"canny takes a non-empty uint8 HxW or HxWxC image, got "
                         f"{array.dtype} {array.shape}; convert with np.clip(x, 0, 255)"
                         ".astype(np.uint8)")
    low_i, high_i = _thresholds(float(low), float(high), l2_gradient)
    height, width = array.shape[:2]
    channels = 1 if array.ndim == 2 else array.shape[2]
    device = device or default_device()
    packed = np.zeros(math.ceil(array.size / 4) * 4, np.uint8)
    packed[:array.size] = array.reshape(-1)
    src = Buffer.from_numpy(packed.view(np.uint32), device=device)
    pixels = height * width
    grad: Buffer[np.int32] = Buffer(3 * pixels, np.int32, device=device)
    state: Buffer[np.uint32] = Buffer(pixels, np.uint32, device=device)
    flag: Buffer[np.uint32] = Buffer(1, np.uint32, device=device)
    groups = (math.ceil(width / _TILE), math.ceil(height / _TILE))
    params = dict(height=height, width=width, channels=channels, low=low_i, high=high_i,
                  l2=int(l2_gradient))
    for step in (0, 1):
        Kernel.cached("image/canny", constants={"PASS": step}).dispatch(
            groups, src, grad, state, flag, **params)
    hysteresis = Kernel.cached("image/canny", constants={"PASS": 2})
    for _ in range(_MAX_SWEEPS):
        flag.write(np.zeros(1, np.uint32))
        hysteresis.dispatch(groups, src, grad, state, flag, **params)
        if flag.read()[0] == 0:
            break
    return np.where(state.read().reshape(height, width) == 2, 255, 0).astype(np.uint8)
