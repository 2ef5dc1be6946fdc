"""Face restoration's pipeline: the geometry against OpenCV (what facexlib runs), and a whole
restore with a planted detector changing that face's region of the picture and nothing else."""

from __future__ import annotations

import re

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
    """Real tiny networks from the WebUI's folders (CodeFormer restoring 64x64 faces, the
    parsing net), the detector planted: only the face's square changes (GFPGAN's the same way
    through the server: tests/diffusion/server/test_face_restoration_api.py)."""
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
    for name in ("CodeFormer",):
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


def _helper(face_restore_helper, bgr, points, parser):
    """facexlib's FaceRestoreHelper as the WebUI sets it up (512 faces, upscale 1, the parsing
    net's mask), its detection and parsing planted."""
    helper = object.__new__(face_restore_helper)
    helper.__dict__.update(
        template_3points=False, upscale_factor=1, crop_ratio=(1, 1), face_size=(512, 512),
        face_template=FFHQ_TEMPLATE.copy(), save_ext="png", pad_blur=False, device="cpu",
        use_parse=parser is not None, face_parse=parser, all_landmarks_5=[points],
        det_faces=[], affine_matrices=[], inverse_affine_matrices=[], cropped_faces=[],
        restored_faces=[], pad_input_imgs=[], input_img=bgr)
    return helper


@pytest.mark.parametrize("parse", [True, False])
def test_paste_back_equals_facexlib(first_device, parse):
    """The whole paste-back against FaceRestoreHelper's (parsing mask, and the square one),
    a network inverting the face and a planted parse map: equal but for OpenCV's 1/32-pixel
    warps."""
    torch = pytest.importorskip("torch", reason="test-only reference (extra: reference)")
    import face_refs  # noqa: F401
    from facexlib.utils.face_restoration_helper import FaceRestoreHelper

    from diffusion.faces.restore import FaceRestorer
    from gpustd import Tensor

    y, x = np.mgrid[0:260, 0:300]
    picture = np.stack([np.sin(x / 23.0), np.cos(y / 17.0), np.sin((x - y) / 31.0)], -1)
    picture = (picture * 100 + 128).astype(np.uint8)
    points = _landmarks(_similarity(-0.25, 0.4, (60.0, 40.0)))
    # parse classes: a skin ellipse (1), hair above it (17), background (0)
    fy, fx = np.mgrid[0:512, 0:512]
    classes = np.where(((fx - 256) / 170) ** 2 + ((fy - 290) / 210) ** 2 < 1, 1, 0)
    classes[(fy < 140) & (np.abs(fx - 256) < 200)] = 17
    logits = np.eye(19, dtype=np.float32)[classes].transpose(2, 0, 1)[None] * 10

    class TorchParser(torch.nn.Module):
        def forward(self, face):
            return torch.from_numpy(logits), None

    bgr = np.ascontiguousarray(picture[..., ::-1])
    helper = _helper(FaceRestoreHelper, bgr, points, TorchParser() if parse else None)
    helper.align_warp_face()
    for crop in helper.cropped_faces:  # the WebUI's tensor round trip, the face inverted
        face = -(crop[..., ::-1].astype(np.float32) / 255.0 - 0.5) / 0.5
        helper.add_restored_face(((np.clip(face, -1, 1) + 1) / 2 * 255).astype(np.uint8)
                                 [..., ::-1])
    helper.get_inverse_affine(None)
    want = helper.paste_faces_to_input_image()[..., ::-1]

    parser = (lambda face: Tensor.from_numpy(logits, device=first_device)) if parse else None
    ours = FaceRestorer(lambda face: face * -1.0, PlantedDetector(points, 260), parser,
                        first_device)
    got = ours.restore(picture)
    difference = np.abs(got.astype(int) - want)
    assert difference.mean() < 0.2 and np.percentile(difference, 99.9) <= 3
    assert (np.abs(got.astype(int) - picture) > 20).mean() > 0.05  # the face is inverted


@pytest.mark.nodevice
def test_missing_files_are_named_with_their_folders(tmp_path):
    from diffusion.faces import FaceFolders, FaceModelError, FaceRestorers

    folders = FaceFolders.from_models_dir(tmp_path, codeformer=tmp_path / "cf")
    assert folders.codeformer == tmp_path / "cf" and folders.gfpgan == tmp_path / "GFPGAN"
    faces = FaceRestorers(folders)
    assert faces.available() == []
    where = re.escape(f"in {tmp_path / 'GFPGAN'}; put GFPGANv1.4.pth there")
    with pytest.raises(FaceModelError, match=where):
        faces.check("GFPGAN")
    with pytest.raises(FaceModelError, match="--codeformer-models-path"):
        faces.check("CodeFormer")
    with pytest.raises(FaceModelError, match="known: CodeFormer, GFPGAN"):
        faces.check("RestoreFormer")
    (tmp_path / "GFPGAN").mkdir()
    (tmp_path / "GFPGAN" / "GFPGANv1.3.pth").write_bytes(b"")
    assert faces.available() == [{"name": "GFPGAN", "cmd_dir": str(tmp_path / "GFPGAN")}]
    with pytest.raises(FaceModelError, match=r"detection_Resnet50_Final\.pth.*facexlib"):
        faces.check("GFPGAN")
    (tmp_path / "facexlib" / "weights").mkdir(parents=True)
    for name in ("detection_Resnet50_Final.pth", "parsing_parsenet.pth"):
        (tmp_path / "facexlib" / "weights" / name).write_bytes(b"")
    faces.check("GFPGAN")
    with pytest.raises(FaceModelError, match=r"GFPGANv1\.3\.pth: not a valid PyTorch file"):
        faces.restorer("GFPGAN")
