"""The page's Video tab with Wan video-to-video, in headless Chromium against the real server
with a tiny Wan 2.1 folder beside a tiny SD model: the init video picker shows for a Wan
text-to-video model and hides for a VACE one; a picked MP4 goes out as txt2vid's `init_video`,
decoded frame by frame at the chosen size, with the denoising strength; removed, neither goes
out; the answer's strength shows under the video; pictures fewer than the frames asked for
bring the server's 422 in one line; a Cosmos model shows the picker without the strength and
sends its video whole to continue, a SANA-Video model hides it. Screenshots go to tmp_path
and, with AVX_SCREENSHOTS=DIR, there too."""

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
SMALL = {"Video width": 48, "Video height": 32, "Frames": 5, "Frames per second": 8,
         "Video steps": 2, "Video seed": 3}
INIT = {"init_video", "denoising_strength"}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The base URL of the real server (uvicorn in a thread) on a tiny SD and a tiny Wan 2.1
    (never loaded here: what these tests send is decided before the queue)."""
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


def _video_tab(page: Any, url: str) -> None:
    page.goto(url)
    page_ready(page)
    page.get_by_role("tab", name="Video", exact=True).click()
    page.get_by_label("Video prompt", exact=True).fill("a snowy street")
    for label, value in SMALL.items():
        page.get_by_label(label, exact=True).fill(str(value))


def _stand_in_answer(target: Path) -> dict[str, Any]:
    import numpy as np

    from diffusion.pipelines.video.files import write_video

    write_video(np.zeros((1, 16, 16, 3), np.uint8), target, 8)
    video = base64.b64encode(target.read_bytes()).decode("ascii")
    return {"video": video, "format": "mp4", "seed": 1, "frames": 1, "fps": 8, "width": 16,
            "height": 16, "interrupted": False}


def test_init_video_goes_out(server: str, page: Any, tmp_path: Path) -> None:
    import numpy as np
    from PIL import Image

    from diffusion.pipelines.video.files import write_video

    page.route("**/avx/video-models", lambda route: route.fulfill(json={
        "samplers": ["diffusers"], "models": [
            {"title": "wan", "model_name": "wan", "first_frame": "none", "family": "wan"},
            {"title": "wan-vace", "model_name": "wan-vace", "first_frame": "none",
             "family": "wan-vace", "vace": True}]}))
    _video_tab(page, server)
    assert page.locator("#video_init").is_visible()
    page.get_by_label("Video model", exact=True).select_option("wan-vace")
    assert page.locator("#video_init").is_hidden()
    page.get_by_label("Video model", exact=True).select_option("wan")
    frames = np.stack([np.full((24, 40, 3), c, np.uint8) for c in COLOURS])  # resized to 48x32
    page.locator("#init_video_file").set_input_files(
        str(write_video(frames, tmp_path / "street.mp4", 8)))
    page.wait_for_function("document.getElementById('init_video_info').textContent"
                           ".startsWith('street.mp4')")
    page.get_by_label("Video denoising strength", exact=True).fill("0.6")
    screenshot(page, tmp_path, "webui-video-init")
    sent: list[Any] = []
    answer = _stand_in_answer(tmp_path / "video.mp4")
    page.route("**/avx/txt2vid", lambda route: (sent.append(route.request.post_data_json),
                                                route.fulfill(json={
                                                    **answer, "denoising_strength": 0.6})))
    page.get_by_role("button", name="Generate", exact=True).click()
    page.get_by_label("Generated video", exact=True).wait_for(state="visible")
    assert "denoising strength 0.6" in page.locator("#video_info").inner_text()
    (body,) = sent
    assert body["model"] == "wan" and body["frames"] == 5 and body["denoising_strength"] == 0.6
    assert len(body["init_video"]) == 5
    for frame, colour in zip(body["init_video"], COLOURS, strict=True):
        with Image.open(io.BytesIO(base64.b64decode(frame))) as picture:
            assert picture.size == (48, 32)
            seen = picture.convert("RGB").getpixel((24, 16))
            assert max(abs(a - b) for a, b in zip(seen, colour, strict=True)) < 12, (seen, colour)
    # removed: neither field goes out
    page.get_by_role("button", name="Remove init video", exact=True).click()
    page.get_by_role("button", name="Generate", exact=True).click()
    page.get_by_label("Generated video", exact=True).wait_for(state="visible")
    page.get_by_role("button", name="Generate", exact=True).wait_for(state="visible")
    assert len(sent) == 2 and not INIT & set(sent[1])
    assert page.locator("#error").is_hidden() and not page.errors, page.errors


def test_too_few_pictures_show_the_servers_line(server: str, page: Any,
                                                tmp_path: Path) -> None:
    from PIL import Image

    _video_tab(page, server)
    pictures = []
    for i, colour in enumerate(COLOURS[:3]):
        pictures.append(tmp_path / f"frame_{i}.png")
        Image.new("RGB", (48, 32), colour).save(pictures[-1])
    page.locator("#init_video_file").set_input_files([str(p) for p in pictures])
    page.wait_for_function("document.getElementById('init_video_info').textContent"
                           ".startsWith('3 pictures')")
    page.get_by_role("button", name="Generate", exact=True).click()
    error = page.locator("#error")
    page.wait_for_function("document.getElementById('error_text').textContent"
                           ".includes('422')")
    assert "init_video has 3 frames, fewer than frames=5" in error.inner_text()
    assert "Traceback" not in error.inner_text() and not page.errors, page.errors


def test_cosmos_continues_its_init_video(server: str, page: Any, tmp_path: Path) -> None:
    from PIL import Image

    page.route("**/avx/video-models", lambda route: route.fulfill(json={
        "samplers": ["diffusers"], "models": [
            {"title": "cosmos2", "model_name": "cosmos2", "first_frame": "optional",
             "family": "cosmos-predict2", "samplers": ["diffusers"]},
            {"title": "sana", "model_name": "sana", "first_frame": "optional",
             "family": "sana-video", "samplers": ["diffusers"]},
            {"title": "helios", "model_name": "helios", "first_frame": "optional",
             "family": "helios", "samplers": ["diffusers"]},
            {"title": "motif", "model_name": "motif", "first_frame": "optional",
             "family": "motif-video", "samplers": ["diffusers"]}]}))
    _video_tab(page, server)
    assert page.locator("#video_init").is_visible()
    assert page.get_by_label("Video denoising strength", exact=True).is_hidden()
    for model, shown in (("sana", False), ("motif", False), ("helios", True)):
        page.get_by_label("Video model", exact=True).select_option(model)
        assert page.locator("#video_init").is_visible() == shown, model
    assert page.get_by_label("Video denoising strength", exact=True).is_hidden()  # Helios'
    page.get_by_label("Video model", exact=True).select_option("cosmos2")
    pictures = []
    for i, colour in enumerate(COLOURS[:3]):  # fewer than the 5 frames made: continued
        pictures.append(tmp_path / f"frame_{i}.png")
        Image.new("RGB", (48, 32), colour).save(pictures[-1])
    page.locator("#init_video_file").set_input_files([str(p) for p in pictures])
    page.wait_for_function("document.getElementById('init_video_info').textContent"
                           ".startsWith('3 pictures')")
    sent: list[Any] = []
    answer = _stand_in_answer(tmp_path / "video.mp4")
    page.route("**/avx/txt2vid", lambda route: (sent.append(route.request.post_data_json),
                                                route.fulfill(json=answer)))
    page.get_by_role("button", name="Generate", exact=True).click()
    page.get_by_label("Generated video", exact=True).wait_for(state="visible")
    (body,) = sent
    assert body["model"] == "cosmos2" and len(body["init_video"]) == 3
    assert "denoising_strength" not in body
    assert page.locator("#error").is_hidden() and not page.errors, page.errors
