"""Face restoration through the WebUI's API (webuiapi against a live tiny server): the
face-restorers list, the Extras' GFPGAN and CodeFormer with their visibilities and weight,
txt2img's restore_faces with the face_restoration_model option, and a missing file's 422
naming its folder. The detector is planted (one face where the test puts it); the networks
are tiny random ones in the WebUI's folders, restoring 64x64 faces."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="test-only reference (extra: reference)")
pytest.importorskip("diffusers", reason="tiny test models are built with diffusers")
webuiapi = pytest.importorskip("webuiapi", reason="the WebUI's client (extra: test)")

from face_refs import write_face_models  # noqa: E402
from PIL import Image  # noqa: E402
from server_support import tiny_webui  # noqa: E402

from diffusion.faces import FaceFolders, FaceRestorers, blend  # noqa: E402
from diffusion.faces.align import FFHQ_TEMPLATE  # noqa: E402
from diffusion.models.retinaface import RetinaFace  # noqa: E402


def _face(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks of a face filling most of a width x height picture, and the mask of the
    pixels outside its 64x64 crop's square (with a 2-pixel margin)."""
    scale = 0.7 * min(width, height) / 512
    c, s = scale * np.cos(0.15), scale * np.sin(0.15)
    matrix = np.array([[c, -s, 0.15 * width], [s, c, 0.1 * height]])
    points = FFHQ_TEMPLATE @ matrix[:, :2].T + matrix[:, 2]
    corners = np.array([[0, 0], [512, 0], [0, 512], [512, 512]]) @ matrix[:, :2].T + matrix[:, 2]
    y, x = np.mgrid[0:height, 0:width]
    outside = (x < corners[:, 0].min() - 2) | (x > corners[:, 0].max() + 2) | \
        (y < corners[:, 1].min() - 2) | (y > corners[:, 1].max() + 2)
    return points, outside


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Path]]:
    root = tmp_path_factory.mktemp("faces")
    write_face_models(root / "models")
    with tiny_webui(root, steps=2) as client:
        yield client, root / "models"


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """RetinaFace.detect finds the face `where["points"]` of a picture `where["height"]` high."""
    where: dict[str, Any] = {}

    def detect(self: Any, bgr: np.ndarray, *, threshold: float = 0.8) -> np.ndarray:
        points = where["points"] * bgr.shape[0] / where["height"]
        box = [*points.min(axis=0), *points.max(axis=0)]
        return np.array([[*box, 0.99, *points.ravel()]], np.float32)

    monkeypatch.setattr(RetinaFace, "detect", detect)
    return where


def _rgb(image: Any) -> np.ndarray:
    return np.asarray(image.convert("RGB"))


def test_face_restorers_lists_the_files_found(api):
    client, models = api
    assert client.get_face_restorers() == [
        {"name": "CodeFormer", "cmd_dir": str(models / "Codeformer")},
        {"name": "GFPGAN", "cmd_dir": str(models / "GFPGAN")}]


def test_extras_restore_only_the_face(api, planted):
    client, models = api
    picture = np.random.default_rng(5).integers(0, 256, (90, 120, 3), np.uint8)
    planted["points"], outside = _face(120, 90)
    planted["height"] = 90
    local = FaceRestorers(FaceFolders.from_models_dir(models))
    restored = local.restore(picture, "GFPGAN")
    for fields, want in (({"gfpgan_visibility": 1.0}, restored),
                         ({"gfpgan_visibility": 0.6}, blend(picture, restored, 0.6)),
                         ({"codeformer_visibility": 0.6, "codeformer_weight": 0.3}, None)):
        result = client.extra_single_image(Image.fromarray(picture), **fields)
        got = _rgb(result.image)
        if want is not None:
            np.testing.assert_array_equal(got, want)
        np.testing.assert_array_equal(got[outside], picture[outside])
        assert (np.abs(got.astype(int) - picture)[~outside] > 8).mean() > 0.1
        assert "visibility: " in str(result.info)


def test_txt2img_restore_faces(api, planted):
    client, _ = api
    planted["points"], outside = _face(64, 64)
    planted["height"] = 64
    # one UNet pass a picture (1 step, cfg_scale 1: what restores the face is under test,
    # not the sampling; 64x64 steps are this module's costliest part on CI)
    fast = {"prompt": "a face", "seed": 3, "width": 64, "height": 64, "cfg_scale": 1}
    plain = client.txt2img(**fast, steps=1)
    restored = client.txt2img(**fast, steps=1, restore_faces=True,
                              override_settings={"face_restoration_model": "GFPGAN"})
    before, after = _rgb(plain.image), _rgb(restored.image)
    np.testing.assert_array_equal(after[outside], before[outside])
    assert (np.abs(after.astype(int) - before)[~outside] > 8).mean() > 0.1
    assert restored.info["restore_faces"] is True
    assert restored.info["face_restoration_model"] == "GFPGAN"
    assert "Face restoration: GFPGAN, Size: 64x64" in restored.info["infotexts"][0]
    assert plain.info["restore_faces"] is False
    # img2img takes it the same way, here with the options' model (CodeFormer)
    again = client.img2img(images=[plain.image], **fast, denoising_strength=0.6,
                           restore_faces=True)  # the client's 2 steps: one at 0.6
    assert again.info["face_restoration_model"] == "CodeFormer"
    assert "Face restoration: CodeFormer" in again.info["infotexts"][0]


def test_face_options(api):
    client, _ = api
    options = client.get_options()
    assert (options["face_restoration"], options["face_restoration_model"],
            options["code_former_weight"]) == (False, "CodeFormer", 0.5)
    client.set_options({"face_restoration_model": "GFPGAN", "code_former_weight": 0.25})
    options = client.get_options()
    assert (options["face_restoration_model"], options["code_former_weight"]) == ("GFPGAN", 0.25)
    for body in ({"face_restoration_model": "GPEN"}, {"code_former_weight": 2}):
        response = client.session.post(f"{client.baseurl}/options", json=body)
        assert response.status_code == 422 and next(iter(body)) in response.text
    client.set_options({"face_restoration_model": "CodeFormer", "code_former_weight": 0.5})


def test_a_missing_file_is_refused_naming_its_folder(api):
    client, models = api
    hidden = models / "Codeformer-away"
    (models / "Codeformer").rename(hidden)
    try:
        assert [item["name"] for item in client.get_face_restorers()] == ["GFPGAN"]
        response = client.session.post(f"{client.baseurl}/extra-single-image", json={
            "image": webuiapi.b64_img(Image.new("RGB", (32, 32))),
            "codeformer_visibility": 1.0})
        assert response.status_code == 422
        assert str(models / "Codeformer") in response.text
        response = client.session.post(f"{client.baseurl}/txt2img", json={
            "prompt": "x", "width": 64, "height": 64, "restore_faces": True})
        assert response.status_code == 422 and "codeformer-v0.1.0.pth" in response.text
    finally:
        hidden.rename(models / "Codeformer")
