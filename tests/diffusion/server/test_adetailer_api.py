"""ADetailer's API on our server through the real `webuiapi` client: a unit's detections (a
tiny random YOLOv8 in the models folder's adetailer, as ultralytics saves it) inpainted on a
tiny SD 1.5, changing only the pixels inside its dilated, blurred mask; a segmentation model's
unit (a tiny random YOLOv8-seg) only inside its detection's own mask; no detection leaves the
picture as it was; the list form without the leading booleans; the infotext fields; a missing
model refused naming the folder."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
pytest.importorskip("diffusers", reason="tiny test models are built with diffusers")
webuiapi = pytest.importorskip("webuiapi", reason="the WebUI's client (extra: test)")

import requests  # noqa: E402
from PIL import Image  # noqa: E402
from sd_tiny import write_pipeline  # noqa: E402
from server_support import Background, CachedLoader, live_server, wait_for  # noqa: E402
from yolo_tiny import write_tiny_yolo  # noqa: E402

import gpucore  # noqa: E402
from diffusion.detection import detect, load_yolo  # noqa: E402
from diffusion.detection.masks import (  # noqa: E402
    box_masks,
    filter_boxes,
    prepare_masks,
    segment_masks,
)
from diffusion.pipelines.mask_blur import blur_mask  # noqa: E402
from diffusion.server import create_app  # noqa: E402

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)

SETTINGS = dict(prompt="a red circle", steps=1, width=64, height=64, seed=3, cfg_scale=5,
                sampler_name="Euler a")
UNIT = dict(ad_model="face_tiny.pt", ad_confidence=0.05, ad_mask_max_ratio=0.2,
            ad_mask_k_largest=1, ad_dilate_erode=4, ad_mask_blur=2, ad_denoising_strength=1.0,
            ad_prompt="a green square", ad_inpaint_only_masked=True,
            ad_inpaint_only_masked_padding=8)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("adetailer-server")
    model = write_pipeline(root / "models" / "tiny-sd")
    (root / "models" / "adetailer").mkdir()
    write_tiny_yolo(root / "models" / "adetailer" / "face_tiny.pt")
    write_tiny_yolo(root / "models" / "adetailer" / "person_tiny-seg.pt", seed=14, segment=True)
    app = create_app(model=model, models_dir=root / "models", outputs=root / "outputs",
                     loader=CachedLoader())
    with live_server(app) as url:
        where = urlparse(url)
        yield url, webuiapi.WebUIApi(host=where.hostname, port=where.port), root


@pytest.fixture(scope="module")
def plain(server: Any) -> Any:
    return server[1].txt2img(alwayson_scripts={}, **SETTINGS)


def _expected_region(root: Any, picture: np.ndarray) -> np.ndarray:
    """Where the unit may repaint: its one box (our detector, equal to ultralytics' in
    test_yolo), dilated, blurred as the inpaint pass blurs it."""
    found = detect(load_yolo(root / "models" / "adetailer" / "face_tiny.pt"), picture,
                   confidence=UNIT["ad_confidence"])
    keep = filter_boxes(found.boxes, found.scores, (64, 64), max_ratio=0.2, k=1)
    assert len(keep) == 1
    (mask,) = prepare_masks(box_masks(found.boxes[keep], (64, 64)), dilate_erode_by=4)
    blurred = np.asarray(blur_mask(Image.fromarray(mask), 2, 2))
    assert 0.05 < (blurred > 0).mean() < 0.8  # a part of the picture, not all of it
    return blurred > 0


def test_unit_repaints_only_its_detection(server: Any, plain: Any) -> None:
    url, api, root = server
    assert "adetailer" in api.get_scripts()["txt2img"]
    assert requests.get(f"{url}/adetailer/v1/ad_model").json() == {
        "ad_model": ["face_tiny.pt", "person_tiny-seg.pt"]}
    detailed = api.txt2img(adetailer=[webuiapi.ADetailer(**UNIT)], alwayson_scripts={},
                           save_images=True, **SETTINGS)
    before, after = np.asarray(plain.image, np.int16), np.asarray(detailed.image, np.int16)
    changed = np.abs(after - before).max(axis=2) > 0
    region = _expected_region(root, np.asarray(plain.image))
    assert changed.any() and not (changed & ~region).any()
    assert np.abs(after - before)[region].mean() > 5  # the inpaint pass visibly ran
    text = detailed.info["infotexts"][0]
    for field in ("ADetailer model: face_tiny.pt", "ADetailer prompt: a green square",
                  "ADetailer confidence: 0.05", "ADetailer mask max ratio: 0.2",
                  "ADetailer mask only top k largest: 1", "ADetailer dilate erode: 4",
                  "ADetailer mask blur: 2", "ADetailer denoising strength: 1",
                  "ADetailer inpaint only masked: True", "ADetailer inpaint padding: 8"):
        assert field in text, text
    assert "ADetailer" not in plain.info["infotexts"][0]
    assert detailed.info["extra_generation_params"]["ADetailer model"] == "face_tiny.pt"
    (saved,) = (root / "outputs").rglob("*.png")  # the picture after ADetailer's pass
    assert np.array_equal(np.asarray(Image.open(saved).convert("RGB")), after)


def test_a_seg_unit_repaints_only_inside_its_mask(server: Any, plain: Any) -> None:
    """person_yolov8n-seg.pt's kind: the detection's own mask (not its box) is inpainted."""
    _, api, root = server
    unit = {**UNIT, "ad_model": "person_tiny-seg.pt", "ad_confidence": 0.85,
            "ad_mask_max_ratio": 1.0, "ad_dilate_erode": 0, "ad_mask_blur": 0}
    detailed = api.txt2img(adetailer=[webuiapi.ADetailer(**unit)], alwayson_scripts={},
                           **SETTINGS)
    before, after = np.asarray(plain.image, np.int16), np.asarray(detailed.image, np.int16)
    changed = np.abs(after - before).max(axis=2) > 0
    found = detect(load_yolo(root / "models" / "adetailer" / "person_tiny-seg.pt"),
                   np.asarray(plain.image), confidence=0.85)
    keep = filter_boxes(found.boxes, found.scores, (64, 64), k=1)
    assert len(keep) == 1 and found.masks is not None
    (mask,) = segment_masks(found.masks[keep], (64, 64))
    (box,) = box_masks(found.boxes[keep], (64, 64))
    region = mask > 0
    # the mask is not the box: a box-shaped pass would repaint these pixels too
    assert region.mean() > 0.05 and ((box > 0) & ~region).sum() >= 10
    assert changed.any() and not (changed & ~region).any()
    assert np.abs(after - before)[region].mean() > 5  # the inpaint pass visibly ran
    assert "ADetailer model: person_tiny-seg.pt" in detailed.info["infotexts"][0]


def test_no_detection_leaves_the_picture(server: Any, plain: Any) -> None:
    url, _, _ = server
    # the list form without ADetailer's leading booleans
    body = {**SETTINGS, "alwayson_scripts": {"ADetailer": {"args": [
        {**UNIT, "ad_confidence": 1.0}]}}}
    none = requests.post(f"{url}/sdapi/v1/txt2img", json=body)
    assert none.status_code == 200
    assert none.json()["images"][0] == webuiapi.raw_b64_img(plain.image)
    assert "ADetailer" not in none.json()["info"]


@pytest.mark.parametrize(("args", "message"), [
    ([True, False, {"ad_model": "hand_yolov8n.pt"}], "adetailer"),
    ([{"ad_model": "face_tiny.pt", "ad_confidence": 2}], "ad_confidence"),
    ([{"ad_model": "face_tiny.pt", "ad_restore_face": True}], "ad_restore_face"),
    ([{"ad_model": "face_tiny.pt", "ad_mask_merge_invert": "Both"}], "ad_mask_merge_invert"),
    ([{"ad_model": "face_tiny.pt", "ad_bogus": 1}], "ad_bogus"),
])
def test_bad_units_are_refused(server: Any, args: list, message: str) -> None:
    url, _, _ = server
    body = {**SETTINGS, "alwayson_scripts": {"ADetailer": {"args": args}}}
    response = requests.post(f"{url}/sdapi/v1/txt2img", json=body)
    assert response.status_code == 422
    assert message in response.text and "Traceback" not in response.text


def test_an_interrupted_pass_saves_nothing_partial(server: Any, plain: Any) -> None:
    """Interrupted while the unit inpaints (its own 150 steps, the most it may ask, after the
    picture's 1: still running when the test sees its first step, however fast), the job
    answers and saves the picture as the first pass made it, without ADetailer's fields: no
    half-inpainted picture is kept."""
    url, _, root = server
    before = set((root / "outputs").rglob("*.png"))
    unit = {**UNIT, "ad_use_steps": True, "ad_steps": 150}
    body = {**SETTINGS, "save_images": True,
            "alwayson_scripts": {"ADetailer": {"args": [True, False, unit]}}}
    running = Background(lambda: requests.post(f"{url}/sdapi/v1/txt2img", json=body))

    def inpainting() -> bool:
        state = requests.get(f"{url}/sdapi/v1/progress").json()["state"]
        return state["sampling_steps"] == 150 and state["sampling_step"] >= 1
    wait_for(inpainting, what="ADetailer's inpaint pass to run")
    requests.post(f"{url}/sdapi/v1/interrupt")
    answer = running.result().json()
    assert answer["images"][0] == webuiapi.raw_b64_img(plain.image)
    assert "ADetailer" not in answer["info"]
    (saved,) = set((root / "outputs").rglob("*.png")) - before
    assert np.array_equal(np.asarray(Image.open(saved).convert("RGB")),
                          np.asarray(plain.image))
