"""SANA-Video on the server: /avx/video-models lists a tiny SanaVideoPipeline folder with its
family's defaults, POST /avx/txt2vid makes diffusers' SanaVideoPipeline video and POST
/avx/img2vid its SanaImageToVideoPipeline video of the picture (within the WebP's 8-bit
rounding); Wan's fields, other samplers, a step cache, an init video and sides its patches do
not divide are 422s in one line."""

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
from PIL import Image, ImageSequence
from sana_video_tiny import tiny_sana_video_pipeline
from sd_tiny import write_pipeline
from server_support import CachedLoader

import gpucore

PROMPT = "a red fox runs through the snow"
SIZE = {"frames": 5, "width": 64, "height": 32, "steps": 3, "cfg_scale": 4.0}
# of frames in [0, 1]: the WebP's rounding (half a level) and the pipeline's distance from
# diffusers' (measured 4.0e-5 in test_sana_video_pipeline)
TOL = 0.5 / 255 + 2e-4


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Any]]:
    from diffusion.server import create_app

    root = tmp_path_factory.mktemp("sana-video-server")
    models = root / "models"
    write_pipeline(models / "tiny-a")
    reference = tiny_sana_video_pipeline(root)
    shutil.copytree(root / "sana-video", models / "sana-video")
    app = create_app(model=models / "tiny-a", models_dir=models, outputs=root / "outputs",
                     loader=CachedLoader())
    with TestClient(app) as client:
        yield client, reference
    app.state.worker.stop()


def _frames(answer: dict[str, Any]) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(answer["video"]))) as video:
        return np.stack([np.asarray(f.convert("RGB"), np.float32) / 255
                         for f in ImageSequence.Iterator(video)])


def _theirs(pipe: Any, **extra: Any) -> np.ndarray:
    with torch.no_grad():
        return np.asarray(pipe(prompt=PROMPT, negative_prompt="blurry", height=32, width=64,
                               frames=5, num_inference_steps=3, guidance_scale=4.0,
                               generator=torch.Generator().manual_seed(7), output_type="np",
                               use_resolution_binning=False,
                               **extra).frames[0])


def _png(picture: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def test_sana_video_text_and_image_to_video(first_device: gpucore.Device,
                                            served: tuple[TestClient, Any]) -> None:
    import diffusers

    client, reference = served
    listed = client.get("/avx/video-models").json()
    model = next(m for m in listed["models"] if m["title"].startswith("sana-video"))
    assert model["family"] == "sana-video" and model["samplers"] == ["diffusers"]
    assert model["defaults"]["frames"] == 81 and model["first_frame"] == "optional"
    request = {"model": "sana-video", "prompt": PROMPT, "negative_prompt": "blurry",
               "seed": 7, "format": "webp", **SIZE}
    response = client.post("/avx/txt2vid", json=request)
    assert response.status_code == 200, response.text
    made = _frames(response.json())
    assert made.shape == (5, 32, 64, 3)
    assert np.abs(made - _theirs(reference)).max() <= TOL
    picture = (np.random.default_rng(3).uniform(0, 1, (32, 64, 3)) * 255).astype(np.uint8)
    response = client.post("/avx/img2vid", json={**request, "image": _png(picture)})
    assert response.status_code == 200, response.text
    i2v = diffusers.SanaImageToVideoPipeline(**reference.components)
    animated = _frames(response.json())
    assert np.abs(animated - _theirs(i2v, image=Image.fromarray(picture))).max() <= TOL
    assert np.abs(animated[1:] - made[1:]).mean() > 0.02  # the picture visibly steers it


def test_sana_video_refusals(served: tuple[TestClient, Any]) -> None:
    """What SANA-Video does not take: 422s in one line, before the queue."""
    client, _ = served
    frame = _png(np.zeros((32, 64, 3), np.uint8))
    for change, says in (({"sampler": "UniPC"}, "sampler 'UniPC' is not taken by SANA-Video"),
                         ({"cache": "fbc"}, "cache 'fbc' is not taken by SANA-Video"),
                         ({"cfg_scale_2": 2.0}, "cfg_scale_2 is not taken by SANA-Video"),
                         ({"reference_images": [frame]}, "reference_images is not taken"),
                         ({"init_video": [frame] * 5}, "init_video is for Wan's"),
                         ({"vae": "tiny-a"}, "vae is for Wan models"),
                         ({"width": 48}, "multiples of 32 for SANA-Video, got 48x32")):
        response = client.post("/avx/txt2vid", json={"model": "sana-video", "prompt": PROMPT,
                                                      **SIZE, **change})
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert says in detail and "\n" not in detail, detail
