"""Image processing on the GPU: resize (as Pillow), gaussian_blur, sobel, conv2d.

Images are HxW (grayscale), HxWxC (``layout="HWC"``, the default) or CxHxW
(``layout="CHW"``); every channel is processed independently.

Element types — the rule for every function here:

- numpy uint8 in -> numpy uint8 out. The bytes are uploaded packed four to a 32-bit word
  (WGSL has no 8-bit storage) and unpacked in the shader; arithmetic is float32 (resize: Pillow's
  fixed point), and results are rounded half to even and clipped to 0..255. Negative filter
  responses therefore clip to 0: convert to float first when you need them.
  The result is read back, so a uint8 call waits for the GPU.
- float in (a numpy float array of any precision, or a float32 Tensor) -> float32 Tensor out,
  left on the GPU (nothing is waited for). float16 Tensors must be converted first.

``device=`` picks the GPU for numpy inputs (default: gpucore's default device); a Tensor is
processed on its own device.

Border modes (``mode=``) follow scipy.ndimage: "reflect" (default; numpy.pad's "symmetric"),
"nearest" (repeat the edge), "mirror" (numpy.pad's "reflect"), "wrap", "constant" (``cval``).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpucore import Buffer, Device

from . import _image_io as io
from ._image_resize import resize

__all__ = ["conv2d", "gaussian_blur", "resize", "sobel"]

_SOBEL_X = np.array([[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], np.float32)


def _pair(value: Any, name: str) -> tuple[Any, Any]:
    """(y, x) from a scalar or a 2-sequence."""
    if np.ndim(value) == 0:
        return value, value
    if len(value) != 2:
        raise ValueError(f"{name} must be a number or a (y, x) pair, got {value!r}")
    return value[0], value[1]


def _correlate(src: io.GpuImage, dst: io.GpuImage, weights: np.ndarray, mode: int,
               cval: float, *, gradient: bool = False) -> None:
    kh, kw = weights.shape[-2:]
    k = io.kernel("correlate", src.u8, dst.u8, GRADIENT=gradient)
    taps = Buffer.from_numpy(np.ascontiguousarray(weights, np.float32).reshape(-1),
                             device=src.device)
    io.dispatch(k, dst, src.buffer, taps, height=dst.height, width=dst.width, kh=kh, kw=kw,
                anchor_y=kh // 2, anchor_x=kw // 2, mode=mode, cval=float(cval))


def _check_cval(cval: float) -> float:
    if not np.isfinite(cval):
        raise ValueError(f"cval must be a finite number, got {cval!r}")
    return float(cval)


def conv2d(img: Any, kernel: Any, *, mode: str = "reflect", cval: float = 0.0,
           layout: str = "HWC", device: Device | None = None) -> Any:
    """Filter every channel of `img` with the 2-D `kernel` (cross-correlation, not flipped).

    out[y, x] = sum_{i, j} kernel[i, j] * img[y + i - kh // 2, x + j - kw // 2], the image
    extended past its edges by `mode` (see the module docstring). Any kernel size, odd or even.
    img: HxW, HxWxC or CxHxW (`layout`), uint8 or float (see the module docstring for the
    returned type). kernel: a 2-D array of finite numbers.

    scipy equivalent: ``scipy.ndimage.correlate(plane, kernel, mode=mode, cval=cval)`` per
    channel plane; torch's conv2d is a correlation too. For ``scipy.ndimage.convolve``
    semantics with an odd-sized kernel, pass ``kernel[::-1, ::-1]``.
    """
    weights = np.asarray(kernel)
    if weights.ndim != 2 or weights.size == 0:
        raise ValueError(f"kernel must be a non-empty 2-D array, got shape {weights.shape}")
    if weights.dtype.kind not in "fiub" or not np.isfinite(weights).all():
        raise ValueError("kernel must hold finite real numbers")
    code, cval = io.check_mode(mode), _check_cval(cval)
    src = io.as_image(img, layout, device)
    out = io.like(src)
    _correlate(src, out, weights, code, cval)
    return io.result(out)


def gaussian_kernel1d(sigma: float, size: int) -> np.ndarray:
    """Normalized Gaussian weights exp(-x^2 / (2 sigma^2)) at x = -(size//2) .. size//2."""
    x = np.arange(size) - size // 2
    if sigma == 0:
        return (x == 0).astype(np.float64)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    return w / w.sum()


def gaussian_blur(img: Any, sigma: float | tuple[float, float], *,
                  kernel_size: int | tuple[int, int] | None = None, mode: str = "reflect",
                  cval: float = 0.0, layout: str = "HWC", device: Device | None = None) -> Any:
    """Gaussian blur: a horizontal then a vertical 1-D pass over every channel.

    sigma: standard deviation in pixels, or (sigma_y, sigma_x); 0 leaves that axis alone.
    kernel_size: odd tap count (or a (y, x) pair); default 2 * ceil(3 * sigma) + 1. The
    weights are normalized to sum to 1. Borders follow `mode` (default "reflect").
    img: HxW, HxWxC or CxHxW (`layout`), uint8 or float (see the module docstring).

    scipy equivalent: ``scipy.ndimage.gaussian_filter(plane, sigma, mode=mode,
    radius=kernel_size // 2)`` per channel plane (uint8 rounded once, at the end).
    """
    sigmas = [float(s) for s in _pair(sigma, "sigma")]
    if not all(np.isfinite(s) and s >= 0 for s in sigmas):
        raise ValueError(f"sigma must be finite and >= 0, got {sigma!r}")
    if kernel_size is None:
        sizes = [2 * math.ceil(3 * s) + 1 for s in sigmas]
    else:
        sizes = list(_pair(kernel_size, "kernel_size"))
        if not all(isinstance(k, (int, np.integer)) and k > 0 and k % 2 == 1 for k in sizes):
            raise ValueError(f"kernel_size must be a positive odd int (or a pair of them), got "
                             f"{kernel_size!r}; an even size has no centre tap")
    code, cval = io.check_mode(mode), _check_cval(cval)
    src = io.as_image(img, layout, device)
    rows = gaussian_kernel1d(sigmas[1], int(sizes[1]))[None, :]
    cols = gaussian_kernel1d(sigmas[0], int(sizes[0]))[:, None]
    passes = [w for w in (rows, cols) if w.size > 1] or [rows]
    current = src
    for i, weights in enumerate(passes):
        # The intermediate stays float32: uint8 is rounded once, after the last pass.
        out = io.like(src, u8=src.u8 and i == len(passes) - 1)
        _correlate(current, out, weights, code, cval)
        current = out
    return io.result(current)


def sobel(img: Any, *, mode: str = "reflect", cval: float = 0.0, layout: str = "HWC",
          device: Device | None = None) -> Any:
    """Sobel gradient magnitude sqrt(gx^2 + gy^2) of every channel (one pass, 3x3 taps).

    gx correlates with [[-1, 0, 1], [-2, 0, 2], [-1, 0, 1]], gy with its transpose; the channels
    stay separate (convert to grayscale first for a single edge map). The magnitude reaches
    4 * sqrt(2) * 255 for uint8 input, which clips to 255 (see the module docstring): pass
    ``img.astype(np.float32)`` for unclipped values.
    img: HxW, HxWxC or CxHxW (`layout`), uint8 or float.

    scipy equivalent: ``np.hypot(ndimage.sobel(plane, axis=0), ndimage.sobel(plane, axis=1))``
    per channel plane, with the same `mode`. For mode="constant" with cval != 0 scipy differs
    at the border (its two 1-D passes pad the intermediate with cval as well); this follows
    the 2-D definition, i.e. ``ndimage.correlate`` with the 3x3 kernels.
    """
    code, cval = io.check_mode(mode), _check_cval(cval)
    src = io.as_image(img, layout, device)
    out = io.like(src)
    _correlate(src, out, np.stack([_SOBEL_X, _SOBEL_X.T]), code, cval, gradient=True)
    return io.result(out)
