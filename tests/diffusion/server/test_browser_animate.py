"""The page's Video tab with a Wan 2.2 Animate model, in headless Chromium against the real
server with a tiny random Wan Animate folder beside a tiny SD model: the Animate controls show
only for a model the listing marks `animate`, and Wan's options Animate refuses (Frames, the
first frame) hide meanwhile; the character picture, the pose video (an MP4 the page decodes
whole, frame by frame), the face pictures, and in Replace mode the background video and mask
pictures go out as txt2vid's fields, with the segment length and overlap, the step cache and no
`frames`; a missing face video is refused on the page, a segment length the server refuses shows
its one line. Screenshots go to tmp_path and, with AVX_SCREENSHOTS=DIR, there too.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_support import live_server, page_ready, screenshot

pytest.importorskip("diffusers", reason="the tiny models are built with diffusers (extra: "
                    "reference)")
pytest.importorskip("av", reason="the MP4 is written with PyAV (extra: video)")

# distinct colours, one a frame, far enough apart that H.264's rounding keeps them apart
COLOURS = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 210, 40), (200, 60, 200)]
SMALL = {"Video width": 48, "Video height": 32, "Frames per second": 8, "Video steps": 2,
         "Video seed": 3}
ANIMATE_FIELDS = {"animate_image", "pose_video", "face_video", "background_video", "mask_video",
                  "segment_frames", "segment_overlap"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of the real server (uvicorn in a thread) on a tiny SD and a tiny Wan
    Animate folder (never loaded here: what these tests send is decided before the queue)."""
    pytest.importorskip("uvicorn", reason="the server extra is not installed")
    from sd_tiny import write_pipeline
    from wan_animate_pipe_tiny import tiny_wan_animate_pipeline

    from diffusion.server.api.app import create_app

    models = tmp_path_factory.mktemp("models")
    write_pipeline(models / "tiny-sd")
    tiny_wan_animate_pipeline(models)
    app = create_app(model=str(models / "tiny-sd"), models_dir=models,
                     outputs=str(tmp_path_factory.mktemp("outputs")))
    with live_server(app, start_timeout=60) as base:
        yield f"{base}/"


def _video_tab(page: Any, url: str) -> None:
    page.goto(url)
    page_ready(page)
    page.get_by_role("tab", name="Video", exact=True).click()
    page.get_by_label("Video prompt", exact=True).fill("a dancer on a stage")


def _fill(page: Any, fields: dict[str, Any]) -> None:
    for label, value in fields.items():
        page.get_by_label(label, exact=True).fill(str(value))


def _files(tmp_path: Path) -> dict[str, Any]:
    """The character picture; pose and background MP4s of COLOURS (5 frames, 48 x 32, 8 fps,
    the background's in reverse); face and mask pictures, 5 each, named so that name order is not
    the OS's string order (x_2 before x_10), each frame distinct."""
    import numpy as np
    from PIL import Image

    from diffusion.pipelines.video.files import write_video

    def pictures(stem: str, size: tuple[int, int], mode: str) -> list[Path]:
        out = []
        for i, n in enumerate((1, 2, 3, 10, 11)):
            out.append(tmp_path / f"{stem}_{n}.png")
            Image.new(mode, size, 40 * i + 30 if mode == "L" else COLOURS[i]).save(out[-1])
        return out

    character = tmp_path / "character.png"
    Image.new("RGB", (20, 28), (15, 120, 200)).save(character)
    pose = np.stack([np.full((32, 48, 3), c, np.uint8) for c in COLOURS])
    return {"character": character, "pose": write_video(pose, tmp_path / "pose.mp4", 8),
            "background": write_video(pose[::-1].copy(), tmp_path / "background.mp4", 8),
            "face": pictures("face", (16, 16), "RGB"), "mask": pictures("mask", (48, 32), "L")}


def _colours_of(frames: list[str], colours: list[tuple[int, int, int]]) -> None:
    from PIL import Image

    assert len(frames) == len(colours)
    for frame, colour in zip(frames, colours, strict=True):
        with Image.open(io.BytesIO(base64.b64decode(frame))) as picture:
            assert picture.size == (48, 32)
            seen = picture.convert("RGB").getpixel((24, 16))
            assert max(abs(a - b) for a, b in zip(seen, colour, strict=True)) < 12, (seen, colour)


def _stand_in_answer(target: Path) -> dict[str, Any]:
    import numpy as np

    from diffusion.pipelines.video.files import write_video

    write_video(np.zeros((1, 16, 16, 3), np.uint8), target, 8)
    video = base64.b64encode(target.read_bytes()).decode("ascii")
    return {"video": video, "format": "mp4", "seed": 1, "frames": 5, "fps": 8, "width": 16,
            "height": 16, "interrupted": False}


