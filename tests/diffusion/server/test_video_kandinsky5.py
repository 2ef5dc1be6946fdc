"""Kandinsky 5 Video Lite on the server: /avx/video-models lists a tiny Kandinsky5T2VPipeline
folder of the models directory with its family's defaults (not as a Wan file's base), POST
/avx/txt2vid makes diffusers' video with them where the request says nothing, and Wan's
fields are 422s in one line; its image-to-video folder is listed as taking a first frame and
POST /avx/img2vid makes diffusers' Kandinsky5I2VPipeline video of the picture."""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("fastapi", reason="the server extra is not installed")
import torch
from fastapi.testclient import TestClient
from PIL import Image, ImageSequence
from sd_tiny import write_pipeline
from server_support import CachedLoader

import gpucore

RED = "a red circle on a blue square"
SIZE = {"frames": 5, "width": 32, "height": 16, "steps": 2}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_kandinsky5_video: tuple[Path, Any],
           tiny_kandinsky5_i2v: tuple[Path, Any]) -> Iterator[TestClient]:
    from diffusion.server import create_app

    root = tmp_path_factory.mktemp("k5-video-server")
    models = root / "models"
    write_pipeline(models / "tiny-a")
    shutil.copytree(tiny_kandinsky5_video[0], models / "k5-video")
    shutil.copytree(tiny_kandinsky5_i2v[0], models / "k5-i2v")
    app = create_app(model=models / "tiny-a", models_dir=models, outputs=root / "outputs",
                     loader=CachedLoader())
    with TestClient(app) as client:
        yield client
    app.state.worker.stop()


def test_txt2vid_with_the_family_defaults(first_device: gpucore.Device, served: TestClient,
                                          tiny_kandinsky5_video: tuple[Path, Any]) -> None:
    listed = served.get("/avx/video-models").json()
    model = next(m for m in listed["models"] if m["title"].startswith("k5-video"))
    assert model["family"] == "kandinsky-5-video" and model["first_frame"] == "none"
    assert model["defaults"] == {"frames": 121, "width": 768, "height": 512, "steps": 50,
                                 "cfg_scale": 5.0, "fps": 24.0}
    assert model["samplers"] == ["diffusers"] and model["title"] not in listed["bases"]
    response = served.post("/avx/txt2vid", json={"model": "k5-video", "prompt": RED,
                                                 "seed": 7, "format": "webp", **SIZE})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["fps"] == 24.0 and answer["memory"] is None
    with Image.open(io.BytesIO(base64.b64decode(answer["video"]))) as video:
        ours = np.stack([np.asarray(f.convert("RGB"), np.float32) / 255
                         for f in ImageSequence.Iterator(video)])
    with torch.no_grad():  # diffusers' defaults: CFG 5, its negative prompt
        expected = tiny_kandinsky5_video[1](
            RED, height=16, width=32, num_frames=5, num_inference_steps=2,
            generator=torch.Generator().manual_seed(7), output_type="np").frames[0]
    assert ours.shape == (5, 16, 32, 3)
    assert np.abs(ours - expected).mean() < 0.01  # the WebP is lossless: 8-bit rounding


@pytest.mark.parametrize(("change", "says"), [
    ({"cfg_scale_2": 2.0}, "cfg_scale_2 is for Wan models"),
    ({"sampler": "UniPC"}, "sampler 'UniPC' is for Wan models"),
    ({"vae": "tiny-a"}, "vae is for Wan models"),
])
def test_wan_fields_refused(served: TestClient, change: dict[str, Any], says: str) -> None:
    response = served.post("/avx/txt2vid", json={"model": "k5-video", "prompt": RED, **SIZE,
                                                 **change})
    assert response.status_code == 422 and says in response.json()["detail"], response.text


def _picture(seed: int) -> Image.Image:
    """A random picture of another size than the video's (both sides resize it)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _base64(picture: Image.Image) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def test_img2vid_image_to_video(first_device: gpucore.Device, served: TestClient,
                                tiny_kandinsky5_i2v: tuple[Path, Any]) -> None:
    """The image-to-video folder is listed as taking a first frame, with its family's defaults,
    and /avx/img2vid makes diffusers' Kandinsky5I2VPipeline video of the picture (17 frames:
    the fewest it runs)."""
    listed = served.get("/avx/video-models").json()
    model = next(m for m in listed["models"] if m["title"].startswith("k5-i2v"))
    assert model["family"] == "kandinsky-5-video" and model["first_frame"] == "required"
    assert model["defaults"]["frames"] == 121 and model["samplers"] == ["diffusers"]
    size = {**SIZE, "frames": 17, "width": 16, "steps": 1}
    response = served.post("/avx/img2vid", json={"model": "k5-i2v", "prompt": RED, "seed": 7,
                                                 "image": _base64(_picture(1)),
                                                 "format": "webp", **size})
    assert response.status_code == 200, response.text
    with Image.open(io.BytesIO(base64.b64decode(response.json()["video"]))) as video:
        ours = np.stack([np.asarray(f.convert("RGB"), np.float32) / 255
                         for f in ImageSequence.Iterator(video)])

    def expected(picture: Image.Image) -> np.ndarray:
        with torch.no_grad():  # diffusers' defaults: CFG 5, its negative prompt
            return np.asarray(tiny_kandinsky5_i2v[1](
                picture, RED, height=16, width=16, num_frames=17, num_inference_steps=1,
                generator=torch.Generator().manual_seed(7), output_type="np").frames[0])

    assert ours.shape == (17, 16, 16, 3)
    # lossless WebP, so 8-bit rounding: measured 9.4e-4 mean, 2.1e-3 max
    assert np.abs(ours - expected(_picture(1))).mean() < 0.002
    assert np.abs(ours - expected(_picture(1))).max() < 0.004
    # the picture matters, past the first frame too: another one's video is ten times as far
    # from ours (measured 0.0092 mean)
    assert np.abs(ours[1:] - expected(_picture(2))[1:]).mean() > 0.005


@pytest.mark.parametrize(("route", "model", "change", "says"), [
    ("txt2vid", "k5-i2v", {"frames": 17}, "image-to-video model, which animates a picture: "
                                          "use /avx/img2vid"),
    ("img2vid", "k5-i2v", {"frames": 13}, "needs at least 17 frames, got 13"),
    ("img2vid", "k5-video", {}, "image is for Wan models"),
])
def test_image_to_video_refusals(served: TestClient, route: str, model: str,
                                 change: dict[str, Any], says: str) -> None:
    """The image-to-video model without a picture or with fewer than 17 frames, and Video Lite
    with one, are 422s in one line before anything loads."""
    body = {"model": model, "prompt": RED, **SIZE, **change}
    if route == "img2vid":
        body["image"] = _base64(_picture(1))
    response = served.post(f"/avx/{route}", json=body)
    assert response.status_code == 422 and says in response.json()["detail"], response.text
