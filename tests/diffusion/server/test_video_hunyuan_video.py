"""HunyuanVideo on the server: /avx/video-models lists a tiny HunyuanVideoPipeline folder of the
models directory as text to video with its family's defaults; POST /avx/txt2vid makes
diffusers' video of the prompt (the embedded guidance as `cfg_scale`); a picture (img2vid) and
Wan's fields are 422s in one line."""

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

CIRCLE = "a red circle on a blue background"
SETTINGS = {"frames": 5, "steps": 2, "seed": 7, "width": 48, "height": 32, "cfg_scale": 4.5}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory,
           tiny_hunyuan_video: tuple[Path, Any]) -> Iterator[TestClient]:
    from diffusion.server import create_app

    root = tmp_path_factory.mktemp("hv1-video-server")
    models = root / "models"
    write_pipeline(models / "tiny-a")
    shutil.copytree(tiny_hunyuan_video[0], models / "hunyuan-video")
    app = create_app(model=models / "tiny-a", models_dir=models, outputs=root / "outputs",
                     loader=CachedLoader())
    with TestClient(app) as client:
        yield client
    app.state.worker.stop()


def test_txt2vid(first_device: gpucore.Device, served: TestClient,
                 tiny_hunyuan_video: tuple[Path, Any]) -> None:
    listed = served.get("/avx/video-models").json()
    model = next(m for m in listed["models"] if m["title"].startswith("hunyuan-video"))
    assert model["family"] == "hunyuan-video" and model["first_frame"] == "none"
    assert model["defaults"] == {"frames": 129, "width": 1280, "height": 720, "steps": 50,
                                 "cfg_scale": 6.0, "fps": 24.0}
    assert model["samplers"] == ["diffusers"] and model["title"] not in listed["bases"]
    response = served.post("/avx/txt2vid", json={"model": "hunyuan-video", "prompt": CIRCLE,
                                                 "format": "webp", **SETTINGS})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["width"], answer["height"], answer["fps"]) == (48, 32, 24.0)
    with Image.open(io.BytesIO(base64.b64decode(answer["video"]))) as video:
        ours = np.stack([np.asarray(f.convert("RGB"), np.float32) / 255
                         for f in ImageSequence.Iterator(video)])
    with torch.no_grad():
        expected = tiny_hunyuan_video[1](
            CIRCLE, height=32, width=48, num_frames=5, num_inference_steps=2,
            guidance_scale=4.5, generator=torch.Generator().manual_seed(7),
            output_type="np").frames[0]
    assert ours.shape == (5, 32, 48, 3)
    assert np.abs(ours - expected).mean() < 0.01  # the WebP is lossless: 8-bit rounding


@pytest.mark.parametrize(("route", "change", "says"), [
    ("img2vid", {}, "HunyuanVideo text-to-video: use /avx/txt2vid, without a picture"),
    ("txt2vid", {"sampler": "UniPC"}, "sampler 'UniPC' is for Wan models; HunyuanVideo"),
    ("txt2vid", {"cache": "teacache"}, "cache 'teacache' is for Wan models"),
    ("txt2vid", {"vae": "tiny-a"}, "vae is for Wan models"),
])
def test_refused(served: TestClient, route: str, change: dict[str, Any], says: str) -> None:
    body = {"model": "hunyuan-video", "prompt": CIRCLE, "frames": 5, **change}
    if route == "img2vid":
        buffer = io.BytesIO()
        Image.new("RGB", (48, 32)).save(buffer, format="PNG")
        body["image"] = base64.b64encode(buffer.getvalue()).decode("ascii")
    response = served.post(f"/avx/{route}", json=body)
    assert response.status_code == 422 and says in response.json()["detail"], response.text
