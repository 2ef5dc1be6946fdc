"""Face restoration as the WebUI runs it (facexlib's FaceRestoreHelper): RetinaFace finds the
faces (on the picture scaled to a 640-pixel short side) and their five landmarks, each face is
warped onto the 512x512 FFHQ template, restored by GFPGAN or CodeFormer, and pasted back through
the parsing net's soft face mask (or a blurred square without a parser).

    restorer = FaceRestorer(network=lambda face: gfpgan(face), detector=retinaface,
                            parser=parsenet)
    out = restorer.restore(rgb)      # (H, W, 3) uint8 -> (H, W, 3) uint8
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

import gpustd
from gpustd import Tensor

from .align import (
    FFHQ_TEMPLATE,
    fit_similarity,
    invert_affine,
    parse_mask,
    square_mask,
    warp_affine,
)

__all__ = ["Detector", "FaceRestorer", "blend"]

DETECTION_SIDE = 640  # the WebUI's resize for detection (the short side)
THRESHOLD = 0.97  # facexlib's get_face_landmarks_5
MIN_EYE_DISTANCE = 5.0  # the WebUI's eye_dist_threshold
CROP_BORDER = (135.0, 133.0, 132.0)  # BGR grey where a face crop leaves the picture


class Detector(Protocol):
    """What finds faces: (H, W, 3) BGR -> (N, 15) rows of box, score, 5 landmarks."""

    def detect(self, bgr: np.ndarray, *, threshold: float = ...) -> np.ndarray: ...


class Parser(Protocol):
    """What parses an aligned face: [1, 3, S, S] RGB in -1..1 -> [1, 19, S, S] class logits
    (facexlib's ParseNet classes; facexlib parses at 512, the released networks' size)."""

    def __call__(self, x: Tensor) -> Tensor: ...


@dataclass
class FaceRestorer:
    """network: [1, 3, size, size] RGB in -1..1 -> the same, restored (a gpustd Tensor in and
    out; size 512 for the released networks, the template scaled to it); detector and parser
    (None: the square mask) as in the module docstring."""

    network: Callable[[Tensor], Tensor]
    detector: Detector
    parser: Parser | None
    device: Any = None
    size: int = 512

    def landmarks(self, rgb: np.ndarray) -> list[np.ndarray]:
        """The (5, 2) landmarks of each face found in (H, W, 3) RGB, in its pixels."""
        from PIL import Image

        height, width = rgb.shape[:2]
        scale = min(height, width) / DETECTION_SIDE
        size = (int(width / scale), int(height / scale))
        small = np.asarray(Image.fromarray(np.ascontiguousarray(rgb[..., ::-1]))
                           .resize(size, Image.Resampling.LANCZOS))
        rows = self.detector.detect(small, threshold=THRESHOLD) * scale
        return [row[5:15].reshape(5, 2) for row in rows
                if np.hypot(row[5] - row[7], row[6] - row[8]) >= MIN_EYE_DISTANCE]

    def restore(self, rgb: np.ndarray, faces: list[np.ndarray] | None = None) -> np.ndarray:
        """(H, W, 3) uint8 RGB with every face restored (faces: their landmarks; None finds
        them). A picture without faces comes back unchanged."""
        bgr = np.ascontiguousarray(rgb[..., ::-1]).astype(np.float32)
        height, width = rgb.shape[:2]
        canvas = bgr.copy()
        for points in self.landmarks(rgb) if faces is None else faces:
            # 1. the face on the template; restored; back in the picture's frame
            affine = fit_similarity(points, FFHQ_TEMPLATE * (self.size / 512))
            crop = _to_uint8(warp_affine(bgr, affine, (self.size,) * 2, border=CROP_BORDER))
            restored = self._restore_face(crop)
            inverse = invert_affine(affine)
            pasted = _to_uint8(warp_affine(restored, inverse, (width, height)))
            # 2. the soft mask: face parts (parser) or a square, blended in
            if self.parser is None:
                mask = square_mask(inverse, self.size, (width, height))
            else:
                mask = warp_affine(parse_mask(self._parse(restored)), inverse, (width, height))
            mask = mask[..., None]
            canvas = mask * pasted + (1 - mask) * canvas
        return np.ascontiguousarray(canvas.astype(np.uint8)[..., ::-1])

    def _tensor(self, bgr: np.ndarray) -> Tensor:
        """(S, S, 3) BGR 0..255 -> [1, 3, S, S] RGB in -1..1."""
        rgb = bgr[..., ::-1].astype(np.float32) / 255.0
        return Tensor.from_numpy(np.ascontiguousarray((rgb * 2 - 1).transpose(2, 0, 1)[None]),
                                 device=self.device)

    def _restore_face(self, crop: np.ndarray) -> np.ndarray:
        """One aligned BGR uint8 face -> the network's, BGR uint8 (truncated, as the WebUI)."""
        out = self.network(self._tensor(crop)).numpy()[0].astype(np.float32)
        rgb = (np.clip(out, -1.0, 1.0) + 1.0) / 2.0
        return (rgb.transpose(1, 2, 0)[..., ::-1] * 255.0).astype(np.uint8)

    def _parse(self, face: np.ndarray) -> np.ndarray:
        assert self.parser is not None
        logits = self.parser(self._tensor(face))
        return gpustd.argmax(logits, axis=1).numpy()[0]


def blend(original: np.ndarray, restored: np.ndarray, visibility: float) -> np.ndarray:
    """The Extras tab's visibility: `restored` over `original` by `visibility` (0..1).
    PIL: `Image.blend(original, restored, visibility)`."""
    from PIL import Image

    if visibility >= 1.0:
        return restored
    return np.asarray(Image.blend(Image.fromarray(original), Image.fromarray(restored),
                                  visibility))


def _to_uint8(image: np.ndarray) -> np.ndarray:
    """As cv2.warpAffine of a uint8 picture returns it: rounded, clipped (kept as float32)."""
    return np.clip(np.rint(image), 0, 255).astype(np.float32)
