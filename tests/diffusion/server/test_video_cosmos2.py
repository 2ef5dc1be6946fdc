"""Cosmos Predict2 Video2World on the server: /avx/video-models lists a tiny
Cosmos2VideoToWorldPipeline folder with its family's defaults, POST /avx/img2vid makes
diffusers' video of the picture and POST /avx/txt2vid with an init_video diffusers' video of
its frames (all held); a request with neither, a video that fills the frames made, Wan's
strength and other samplers are 422s in one line."""

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
from cosmos_tiny import tiny_cosmos2_v2w_pipeline
from fastapi.testclient import TestClient
from PIL import Image, ImageSequence
from sd_tiny import write_pipeline
from server_support import CachedLoader

import gpucore

PROMPT = "a robot arm stacks red blocks"
SIZE = {"frames": 9, "width": 48, "height": 32, "steps": 2, "cfg_scale": 3.0}
# diffusers' frames pass its safety checker as 8-bit, truncated, ours the WebP's rounding:
# a level apart at most (the latents 1.7e-5 apart, test_cosmos2_video2world)
TOL = 1 / 255 + 1e-6


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Any]]:
    from diffusion.server import create_app

    root = tmp_path_factory.mktemp("cosmos2-server")
    models = root / "models"
    write_pipeline(models / "tiny-a")
    reference = tiny_cosmos2_v2w_pipeline(root)
    shutil.copytree(root / "cosmos2-v2w", models / "cosmos2-v2w")
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
        return np.asarray(reference(prompt=PROMPT, height=32, width=48, num_frames=9,
                                    num_inference_steps=2, guidance_scale=3.0,
                                    generator=torch.Generator().manual_seed(7),
                                    output_type="np", **extra).frames[0])


def _png(frame: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def test_cosmos2_picture_and_video_to_world(first_device: gpucore.Device,
                                            served: tuple[TestClient, Any]) -> None:
    client, reference = served
    listed = client.get("/avx/video-models").json()
    model = next(m for m in listed["models"] if m["title"].startswith("cosmos2-v2w"))
    assert model["family"] == "cosmos-predict2" and model["samplers"] == ["diffusers"]
    assert model["defaults"]["frames"] == 93 and model["first_frame"] == "optional"
    video = (np.random.default_rng(5).uniform(0, 1, (7, 32, 48, 3)) * 255).astype(np.uint8)
    request = {"model": "cosmos2-v2w", "prompt": PROMPT, "seed": 7, "format": "webp", **SIZE}
    response = client.post("/avx/img2vid", json={**request, "image": _png(video[0])})
    assert response.status_code == 200, response.text
    from_picture = _frames(response.json())
    expected = _theirs(reference, image=Image.fromarray(video[0]))
    assert from_picture.shape == expected.shape == (9, 32, 48, 3)
    assert np.abs(from_picture - expected).max() <= TOL
    response = client.post("/avx/txt2vid", json={**request,
                                                  "init_video": [_png(f) for f in video]})
    assert response.status_code == 200, response.text
    from_video = _frames(response.json())
    expected = _theirs(reference, video=[Image.fromarray(f) for f in video])
    assert np.abs(from_video - expected).max() <= TOL
    # the video's second latent frame (its frames 1 to 4) held: visibly not the picture's
    assert np.abs(from_video[1:5] - from_picture[1:5]).mean() > 0.02


def test_cosmos2_refusals(served: tuple[TestClient, Any]) -> None:
    """What Predict2 Video2World does not take: 422s in one line, before the queue."""
    client, _ = served
    frame = _png(np.zeros((32, 48, 3), np.uint8))
    request = {"model": "cosmos2-v2w", "prompt": PROMPT, **SIZE, "init_video": [frame] * 5}
    for change, says in (({"init_video": None}, "continues a picture or a video"),
                         ({"init_video": [frame] * 9}, "its last 9 frames fill the 9 made"),
                         ({"denoising_strength": 0.5}, "does not redraw init_video"),
                         ({"sampler": "Euler"}, "sampler 'Euler' is not taken by Cosmos "
                                                "Predict2 Video2World"),
                         ({"cache": "fbc"}, "cache 'fbc' is not taken"),
                         ({"text_encoder": "tiny-a"}, "text_encoder is for Wan models")):
        response = client.post("/avx/txt2vid", json={**request, **change})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert says in detail and "\n" not in detail, detail
    response = client.post("/avx/img2vid", json={**request, "image": frame})
    assert response.status_code == 422 and "do not go together" in response.json()["detail"]
