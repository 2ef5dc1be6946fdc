"""The geometry of face restoration, as facexlib's FaceRestoreHelper does it with OpenCV, in
numpy: the similarity transform that puts five landmarks on the FFHQ template, the affine warp
(bilinear, pixel centres on integers, a constant border), and the paste-back masks (the parsing
net's blurred face mask, or the eroded and blurred square).
"""

from __future__ import annotations

import numpy as np

__all__ = ["FFHQ_TEMPLATE", "PARSE_FACE_CLASSES", "fit_similarity", "gaussian_blur",
           "invert_affine", "parse_mask", "square_mask", "warp_affine"]

# the five landmarks (eyes, nose tip, mouth corners) of an aligned 512x512 FFHQ face
FFHQ_TEMPLATE = np.array([[192.98138, 239.94708], [318.90277, 240.1936],
                          [256.63416, 314.01935], [201.26117, 371.41043],
                          [313.08905, 371.15118]])
# ParseNet's 19 classes that count as face in the paste-back mask (facexlib's MASK_COLORMAP:
# background, neck, cloth, hair and hat are not)
PARSE_FACE_CLASSES = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 0, 0, 0], bool)


def fit_similarity(points: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The 2x3 rotation + uniform scale + translation taking `points` (N, 2) nearest to
    `target` (N, 2) in least squares. cv2: `estimateAffinePartial2D(points, target)` (which
    facexlib runs with LMEDS: on five consistent landmarks both find this transform)."""
    x, y = points[:, 0].astype(np.float64), points[:, 1].astype(np.float64)
    one, zero = np.ones_like(x), np.zeros_like(x)
    # u = a x - b y + tx, v = b x + a y + ty
    rows = np.concatenate([np.stack([x, -y, one, zero], 1), np.stack([y, x, zero, one], 1)])
    values = np.concatenate([target[:, 0], target[:, 1]]).astype(np.float64)
    (a, b, tx, ty), *_ = np.linalg.lstsq(rows, values, rcond=None)
    return np.array([[a, -b, tx], [b, a, ty]])


def invert_affine(matrix: np.ndarray) -> np.ndarray:
    """The 2x3 inverse of a 2x3 affine map. cv2: `invertAffineTransform`."""
    linear = np.linalg.inv(matrix[:, :2])
    return np.concatenate([linear, -linear @ matrix[:, 2:]], axis=1)


def warp_affine(image: np.ndarray, matrix: np.ndarray, size: tuple[int, int], *,
                border: float | tuple[float, ...] = 0.0) -> np.ndarray:
    """`image` (H, W[, C]) mapped by `matrix` (2x3, source to destination pixel coordinates)
    onto a (size[1], size[0][, C]) float32 canvas, bilinear, with `border` where the source
    has no pixel. cv2: `warpAffine(image, matrix, size, borderValue=border)` (which rounds to
    1/32 pixel and to the image's dtype)."""
    width, height = size
    inverse = invert_affine(matrix)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64)
    sx = inverse[0, 0] * xs + inverse[0, 1] * ys + inverse[0, 2]
    sy = inverse[1, 0] * xs + inverse[1, 1] * ys + inverse[1, 2]
    x0, y0 = np.floor(sx).astype(np.int64), np.floor(sy).astype(np.int64)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    source = image.astype(np.float32)
    flat = source if source.ndim == 3 else source[..., None]
    fill = np.broadcast_to(np.asarray(border, np.float32), flat.shape[2:])
    h, w = flat.shape[:2]

    def tap(yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        inside = ((yy >= 0) & (yy < h) & (xx >= 0) & (xx < w))[..., None]
        return np.where(inside, flat[np.clip(yy, 0, h - 1), np.clip(xx, 0, w - 1)], fill)

    top = tap(y0, x0) * (1 - fx) + tap(y0, x0 + 1) * fx
    bottom = tap(y0 + 1, x0) * (1 - fx) + tap(y0 + 1, x0 + 1) * fx
    out = (top * (1 - fy) + bottom * fy).astype(np.float32)
    return out if source.ndim == 3 else out[..., 0]


def gaussian_blur(image: np.ndarray, size: int, sigma: float) -> np.ndarray:
    """A 2-D (H, W) float image blurred by a size x size Gaussian, the border mirrored without
    repeating the edge. cv2: `GaussianBlur(image, (size, size), sigma)`."""
    taps = np.exp(-((np.arange(size) - size // 2) ** 2) / (2 * sigma * sigma))
    taps /= taps.sum()

    def along(n: int) -> np.ndarray:  # (n, n) matrix: the blur of one axis, reflect-101
        index = np.arange(n)[:, None] + np.arange(size)[None, :] - size // 2
        period = 2 * (n - 1)
        index = np.abs(np.mod(index, period)) if n > 1 else np.zeros_like(index)
        index = np.where(index >= n, period - index, index)
        matrix = np.zeros((n, n))
        np.add.at(matrix, (np.repeat(np.arange(n), size), index.ravel()), np.tile(taps, n))
        return matrix

    h, w = image.shape
    return along(h) @ image.astype(np.float64) @ along(w).T


def parse_mask(classes: np.ndarray) -> np.ndarray:
    """The paste-back mask (0..1, float) of an aligned face from its parsing classes (S, S):
    face parts 1, twice blurred (101 px, sigma 11), a 10-pixel frame cleared. facexlib:
    `FaceRestoreHelper.paste_faces_to_input_image` with use_parse (the WebUI's setting)."""
    mask = PARSE_FACE_CLASSES[classes].astype(np.float64) * 255.0
    mask = gaussian_blur(gaussian_blur(mask, 101, 11), 101, 11)
    mask[:10], mask[-10:], mask[:, :10], mask[:, -10:] = 0, 0, 0, 0
    return mask / 255.0


def square_mask(inverse: np.ndarray, face: int, size: tuple[int, int]) -> np.ndarray:
    """The paste-back mask without a parser: the face square warped into the picture, eroded
    by 2 px and by a twentieth of its side, then blurred. facexlib's non-parse branch."""
    warped = warp_affine(np.ones((face, face), np.float32), inverse, size)
    eroded = _erode(warped, 2)
    edge = int(eroded.sum() ** 0.5) // 20
    center = _erode(eroded, edge * 2)
    return gaussian_blur(center, edge * 2 + 1, 0.3 * ((edge * 2 + 1 - 1) * 0.5 - 1) + 0.8)


def _erode(image: np.ndarray, size: int) -> np.ndarray:
    """Minimum over a size x size window anchored at its centre (size // 2), the border not
    counting (cv2.erode's defaults); a rectangle's minimum, so rows then columns."""
    if size <= 1:
        return image
    before, after = size // 2, size - 1 - size // 2
    out = image
    for axis in (0, 1):
        padding = [(0, 0), (0, 0)]
        padding[axis] = (before, after)
        padded = np.pad(out, padding, mode="edge")
        n = out.shape[axis]
        out = np.minimum.reduce([np.take(padded, np.arange(k, k + n), axis=axis)
                                 for k in range(size)])
    return out
