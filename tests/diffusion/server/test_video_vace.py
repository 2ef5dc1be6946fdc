"""Wan VACE on the server: POST /avx/txt2vid with a tiny WanVACEPipeline folder of the models
directory, its control video, mask and reference picture as base64 PNGs, answers diffusers'
WanVACEPipeline frames (an animated WebP, lossless); the listing marks the folder VACE; a
control for a model without VACE, a short control video and a mask without a video are 422s
in one line before the model loads."""

from __future__ import annotations

import base64
import io
import json
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
from sd_tiny import write_pipeline
from server_support import CachedLoader
from wan_vace_tiny import tiny_wan_vace_pipeline

import gpucore

PROMPT = "a red cube on a wooden table"
HEIGHT, WIDTH, FRAMES = 32, 48, 5
BODY = {"model": "wan-vace", "prompt": PROMPT, "negative_prompt": "blurry", "frames": FRAMES,
        "width": WIDTH, "height": HEIGHT, "steps": 2, "cfg_scale": 4.0, "seed": 3,
        "format": "webp", "fps": 8}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Any]]:
    from diffusion.server import create_app

    root = tmp_path_factory.mktemp("video-vace")
    models = root / "models"
    write_pipeline(models / "tiny-a")
    reference = tiny_wan_vace_pipeline(models)
    plain = models / "wan-plain"  # the same parts under a WanPipeline model_index.json
    shutil.copytree(models / "wan-vace", plain)
    index = json.loads((plain / "model_index.json").read_text())
    (plain / "model_index.json").write_text(json.dumps({**index, "_class_name": "WanPipeline"}))
    app = create_app(model=models / "tiny-a", models_dir=models, outputs=root / "outputs",
                     loader=CachedLoader())
    with TestClient(app) as client:
        yield client, reference
    app.state.worker.stop()


def _png(picture: Any) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def test_vace_on_the_queue(first_device: gpucore.Device, served: tuple[TestClient, Any],
                           monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers.pipelines.wan import pipeline_wan, pipeline_wan_vace

    # diffusers' VACE module calls ftfy unconditionally; WanPipeline's cleaning skips it
    monkeypatch.setattr(pipeline_wan_vace, "prompt_clean", pipeline_wan.prompt_clean)
    client, reference = served
    models = client.get("/avx/video-models").json()["models"]
    assert {m["title"].split(" ")[0]: m["vace"] for m in models} == {"wan-plain": False,
                                                                      "wan-vace": True}
    rng = np.random.default_rng(5)
    video = [Image.fromarray(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8))
             for _ in range(FRAMES)]
    mask = [Image.fromarray(np.kron(rng.choice(np.array([0, 255], np.uint8), (2, 3)),
                                    np.ones((16, 16), np.uint8))) for _ in range(FRAMES)]
    picture = Image.fromarray(rng.integers(0, 256, (40, 24, 3), dtype=np.uint8))
    response = client.post("/avx/txt2vid", json={
        **BODY, "control_video": [_png(f) for f in video], "control_mask": [_png(m) for m in mask],
        "reference_images": [_png(picture)], "control_scale": 0.8})
    assert response.status_code == 200, response.text
    with Image.open(io.BytesIO(base64.b64decode(response.json()["video"]))) as webp:
        ours = np.stack([np.asarray(f.convert("RGB"), np.float32) / 255
                         for f in ImageSequence.Iterator(webp)])
    expected = reference(PROMPT, negative_prompt="blurry", height=HEIGHT, width=WIDTH,
                         num_frames=FRAMES, num_inference_steps=2, guidance_scale=4.0,
                         output_type="np", generator=torch.Generator().manual_seed(3),
                         video=video, mask=mask, reference_images=[picture],
                         conditioning_scale=0.8).frames[0]
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).mean() < 1e-3  # the 8-bit frames' rounding
    assert np.abs(ours - expected).max() < 1 / 255


def test_vace_refusals_are_422(served: tuple[TestClient, Any],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusion.server.api.routers import video

    monkeypatch.setattr(video, "video_pipeline", lambda *a, **kw: pytest.fail("the model loaded"))
    client, _ = served
    frame = _png(Image.new("RGB", (WIDTH, HEIGHT)))
    for change, says in (
            ({"model": "wan-plain", "control_video": [frame] * FRAMES},
             "control_video needs a Wan VACE model"),
            ({"model": "wan-plain", "control_scale": 0.5}, "control_scale needs a Wan VACE"),
            ({"control_video": [frame] * 4}, "control_video has 4 frames but frames is 5"),
            ({"control_mask": [frame] * FRAMES}, "a VACE mask needs a control video")):
        response = client.post("/avx/txt2vid", json={**BODY, **change})
        assert response.status_code == 422 and says in response.text, response.text
