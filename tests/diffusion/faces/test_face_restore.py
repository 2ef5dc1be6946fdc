"""Face restoration's pipeline: the geometry against OpenCV (what facexlib runs), and a whole
restore with a planted detector changing that face's region of the picture and nothing else."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion.faces.align import (
    FFHQ_TEMPLATE,
    _erode,
    fit_similarity,
    gaussian_blur,
    invert_affine,
    warp_affine,
)

cv2 = pytest.importorskip("cv2", reason="test-only reference (extra: reference)")


def _similarity(angle: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = scale * np.cos(angle), scale * np.sin(angle)
    return np.array([[c, -s, shift[0]], [s, c, shift[1]]])


def _landmarks(matrix: np.ndarray, template: np.ndarray = FFHQ_TEMPLATE) -> np.ndarray:
    return template @ matrix[:, :2].T + matrix[:, 2]


@pytest.mark.nodevice
def test_alignment_equals_opencv():
    rng = np.random.default_rng(0)
    points = _landmarks(_similarity(0.3, 0.25, (40.0, 17.0))) + rng.normal(0, 0.3, (5, 2))
    want = cv2.estimateAffinePartial2D(points, FFHQ_TEMPLATE, method=cv2.LMEDS)[0]
    np.testing.assert_allclose(fit_similarity(points, FFHQ_TEMPLATE), want, rtol=0.02, atol=0.5)
    np.testing.assert_allclose(invert_affine(want), cv2.invertAffineTransform(want), atol=1e-9)
    # the warp of a smooth picture (cv2 rounds the source position to 1/32 pixel)
    y, x = np.mgrid[0:61, 0:83]
    image = np.stack([np.sin(x / 7.0), np.cos(y / 5.0), np.sin((x + y) / 9.0)], -1) * 100 + 120
    image = image.astype(np.float32)
    got = warp_affine(image, want, (64, 64), border=(135.0, 133.0, 132.0))
    ref = cv2.warpAffine(image, want, (64, 64), borderValue=(135, 133, 132))
    assert np.abs(got - ref).max() < 1.0


@pytest.mark.nodevice
def test_masks_equal_opencv():
    rng = np.random.default_rng(1)
    mask = (rng.random((70, 90)) > 0.7).astype(np.float64) * 255
    np.testing.assert_allclose(gaussian_blur(mask, 21, 4), cv2.GaussianBlur(mask, (21, 21), 4),
                               atol=1e-6)
    for size in (2, 5, 6):
        want = cv2.erode(mask.astype(np.float32), np.ones((size, size), np.uint8))
        np.testing.assert_array_equal(_erode(mask.astype(np.float32), size), want)


class PlantedDetector:
    """Finds one face: `points` (5, 2) in the picture's pixels, wherever it is asked (the
    restorer asks on the picture scaled to a 640-pixel short side)."""

    def __init__(self, points: np.ndarray, height: int) -> None:
        self.points, self.height, self.calls = points, height, []

    def detect(self, bgr: np.ndarray, *, threshold: float = 0.8) -> np.ndarray:
        self.calls.append((bgr.shape, threshold))
        scale = bgr.shape[0] / self.height
        points = self.points * scale
        box = [*points.min(axis=0), *points.max(axis=0)]
        return np.array([[*box, 0.99, *points.ravel()]], np.float32)


def test_restore_changes_only_the_planted_face(first_device, tmp_path):
    """Real tiny networks from the WebUI's folders (GFPGAN and CodeFormer restoring 64x64
    faces, the parsing net), the detector planted: only the face's square changes."""
    from face_refs import write_face_models

    from diffusion.faces import FaceFolders, FaceRestorers
    from diffusion.faces.restore import FaceRestorer

    models = write_face_models(tmp_path / "models")
    rng = np.random.default_rng(3)
    picture = rng.integers(0, 256, (150, 203, 3)).astype(np.uint8)
    to_picture = _similarity(0.2, 60 / 512, (70.0, 35.0))  # the 512 template, in the picture
    points = _landmarks(to_picture)
    detector = PlantedDetector(points, 150)
    faces = FaceRestorers(FaceFolders.from_models_dir(models), device=first_device)
    assert [item["name"] for item in faces.available()] == ["CodeFormer", "GFPGAN"]
    # the face's square: the 64x64 crop mapped back into the picture
    corners = np.array([[0, 0], [64, 0], [0, 64], [64, 64]]) * 512 / 64
    square = _landmarks(to_picture, corners)
    y, x = np.mgrid[0:150, 0:203]
    outside = (x < square[:, 0].min() - 2) | (x > square[:, 0].max() + 2) | \
        (y < square[:, 1].min() - 2) | (y > square[:, 1].max() + 2)
    for name in ("GFPGAN", "CodeFormer"):
        restorer = faces.restorer(name, codeformer_weight=0.7)
        assert restorer.size == 64
        planted = FaceRestorer(restorer.network, detector, restorer.parser, first_device, 64)
        out = planted.restore(picture)
        assert out.shape == picture.shape and out.dtype == np.uint8
        np.testing.assert_array_equal(out[outside], picture[outside])
        inside = np.abs(out.astype(int) - picture)[~outside]
        assert (inside > 8).mean() > 0.2, name  # the face region did change
    assert detector.calls[0] == ((640, 866, 3), 0.97)


@pytest.mark.nodevice
def test_infotext_names_the_face_restorer():
    from diffusion.infotext import format_infotext, parse_infotext

    settings = {"prompt": "a face", "steps": 2, "sampler": "Euler a", "cfg_scale": 7,
                "seed": 3, "width": 64, "height": 48, "face_restoration": "CodeFormer"}
    text = format_infotext(settings)
    assert "Seed: 3, Face restoration: CodeFormer, Size: 64x48" in text  # the WebUI's order
    assert parse_infotext(text)["face_restoration"] == "CodeFormer"
    assert "Face restoration" not in format_infotext({**settings, "face_restoration": None})
