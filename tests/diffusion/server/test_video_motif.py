"""Motif-Video on the server: /avx/video-models lists a tiny MotifVideoPipeline folder with its
family's defaults (its guider's scale), POST /avx/txt2vid makes diffusers' video; a picture,
Wan's fields and other samplers are 422s in one line."""

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
from fastapi.testclient import TestClient
from motif_tiny import tiny_motif_pipeline
from PIL import Image, ImageSequence
from sd_tiny import write_pipeline
from server_support import CachedLoader

import gpucore

PROMPT = "a cat walks on the beach at sunset"
SIZE = {"frames": 5, "width": 48, "height": 32, "steps": 2}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Any]]:
    from diffusion.server import create_app

    root = tmp_path_factory.mktemp("motif-server")
    models = root / "models"
    write_pipeline(models / "tiny-a")
    reference = tiny_motif_pipeline(root, guidance=3.0)
    shutil.copytree(root / "motif", models / "motif")
    app = create_app(model=models / "tiny-a", models_dir=models, outputs=root / "outputs",
                     loader=CachedLoader())
    with TestClient(app) as client:
        yield client, reference
    app.state.worker.stop()


def _frames(answer: dict[str, Any]) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(answer["video"]))) as video:
        return np.stack([np.asarray(f.convert("RGB"), np.float32) / 255
                         for f in ImageSequence.Iterator(video)])


def test_motif_text_to_video(first_device: gpucore.Device,
                             served: tuple[TestClient, Any]) -> None:
    client, reference = served
    listed = client.get("/avx/video-models").json()
    model = next(m for m in listed["models"] if m["title"].startswith("motif"))
    assert model["family"] == "motif-video" and model["samplers"] == ["diffusers"]
    assert model["defaults"]["frames"] == 121 and model["defaults"]["cfg_scale"] == 3.0
    assert model["first_frame"] == "none"
    response = client.post("/avx/txt2vid", json={"model": "motif", "prompt": PROMPT,
                                                  "seed": 7, "format": "webp", **SIZE})
    assert response.status_code == 200, response.text
    with torch.no_grad():
        expected = np.asarray(reference(prompt=PROMPT, height=32, width=48, num_frames=5,
                                        num_inference_steps=2, output_type="np",
                                        generator=torch.Generator().manual_seed(7)).frames[0])
    assert np.abs(_frames(response.json()) - expected).max() < 1 / 255


def test_motif_refusals(served: tuple[TestClient, Any]) -> None:
    client, _ = served
    png = io.BytesIO()
    Image.new("RGB", (48, 32), (200, 40, 40)).save(png, format="PNG")
    picture = base64.b64encode(png.getvalue()).decode()
    for path, extra, words in (
            ("/avx/txt2vid", {"sampler": "Euler"}, "sampler 'Euler'"),
            ("/avx/txt2vid", {"cfg_scale_2": 2.0}, "cfg_scale_2"),
            ("/avx/txt2vid", {"width": 40}, "multiples of 16"),
            ("/avx/img2vid", {"image": picture}, "picture")):
        response = client.post(path, json={"model": "motif", "prompt": PROMPT, **SIZE,
                                           **extra})
        assert response.status_code == 422, response.text
        assert words in response.json()["detail"], response.text