def test_animate_controls_go_out(server: str, page: Any, tmp_path: Path) -> None:
    """The listing and the answer are stood in for: the request is the test."""
    defaults = {"frames": 77, "width": 1280, "height": 720, "steps": 20, "cfg_scale": 1,
                "fps": 30}
    page.route("**/avx/video-models", lambda route: route.fulfill(json={
        "samplers": ["diffusers"], "models": [
            {"title": "wan-plain", "model_name": "wan-plain", "first_frame": "optional",
             "vace": False, "animate": False},
            {"title": "wan-animate", "model_name": "wan-animate", "first_frame": "none",
             "vace": False, "animate": True, "defaults": defaults,
             "samplers": ["diffusers"]}]}))
    _video_tab(page, server)
    shown = ("#video_animate", "#video_frames", "#video_cache", "#video_first_frame")
    assert [page.locator(s).is_visible() for s in shown] == [False, True, True, True]
    page.get_by_label("Video model", exact=True).select_option("wan-animate")
    assert [page.locator(s).is_visible() for s in shown] == [True, False, True, False]
    assert page.get_by_label("Frames per second", exact=True).input_value() == "30"
    _fill(page, {**SMALL, "Segment frames": 5, "Cache threshold": 0.3})
    page.get_by_label("Step cache", exact=True).select_option("fbc")
    files = _files(tmp_path)
    page.locator("#animate_file").set_input_files(str(files["character"]))
    page.get_by_role("img", name="Character picture").wait_for(state="visible")
    page.locator("#animate_pose_file").set_input_files(str(files["pose"]))
    page.locator("#animate_face_file").set_input_files([str(p) for p in reversed(files["face"])])
    assert page.locator("#animate_replace").is_hidden()
    page.get_by_label("Animate mode", exact=True).select_option("replace")
    page.locator("#animate_background_file").set_input_files(str(files["background"]))
    page.locator("#animate_mask_file").set_input_files([str(p) for p in files["mask"][::-1]])
    for picked in ("face", "mask"):
        page.wait_for_function(f"document.getElementById('animate_{picked}_info').textContent"
                               ".startsWith('5 pictures')")
    page.get_by_label("Segment overlap", exact=True).select_option("5")
    screenshot(page, tmp_path, "webui-video-animate")
    sent: list[Any] = []
    answer = _stand_in_answer(tmp_path / "video.mp4")
    page.route("**/avx/txt2vid", lambda route: (sent.append(route.request.post_data_json),
                                                route.fulfill(json=answer)))
    page.get_by_role("button", name="Generate", exact=True).click()
    page.get_by_label("Generated video", exact=True).wait_for(state="visible")
    (body,) = sent
    assert body["model"] == "wan-animate" and "frames" not in body and body["cache"] == "fbc:0.3"
    assert "image" not in body and (body["width"], body["height"], body["fps"]) == (48, 32, 8)
    assert body["segment_frames"] == 5 and body["segment_overlap"] == 5
    assert base64.b64decode(body["animate_image"]) == files["character"].read_bytes()
    _colours_of(body["pose_video"], COLOURS)
    _colours_of(body["background_video"], COLOURS[::-1])
    for field, picked in (("face_video", files["face"]), ("mask_video", files["mask"])):
        assert [base64.b64decode(f) for f in body[field]] == [p.read_bytes() for p in picked]
    # Animate mode: no background or mask; a model without Animate: none of its fields
    page.get_by_label("Animate mode", exact=True).select_option("animate")
    assert page.locator("#animate_replace").is_hidden()
    _fill(page, {"Segment frames": ""})
    with page.expect_request("**/avx/txt2vid") as animated:
        page.get_by_role("button", name="Generate", exact=True).click()
    page.get_by_role("button", name="Generate", exact=True).wait_for(state="visible")
    assert set(animated.value.post_data_json) & ANIMATE_FIELDS == {
        "animate_image", "pose_video", "face_video", "segment_overlap"}
    page.get_by_label("Video model", exact=True).select_option("wan-plain")
    assert page.locator("#video_animate").is_hidden() and page.locator("#video_frames").is_visible()
    with page.expect_request("**/avx/txt2vid") as plain:
        page.get_by_role("button", name="Generate", exact=True).click()
    page.get_by_role("button", name="Generate", exact=True).wait_for(state="visible")
    assert not ANIMATE_FIELDS & set(plain.value.post_data_json)
    assert "frames" in plain.value.post_data_json
    assert page.locator("#error").is_hidden() and not page.errors, page.errors


def test_animate_refusals_show_in_one_line(server: str, page: Any, tmp_path: Path) -> None:
    """The real listing (the tiny Animate folder): without a face video the page says so; a
    segment length that is not 1 + 4k frames is the server's 422, shown above the page."""
    _video_tab(page, server)
    assert page.locator("#video_animate").is_visible()
    _fill(page, {**SMALL, "Segment frames": 6})
    files = _files(tmp_path)
    page.locator("#animate_file").set_input_files(str(files["character"]))
    page.locator("#animate_pose_file").set_input_files(str(files["pose"]))
    page.get_by_role("button", name="Generate", exact=True).click()
    error = page.locator("#error")
    error.wait_for(state="visible")
    assert "Wan 2.2 Animate needs a face video" in error.inner_text()
    page.locator("#animate_face_file").set_input_files([str(p) for p in files["face"]])
    page.wait_for_function("document.getElementById('animate_face_info').textContent"
                           ".startsWith('5 pictures')")
    page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_function("document.getElementById('error_text').textContent.includes('422')")
    assert "the segment length must be 1 + 4k frames" in error.inner_text()
    line = page.locator("#error_text").inner_text()
    assert "\n" not in line.strip() and "Traceback" not in line
    assert page.get_by_role("button", name="Generate", exact=True).is_visible()
    assert not page.errors, page.errors
