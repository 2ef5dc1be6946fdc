"""Kandinsky 5 Video Lite on the server: /avx/video-models lists a tiny Kandinsky5T2VPipeline
folder of the models directory with its family's defaults (not as a Wan file's base), POST
/avx/txt2vid makes diffusers' video with them where the request says nothing, and Wan's
fields are 422s in one line."""

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
def served(tmp_path_factory: pytest.TempPathFactory, tiny_kandinsky5_video: tuple[Path, Any]
           ) -> Iterator[TestClient]:
    from diffusion.server import create_app

    root = tmp_path_factory.mktemp("k5-video-server")
    models = root / "models"
    write_pipeline(models / "tiny-a")
    shutil.copytree(tiny_kandinsky5_video[0], models / "k5-video")
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
