"""The page's Video tab, driven in headless Chromium against the real server with a tiny Wan 2.1
folder beside a tiny SD model in its models directory: the tab shows because the server lists a
video model (GET /avx/video-models); Generate makes an MP4 the player plays for frames / fps
seconds; Interrupt stops the job (its video comes back decoded from where it stopped); a frame
count Wan cannot make shows the server's one line; a first frame goes out as img2vid's image,
the step cache chosen as its `cache`; a single file's base folder and companions go out as
the request's fields; a Wan VACE model's control video (an MP4 the page decodes frame by
frame), mask pictures, reference pictures and scale go out as txt2vid's VACE fields, a control
video too short and the server's refusal each in one line.
Screenshots go to tmp_path and, with AVX_SCREENSHOTS=DIR, there too.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_support import live_server, page_ready, screenshot

PROMPT = "a red cube on a wooden table"

pytest.importorskip("diffusers", reason="the tiny models are built with diffusers (extra: "
                    "reference)")
pytest.importorskip("av", reason="the MP4 is written with PyAV (extra: video)")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of the real server (uvicorn in a thread) on a tiny SD and a tiny Wan."""
    pytest.importorskip("uvicorn", reason="the server extra is not installed")
    from sd_tiny import write_pipeline
    from wan_tiny import tiny_wan_pipeline

    from diffusion.server.api.app import create_app

    models = tmp_path_factory.mktemp("models")
    write_pipeline(models / "tiny-sd")
    tiny_wan_pipeline(models)
    app = create_app(model=str(models / "tiny-sd"), models_dir=models,
                     outputs=str(tmp_path_factory.mktemp("outputs")))
    with live_server(app, start_timeout=60) as base:
        yield f"{base}/"


@pytest.fixture()
def page(page: Any) -> Any:
    """browser_fixtures' page, actions waiting up to 60 s (a video takes longer than a picture)."""
    page.set_default_timeout(60_000)
    return page


def _video_tab(page: Any, url: str, **fields: Any) -> None:
    """Open the page's Video tab and fill its fields (by label)."""
    page.goto(url)
    page_ready(page)
    page.get_by_role("tab", name="Video", exact=True).click()
    assert page.locator("#panel_generate").is_hidden()
    page.get_by_label("Video prompt", exact=True).fill(PROMPT)
    for label, value in fields.items():
        page.get_by_label(label, exact=True).fill(str(value))


SMALL = {"Video width": 48, "Video height": 32, "Frames": 5, "Frames per second": 8,
         "Video steps": 2, "Video seed": 3}


def test_generate_plays_frames_over_fps_seconds(server: str, page: Any, tmp_path: Path) -> None:
    _video_tab(page, server, **SMALL)
    assert page.get_by_label("Video sampler", exact=True).input_value() == "diffusers"
    page.get_by_label("Also an animated WebP", exact=True).check()
    with page.expect_request("**/avx/txt2vid") as sent:
        page.get_by_role("button", name="Generate", exact=True).click()
    body = sent.value.post_data_json
    assert body["frames"] == 5 and body["fps"] == 8 and body["model"].startswith("wan ")
    assert body["force_task_id"].startswith("task(") and "image" not in body
    assert body["cache"] is None  # the step cache is off unless chosen
    assert page.locator("#video_parts").is_hidden()  # a folder: no parts to choose
    player = page.get_by_label("Generated video", exact=True)
    player.wait_for(state="visible")
    page.wait_for_function("document.getElementById('video_player').readyState >= 1")
    duration = player.evaluate("video => video.duration")
    assert duration == pytest.approx(5 / 8, abs=0.01)
    assert player.evaluate("video => [video.videoWidth, video.videoHeight]") == [48, 32]
    download = page.locator("#video_download")
    assert download.get_attribute("download") == "video-3.mp4"
    assert download.get_attribute("aria-disabled") == "false"
    assert page.locator("#video_webp").is_visible()
    assert "Seed: 3, 5 frames at 8 fps" in page.locator("#video_info").inner_text()
    screenshot(page, tmp_path, "webui-video")
    assert page.locator("#error").is_hidden() and not page.errors, page.errors


