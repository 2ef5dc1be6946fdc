"""Cosmos Predict2.5 on the server: /avx/video-models lists a tiny Cosmos2_5_PredictBasePipeline
folder with its family's defaults, POST /avx/txt2vid makes diffusers' video (text2world) and
POST /avx/img2vid its image2world video of the picture, /avx/txt2vid with an init_video its
video2world continuation; Wan's fields, other samplers and a video that does not fit are 422s
in one line."""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("fastapi", reason="the server extra is not installed")
import torch
from cosmos_tiny import tiny_cosmos25_pipeline
from fastapi.testclient import TestClient
from PIL import Image, ImageSequence
from sd_tiny import write_pipeline
from server_support import CachedLoader

import gpucore

PROMPT = "a robot arm stacks red blocks"
SIZE = {"frames": 5, "width": 48, "height": 32, "steps": 3, "cfg_scale": 3.0}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Any]]:
    from diffusion.server import create_app

    root = tmp_path_factory.mktemp("cosmos25-server")
    models = root / "models"
    write_pipeline(models / "tiny-a")
    reference = tiny_cosmos25_pipeline(root)
    shutil.copytree(root / "cosmos25", models / "cosmos25")
    app = create_app(model=models / "tiny-a", models_dir=models, outputs=root / "outputs",
                     loader=CachedLoader())
    with TestClient(app) as client:
        yield client, reference
    app.state.worker.stop()


def _frames(answer: dict[str, Any]) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(answer["video"]))) as video:
        return np.stack([np.asarray(f.convert("RGB"), np.float32) / 255
                         for f in ImageSequence.Iterator(video)])


def _theirs(reference: Any, **extra: Any) -> np.ndarray:
    with torch.no_grad():
        return np.asarray(reference(prompt=PROMPT, height=32, width=48, num_frames=5,
                                    num_inference_steps=3, guidance_scale=3.0,
                                    generator=torch.Generator().manual_seed(7),
                                    output_type="np", **extra).frames[0])


def test_cosmos25_text_and_image_to_world(first_device: gpucore.Device,
                                          served: tuple[TestClient, Any]) -> None:
    client, reference = served
    listed = client.get("/avx/video-models").json()
    model = next(m for m in listed["models"] if m["title"].startswith("cosmos25"))
    assert model["family"] == "cosmos-predict2.5" and model["samplers"] == ["diffusers"]
    assert model["defaults"]["frames"] == 93 and model["first_frame"] == "optional"
    response = client.post("/avx/txt2vid", json={"model": "cosmos25", "prompt": PROMPT,
                                                  "seed": 7, "format": "webp", **SIZE})
    assert response.status_code == 200, response.text
    assert np.abs(_frames(response.json()) - _theirs(reference)).max() < 1 / 255
    picture = (np.random.default_rng(2).uniform(0, 1, (32, 48, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    response = client.post("/avx/img2vid", json={
        "model": "cosmos25", "prompt": PROMPT, "seed": 7, "format": "webp", **SIZE,
        "image": base64.b64encode(buffer.getvalue()).decode("ascii")})
    assert response.status_code == 200, response.text
    expected = _theirs(reference, video=[Image.fromarray(picture)],
                       num_latent_conditional_frames=1)
    assert np.abs(_frames(response.json()) - expected).max() < 1 / 255
    for change, says in (({"sampler": "UniPC"}, "sampler 'UniPC' is not taken"),
                         ({"cfg_scale_2": 2.0}, "cfg_scale_2 is not taken")):
        response = client.post("/avx/txt2vid", json={"model": "cosmos25", "prompt": PROMPT,
                                                      **SIZE, **change})
        assert response.status_code == 422 and says in response.json()["detail"], response.text


def _png(frame: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def test_cosmos25_video_to_world(first_device: gpucore.Device,
                                 served: tuple[TestClient, Any]) -> None:
    """init_video on /avx/txt2vid: a 7-frame video of another size, its last 5 frames
    resized and continued, diffusers' video2world; what does not fit is a 422 in one line."""
    client, reference = served
    video = (np.random.default_rng(5).uniform(0, 1, (7, 40, 56, 3)) * 255).astype(np.uint8)
    request = {"model": "cosmos25", "prompt": PROMPT, "seed": 7, "format": "webp", **SIZE,
               "frames": 9, "init_video": [_png(frame) for frame in video]}
    response = client.post("/avx/txt2vid", json=request)
    assert response.status_code == 200, response.text
    with torch.no_grad():
        expected = np.asarray(reference(
            prompt=PROMPT, video=[Image.fromarray(f) for f in video], height=32, width=48,
            num_frames=9, num_inference_steps=3, guidance_scale=3.0, output_type="np",
            generator=torch.Generator().manual_seed(7)).frames[0])
    ours = _frames(response.json())
    assert ours.shape == expected.shape == (9, 32, 48, 3)
    assert np.abs(ours - expected).max() < 1 / 255
    for change, says in (({"frames": 5}, "ask for 9 or more"),
                         ({"denoising_strength": 0.5}, "does not redraw init_video"),
                         ({"init_video": request["init_video"][:3]}, "init_video has 3 frames")):
        response = client.post("/avx/txt2vid", json={**request, **change})
        assert response.status_code == 422 and says in response.json()["detail"], response.text
    response = client.post("/avx/img2vid", json={**request, "image": _png(video[0])})
    assert response.status_code == 422 and "do not go together" in response.json()["detail"]
