"""HunyuanVideo-I2V on the server: /avx/video-models lists a tiny
HunyuanVideoImageToVideoPipeline folder as taking a first frame; POST /avx/img2vid makes
diffusers' video of the picture and prompt; /avx/txt2vid without a picture is a 422 in one
line."""

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
           tiny_hunyuan_video_i2v: tuple[Path, Any]) -> Iterator[TestClient]:
    from diffusion.server import create_app

    root = tmp_path_factory.mktemp("hv1-i2v-server")
    models = root / "models"
    write_pipeline(models / "tiny-a")
    shutil.copytree(tiny_hunyuan_video_i2v[0], models / "hunyuan-video-i2v")
    app = create_app(model=models / "tiny-a", models_dir=models, outputs=root / "outputs",
                     loader=CachedLoader())
    with TestClient(app) as client:
        yield client
    app.state.worker.stop()


def test_img2vid(first_device: gpucore.Device, served: TestClient,
                 tiny_hunyuan_video_i2v: tuple[Path, Any]) -> None:
    listed = served.get("/avx/video-models").json()
    model = next(m for m in listed["models"] if m["title"].startswith("hunyuan-video-i2v"))
    assert model["family"] == "hunyuan-video" and model["first_frame"] == "required"
    picture = Image.fromarray(np.random.default_rng(1).integers(0, 256, (40, 56, 3),
                                                                dtype=np.uint8))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    image = base64.b64encode(buffer.getvalue()).decode("ascii")
    response = served.post("/avx/img2vid", json={"model": "hunyuan-video-i2v", "prompt": CIRCLE,
                                                 "image": image, "format": "webp", **SETTINGS})
    assert response.status_code == 200, response.text
    with Image.open(io.BytesIO(base64.b64decode(response.json()["video"]))) as video:
        ours = np.stack([np.asarray(f.convert("RGB"), np.float32) / 255
                         for f in ImageSequence.Iterator(video)])
    with torch.no_grad():
        expected = tiny_hunyuan_video_i2v[1](
            image=picture, prompt=CIRCLE, height=32, width=48, num_frames=5,
            num_inference_steps=2, guidance_scale=4.5,
            generator=torch.Generator().manual_seed(7), output_type="np").frames[0]
    assert ours.shape == (5, 32, 48, 3)
    assert np.abs(ours - expected).mean() < 0.01  # the WebP is lossless: 8-bit rounding
    response = served.post("/avx/txt2vid", json={"model": "hunyuan-video-i2v",
                                                 "prompt": CIRCLE, "frames": 5})
    assert response.status_code == 422
    assert "HunyuanVideo-I2V, which animates a picture: use /avx/img2vid" in \
        response.json()["detail"]
