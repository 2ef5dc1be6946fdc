"""HunyuanVideo 1.5 on the server: /avx/video-models lists a tiny image-to-video folder of the
models directory as taking a first frame, with its folder's defaults; POST /avx/img2vid makes
diffusers' HunyuanVideo15ImageToVideoPipeline video of the picture at its bucket's size;
txt2vid on it, a size and Wan's fields are 422s in one line."""

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

CAT = 'a cat holds a sign that says "HI"'
SETTINGS = {"frames": 5, "steps": 2, "seed": 7}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory,
           tiny_hunyuan_video15_i2v: tuple[Path, Any]) -> Iterator[TestClient]:
    from diffusion.server import create_app

    root = tmp_path_factory.mktemp("hv15-video-server")
    models = root / "models"
    write_pipeline(models / "tiny-a")
    shutil.copytree(tiny_hunyuan_video15_i2v[0], models / "hv15-i2v")
    app = create_app(model=models / "tiny-a", models_dir=models, outputs=root / "outputs",
                     loader=CachedLoader())
    with TestClient(app) as client:
        yield client
    app.state.worker.stop()


def _picture() -> Image.Image:
    """A 30 x 50 random picture: the tiny model's 24 x 40 bucket."""
    pixels = np.random.default_rng(1).integers(0, 256, (30, 50, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def _base64(picture: Image.Image) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def test_img2vid(first_device: gpucore.Device, served: TestClient,
                 tiny_hunyuan_video15_i2v: tuple[Path, Any]) -> None:
    listed = served.get("/avx/video-models").json()
    model = next(m for m in listed["models"] if m["title"].startswith("hv15-i2v"))
    assert model["family"] == "hunyuan-video-1.5" and model["first_frame"] == "required"
    # 16:9's bucket at the tiny 32-pixel target in 16-pixel patches (square), the guider's 6
    assert model["defaults"] == {"frames": 121, "width": 32, "height": 32, "steps": 50,
                                 "cfg_scale": 6.0, "fps": 24.0}
    assert model["samplers"] == ["diffusers"] and model["title"] not in listed["bases"]
    response = served.post("/avx/img2vid", json={"model": "hv15-i2v", "prompt": CAT,
                                                 "image": _base64(_picture()),
                                                 "format": "webp", **SETTINGS})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["width"], answer["height"], answer["fps"]) == (40, 24, 24.0)
    with Image.open(io.BytesIO(base64.b64decode(answer["video"]))) as video:
        ours = np.stack([np.asarray(f.convert("RGB"), np.float32) / 255
                         for f in ImageSequence.Iterator(video)])
    with torch.no_grad():
        expected = tiny_hunyuan_video15_i2v[1](
            image=_picture(), prompt=CAT, num_frames=5, num_inference_steps=2,
            generator=torch.Generator().manual_seed(7)).frames[0]
    assert ours.shape == (5, 24, 40, 3)
    assert np.abs(ours - expected).mean() < 0.01  # the WebP is lossless: 8-bit rounding


@pytest.mark.parametrize(("route", "change", "says"), [
    ("txt2vid", {}, "image-to-video, which animates a picture: use /avx/img2vid"),
    ("img2vid", {"width": 48}, "leave width and height out"),
    ("img2vid", {"sampler": "UniPC"}, "sampler 'UniPC' is for Wan models"),
    ("img2vid", {"vae": "tiny-a"}, "vae is for Wan models"),
])
def test_refused(served: TestClient, route: str, change: dict[str, Any], says: str) -> None:
    body = {"model": "hv15-i2v", "prompt": CAT, "frames": 5, **change}
    if route == "img2vid":
        body["image"] = _base64(_picture())
    response = served.post(f"/avx/{route}", json=body)
    assert response.status_code == 422 and says in response.json()["detail"], response.text
