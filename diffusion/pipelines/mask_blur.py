"""The WebUI's "Mask blur": the inpaint mask's Gaussian blur, as OpenCV computes it for the
WebUI, without OpenCV.

The WebUI (processing.py, StableDiffusionProcessingImg2Img.init) blurs the mask with
`cv2.GaussianBlur` twice: along x with a (2 * int(2.5 * blur_x + 0.5) + 1) x 1 kernel of sigma
blur_x, then along y likewise, each pass back to 8 bits. For 8-bit pictures OpenCV runs its
bit-exact fixed-point filter (smooth.dispatch.cpp): the kernel's taps are integers in 1/256ths
that add up to exactly 256, the picture's border is mirrored without repeating its edge pixel
(BORDER_REFLECT_101), and each output is the sum of taps x pixels rounded half up. Integer
arithmetic from the same taps gives the same bytes; Pillow's GaussianBlur (three box blurs)
differs from it by up to 9 levels.

    mask = blur_mask(mask, 4, 4)    # cv2.GaussianBlur(m, (21, 1), 4), then (1, 21)
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["blur_mask", "gaussian_taps", "kernel_size"]


def kernel_size(blur: int) -> int:
    """The taps of the WebUI's kernel for a blur of `blur` pixels (its sigma): 2.5 sigma on
    each side of the centre, rounded."""
    return 2 * int(2.5 * blur + 0.5) + 1


def gaussian_taps(sigma: float, size: int) -> np.ndarray:
    """OpenCV's 8-bit Gaussian kernel of `size` (odd) taps: exp(-x^2 / 2 sigma^2) normalized
    to sum 1 (getGaussianKernelBitExact), then scaled to 256ths from the outside in, each tap
    rounded half to even with the rounding error carried to the next and the centre taking
    what is left, so that the taps add up to exactly 256 (getGaussianKernelFixedPoint_ED).
    int64 (size,)."""
    half = size // 2
    offsets = np.arange(1 - size, 0, 2, dtype=np.float64)  # twice (i - centre), as OpenCV
    values = np.exp(offsets * offsets * (-0.125 / (sigma * sigma)))
    total = 0.0
    for value in values:  # summed in OpenCV's order: the last bit can move a rounding
        total += value
    scale = 1.0 / (total * 2.0 + 1.0)
    taps = np.zeros(size, np.int64)
    carried = 0.0
    for i, value in enumerate(values):
        wanted = value * scale * 256.0 + carried
        taps[i] = taps[size - 1 - i] = round(wanted)  # Python's round: half to even, as rint
        carried = wanted - taps[i]
    taps[half] = 256 - 2 * int(taps[:half].sum())
    return taps


def _mirrored(length: int, reach: int) -> np.ndarray:
    """Indices of positions -reach .. length + reach - 1 folded into [0, length) by mirroring
    at the first and last pixel without repeating them (OpenCV's BORDER_REFLECT_101), again
    and again where the kernel reaches further than the picture is long."""
    positions = np.arange(-reach, length + reach)
    if length == 1:
        return np.zeros_like(positions)
    period = 2 * (length - 1)
    positions = np.mod(positions, period)
    return np.where(positions >= length, period - positions, positions)


def _blur_rows(values: np.ndarray, blur: int) -> np.ndarray:
    """One pass along axis 1 of (H, W) uint8 values: the taps' weighted sum of each pixel's
    neighbours, in 256ths, rounded half up to 8 bits."""
    width = values.shape[1]
    if width == 1:  # OpenCV makes a 1-pixel side's kernel 1 tap: nothing changes
        return values
    taps = gaussian_taps(float(blur), kernel_size(blur))
    reach = len(taps) // 2
    padded = values[:, _mirrored(width, reach)].astype(np.int32)
    total = int(taps[reach]) * padded[:, reach:reach + width]  # at most 255 x 256
    for offset in range(reach):  # the kernel is symmetric: one product per pair of taps
        if taps[offset]:
            total += int(taps[offset]) * (padded[:, offset:offset + width]
                                          + padded[:, 2 * reach - offset:][:, :width])
    return ((total + 128) >> 8).astype(np.uint8)


def blur_mask(mask: Any, blur_x: int, blur_y: int) -> Any:
    """An 'L' picture blurred as the WebUI blurs its inpaint mask: along x by `blur_x`, then
    along y by `blur_y` (pixels, the Gaussian's sigma; 0 or less: that pass is left out).
    The equivalent in OpenCV: cv2.GaussianBlur(m, (kernel_size(blur_x), 1), blur_x), then
    cv2.GaussianBlur(m, (1, kernel_size(blur_y)), blur_y)."""
    from PIL import Image

    if blur_x <= 0 and blur_y <= 0:
        return mask
    values = np.asarray(mask.convert("L"), np.uint8)
    if blur_x > 0:
        values = _blur_rows(values, int(blur_x))
    if blur_y > 0:
        values = np.ascontiguousarray(_blur_rows(values.T, int(blur_y)).T)
    return Image.fromarray(values)