def test_interrupt_stops_the_job(server: str, page: Any) -> None:
    """200 steps (the most a request may ask): the job is still running when the page's half-
    second progress poll first shows a step, however fast the machine."""
    _video_tab(page, server, **{**SMALL, "Frames": 1, "Video steps": 200,
                                "Video CFG Scale": 1})
    page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_function(
        "document.getElementById('video_progress_text').textContent.includes('step')")
    assert page.locator("#video_progress").evaluate("bar => bar.value") > 0
    page.get_by_role("button", name="Interrupt", exact=True).click()
    page.get_by_label("Generated video", exact=True).wait_for(state="visible")
    assert "interrupted" in page.locator("#video_info").inner_text()
    assert page.get_by_role("button", name="Generate", exact=True).is_visible()
    assert page.locator("#error").is_hidden() and not page.errors, page.errors


def test_a_bad_frame_count_shows_the_servers_line(server: str, page: Any) -> None:
    """The server's 422 line above the page, the page ready for another try; then a reload
    keeps the Video tab and what was typed."""
    _video_tab(page, server, **{**SMALL, "Frames": 8})
    page.get_by_role("button", name="Generate", exact=True).click()
    error = page.locator("#error")
    error.wait_for(state="visible")
    assert "frames must be 1 + 4k" in error.inner_text() and "use 5 or 9" in error.inner_text()
    assert "Traceback" not in error.inner_text()
    assert page.get_by_role("button", name="Generate", exact=True).is_visible()
    # the tab and its settings survive a reload, as the image tabs' do
    page.reload()
    page.locator("#params[aria-busy=false]").wait_for(state="attached")
    assert page.get_by_role("tab", name="Video", exact=True).get_attribute(
        "aria-selected") == "true"
    assert page.get_by_label("Frames", exact=True).input_value() == "8"
    assert page.get_by_label("Video prompt", exact=True).input_value() == PROMPT


def test_a_first_frame_goes_out_as_img2vid(server: str, page: Any, tmp_path: Path) -> None:
    """Wan 2.1 T2V takes no picture (the picker is hidden); a model that takes one sends it to
    /avx/img2vid. The model list and the answer are stood in for: the request is the test."""
    from PIL import Image

    def models(route: Any) -> None:
        route.fulfill(json={"samplers": ["diffusers", "UniPC", "Euler"], "models": [
            {"title": "wan22", "model_name": "wan22", "first_frame": "optional"}]})
    page.route("**/avx/video-models", models)
    _video_tab(page, server, **SMALL)
    png = tmp_path / "first.png"
    Image.new("RGB", (48, 32), (200, 30, 30)).save(png)
    page.locator("#video_file").set_input_files(str(png))
    page.get_by_role("img", name="First frame").wait_for(state="visible")
    page.get_by_label("Step cache", exact=True).select_option(value="teacache-ret")
    page.get_by_label("Cache threshold", exact=True).fill("0.15")
    sent: list[Any] = []
    answer = _stand_in_answer(tmp_path / "video.mp4")
    page.route("**/avx/img2vid", lambda route: (sent.append(route.request.post_data_json),
                                                route.fulfill(json=answer)))
    page.get_by_role("button", name="Generate", exact=True).click()
    page.get_by_label("Generated video", exact=True).wait_for(state="visible")
    (body,) = sent
    with Image.open(io.BytesIO(base64.b64decode(body["image"]))) as image:
        assert image.size == (48, 32) and image.convert("RGB").getpixel((0, 0)) == (200, 30, 30)
    assert body["model"] == "wan22" and not page.errors, page.errors
    assert body["cache"] == "teacache-ret:0.15"


def test_a_single_files_parts_go_out(server: str, page: Any, tmp_path: Path) -> None:
    """A Wan transformer file (as /avx/video-models lists ComfyUI's files, stood in for): its
    base folder and the companion files chosen go out as the request's fields, a part left
    to the base folder not at all."""
    def models(route: Any) -> None:
        route.fulfill(json={"samplers": ["diffusers"], "bases": ["wan-base [0123456789]"],
                            "models": [{"title": "wan_t2v.safetensors [abcdef0123]",
                                        "model_name": "wan_t2v", "kind": "file",
                                        "first_frame": "optional"}],
                            "files": {"model_2": [], "clip_vision": [],
                                      "text_encoder": ["text_encoders/umt5.safetensors"],
                                      "vae": ["vae/wan_2.1_vae.safetensors"]}})
    page.route("**/avx/video-models", models)
    _video_tab(page, server, **SMALL)
    assert page.locator("#video_parts").is_visible()
    page.get_by_label("VAE file", exact=True).select_option("vae/wan_2.1_vae.safetensors")
    sent: list[Any] = []
    answer = _stand_in_answer(tmp_path / "video.mp4")
    page.route("**/avx/txt2vid", lambda route: (sent.append(route.request.post_data_json),
                                                route.fulfill(json=answer)))
    page.get_by_role("button", name="Generate", exact=True).click()
    page.get_by_label("Generated video", exact=True).wait_for(state="visible")
    (body,) = sent
    assert body["base"] == "wan-base [0123456789]"
    assert body["vae"] == "vae/wan_2.1_vae.safetensors" and "text_encoder" not in body
    assert not page.errors, page.errors


