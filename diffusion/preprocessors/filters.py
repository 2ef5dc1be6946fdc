"""The model-free preprocessors, each on the GPU through gpustd. A picture is uint8 HxWx3
(registry.hwc3 made it so); each returns uint8 HxWx3."""

from __future__ import annotations

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor, asarray, clip, matmul, permute
from gpustd import min as gpustd_min
from gpustd.canny import canny as gpu_canny
from gpustd.image import gaussian_blur

__all__ = ["blur_gaussian", "canny", "identity", "invert", "reference", "scribble_threshold",
           "threshold", "tile_resample"]


def _to_uint8(x: Tensor) -> np.ndarray:
    return np.clip(np.rint(x.numpy()), 0, 255).astype(np.uint8)


def _upload(image: np.ndarray, device: Device | None) -> Tensor:
    return asarray(image.astype(np.float32), device=device or default_device())


def identity(image: np.ndarray, *, device: Device | None = None) -> np.ndarray:
    """The user's own map ("none")."""
    return image


def reference(image: np.ndarray, style_fidelity: float, *,
              device: Device | None = None) -> np.ndarray:
    """reference_only's picture, as it is (its style fidelity acts in the UNet)."""
    return image


def colorfix(image: np.ndarray, variation: float, sharpness: float | None = None, *,
             device: Device | None = None) -> np.ndarray:
    """tile_colorfix's picture, as it is (its variation and sharpness act on the UNet's
    noise prediction: diffusion.pipelines.colorfix)."""
    return image


def canny(image: np.ndarray, low: float, high: float, *,
          device: Device | None = None) -> np.ndarray:
    """Canny edges with the extension's low/high thresholds and L1 gradient, as its
    `cv2.Canny(img, low, high)` of the colour picture."""
    edges = gpu_canny(image, low, high, device=device)
    return np.repeat(edges[:, :, None], 3, axis=2)


def invert(image: np.ndarray, *, device: Device | None = None) -> np.ndarray:
    """255 - picture. numpy: `255 - image`."""
    return _to_uint8(255.0 - _upload(image, device))


def _darkest(image: np.ndarray, device: Device | None) -> Tensor:
    """Each pixel's smallest channel value, (H, W) float32 integers."""
    return gpustd_min(_upload(image, device), axis=2)


def _white_where_positive(x: Tensor) -> np.ndarray:
    """255 where the integer-valued x is >= 1, 0 where <= 0, as HxWx3."""
    white = clip(x, 0.0, 1.0) * 255.0
    return np.repeat(_to_uint8(white)[:, :, None], 3, axis=2)


def threshold(image: np.ndarray, level: float, *, device: Device | None = None) -> np.ndarray:
    """White where every channel is above `level`, else black. numpy:
    `(image.min(axis=2) > level) * 255`."""
    # pixel values are integers: above `level` means at least floor(level) + 1
    return _white_where_positive(_darkest(image, device) - float(np.floor(level)))


def scribble_threshold(image: np.ndarray, *, device: Device | None = None) -> np.ndarray:
    """White where the darkest channel is below 127 (strokes on paper). numpy:
    `(image.min(axis=2) < 127) * 255`."""
    return _white_where_positive(127.0 - _darkest(image, device))


def blur_gaussian(image: np.ndarray, sigma: float, *,
                  device: Device | None = None) -> np.ndarray:
    """OpenCV's `cv2.GaussianBlur(image, (0, 0), sigma)`: for uint8, a kernel of
    round(6 sigma + 1) | 1 taps and mirrored borders (BORDER_REFLECT_101)."""
    if sigma <= 0:
        raise ValueError(f"blur_gaussian: sigma (threshold_a) must be above 0, got {sigma}")
    taps = int(np.floor(sigma * 3 * 2 + 1 + 0.5)) | 1
    return gaussian_blur(image, sigma, kernel_size=taps, mode="mirror", device=device)


def _area_weights(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in): the share of each source pixel in each output pixel when
    shrinking by area (OpenCV's INTER_AREA)."""
    scale = size_in / size_out
    starts = np.arange(size_out)[:, None] * scale
    left = np.arange(size_in)[None, :]
    overlap = np.minimum(starts + scale, left + 1) - np.maximum(starts, left)
    return (np.clip(overlap, 0, None) / scale).astype(np.float32)


def tile_resample(image: np.ndarray, rate: float, *,
                  device: Device | None = None) -> np.ndarray:
    """The picture shrunk by `rate` (below 1.1: as is) with area averaging, as the
    extension's `cv2.resize(image, (int(W / rate), int(H / rate)), cv2.INTER_AREA)`."""
    if rate < 1.1:
        return image
    height, width, channels = image.shape
    out_h, out_w = max(1, int(height / rate)), max(1, int(width / rate))
    x = _upload(image, device)
    rows = asarray(_area_weights(height, out_h), device=x.device)
    cols = asarray(_area_weights(width, out_w), device=x.device)
    shrunk = matmul(rows, x.reshape(height, width * channels)).reshape(out_h, width, channels)
    across = matmul(permute(shrunk, (0, 2, 1)), cols, trans_b=True)  # (out_h, C, out_w)
    return _to_uint8(permute(across, (0, 2, 1)))