def _stand_in_answer(target: Path) -> dict[str, Any]:
    import numpy as np

    from diffusion.pipelines.video.files import write_video

    write_video(np.zeros((1, 16, 16, 3), np.uint8), target, 8)
    video = base64.b64encode(target.read_bytes()).decode("ascii")
    return {"video": video, "format": "mp4", "seed": 1, "frames": 1, "fps": 8, "width": 16,
            "height": 16, "interrupted": False}


def test_no_video_model_no_video_tab(server: str, page: Any) -> None:
    """A server whose models directory has no Wan folder (stood in for): the page is the image
    page it was, a saved Video tab falls back to txt2img; once the refresh button's rescan
    finds one, the tab shows."""
    page.add_init_script("localStorage.setItem('avx-gpu-webui:settings', "
                         "JSON.stringify({tab: 'video'}))")
    listed: list[dict[str, Any]] = []
    page.route("**/avx/video-models", lambda route: route.fulfill(
        json={"models": listed, "samplers": ["diffusers", "UniPC", "Euler"]}))
    page.goto(server)
    page.locator("#params[aria-busy=false]").wait_for(state="attached")
    assert page.locator("#tab_video").is_hidden() and page.locator("#panel_video").is_hidden()
    assert page.get_by_role("tab", name="txt2img", exact=True).get_attribute(
        "aria-selected") == "true"
    assert page.get_by_role("button", name="Generate", exact=True).is_visible()
    assert page.locator("#error").is_hidden()
    listed.append({"title": "wan-i2v", "model_name": "wan-i2v", "first_frame": "required"})
    page.get_by_role("button", name="Refresh model list").click()
    page.get_by_role("tab", name="Video", exact=True).click()
    assert page.get_by_label("Video model", exact=True).input_value() == "wan-i2v"
    page.get_by_role("button", name="Generate", exact=True).click()
    assert "makes videos from a first frame" in page.locator("#error").inner_text()
    assert not page.errors, page.errors


# distinct colours, one a frame, far enough apart that H.264's rounding keeps them apart
COLOURS = [(220, 40, 40), (40, 200, 60), (40, 60, 220), (230, 210, 40), (200, 60, 200)]


def _vace_files(tmp_path: Path) -> tuple[Path, list[Path], list[Path]]:
    """An MP4 of COLOURS (5 frames, 48 x 32, 8 fps), 5 mask pictures (frame i: a white column
    i * 8 pixels wide, the rest black) named so that name order is not the OS's string order
    (mask_2 before mask_10), and two reference pictures."""
    import numpy as np
    from PIL import Image

    from diffusion.pipelines.video.files import write_video

    frames = np.stack([np.full((32, 48, 3), c, np.uint8) for c in COLOURS])
    video = write_video(frames, tmp_path / "control.mp4", 8)
    masks = []
    for i, name in enumerate(("mask_1", "mask_2", "mask_3", "mask_10", "mask_11")):
        mask = np.zeros((32, 48), np.uint8)
        mask[:, : (i + 1) * 8] = 255
        masks.append(tmp_path / f"{name}.png")
        Image.fromarray(mask).save(masks[-1])
    references = [tmp_path / "subject.png", tmp_path / "background.jpg"]
    Image.new("RGB", (40, 24), (10, 20, 30)).save(references[0])
    Image.new("RGB", (24, 40), (90, 80, 70)).save(references[1])
    return video, masks, references


def test_vace_controls_go_out(server: str, page: Any, tmp_path: Path) -> None:
    """The VACE controls show only for a model the listing marks `vace` (stood in for: the
    request is the test); the control video goes out decoded frame by frame at the chosen size,
    the mask pictures in name order, the reference pictures and the scale."""
    from PIL import Image

    page.route("**/avx/video-models", lambda route: route.fulfill(json={
        "samplers": ["diffusers"], "models": [
            {"title": "wan-plain", "model_name": "wan-plain", "first_frame": "none", "vace": False},
            {"title": "wan-vace", "model_name": "wan-vace", "first_frame": "none", "vace": True}]}))
    _video_tab(page, server, **SMALL)
    assert page.locator("#video_vace").is_hidden()
    page.get_by_label("Video model", exact=True).select_option("wan-vace")
    assert page.locator("#video_vace").is_visible()
    video, masks, references = _vace_files(tmp_path)
    page.locator("#vace_video_file").set_input_files(str(video))
    page.locator("#vace_mask_file").set_input_files([str(m) for m in reversed(masks)])
    page.locator("#vace_references_file").set_input_files([str(r) for r in references])
    page.get_by_role("img", name="VACE reference picture 2").wait_for(state="visible")
    page.wait_for_function("document.getElementById('vace_mask_info').textContent"
                           ".startsWith('5 pictures')")
    page.get_by_label("Control scale", exact=True).fill("0.5")
    screenshot(page, tmp_path, "webui-video-vace")
    sent: list[Any] = []
    answer = _stand_in_answer(tmp_path / "video.mp4")
    page.route("**/avx/txt2vid", lambda route: (sent.append(route.request.post_data_json),
                                                route.fulfill(json=answer)))
    page.get_by_role("button", name="Generate", exact=True).click()
    page.get_by_label("Generated video", exact=True).wait_for(state="visible")
    (body,) = sent
    assert body["model"] == "wan-vace" and body["frames"] == 5 and body["control_scale"] == 0.5
    assert len(body["control_video"]) == 5 and len(body["control_mask"]) == 5
    assert len(body["reference_images"]) == 2
    for frame, colour in zip(body["control_video"], COLOURS, strict=True):
        with Image.open(io.BytesIO(base64.b64decode(frame))) as picture:
            assert picture.size == (48, 32)
            seen = picture.convert("RGB").getpixel((24, 16))
            assert max(abs(a - b) for a, b in zip(seen, colour, strict=True)) < 12, (seen, colour)
    for frame, path in zip(body["control_mask"], masks, strict=True):  # sent as picked
        assert base64.b64decode(frame) == path.read_bytes()
    assert [base64.b64decode(r) for r in body["reference_images"]] == [
        r.read_bytes() for r in references]
    # a model without VACE: the controls hide and none of their fields goes out
    page.get_by_label("Video model", exact=True).select_option("wan-plain")
    assert page.locator("#video_vace").is_hidden()
    with page.expect_request("**/avx/txt2vid") as plain:
        page.get_by_role("button", name="Generate", exact=True).click()
    page.get_by_role("button", name="Generate", exact=True).wait_for(state="visible")
    assert not {"control_video", "control_mask", "reference_images",
                "control_scale"} & set(plain.value.post_data_json)
    assert page.locator("#error").is_hidden() and not page.errors, page.errors


def test_vace_refusals_show_in_one_line(server: str, page: Any, tmp_path: Path) -> None:
    """A control video shorter than the frames asked for is refused on the page; the server's
    422 (here: the tiny Wan 2.1 T2V, listed as VACE by a stand-in, refuses a control video)
    shows above the page as other 422s do."""
    real = page.request.get(f"{server}avx/video-models").json()

    def models(route: Any) -> None:
        route.fulfill(json={**real, "models": [{**m, "vace": True} for m in real["models"]]})
    page.route("**/avx/video-models", models)
    _video_tab(page, server, **{**SMALL, "Frames": 9})
    video, _, _ = _vace_files(tmp_path)
    page.locator("#vace_video_file").set_input_files(str(video))
    page.get_by_role("button", name="Generate", exact=True).click()
    error = page.locator("#error")
    error.wait_for(state="visible")
    assert "control.mp4 is 0.6" in error.inner_text() and "9 frames at 8 fps need 1.13 s" in (
        error.inner_text())
    page.get_by_label("Frames", exact=True).fill("5")
    page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_function("document.getElementById('error_text').textContent"
                           ".includes('422')")
    assert "control_video needs a Wan VACE model" in error.inner_text()
    assert "Traceback" not in error.inner_text() and not page.errors, page.errors
