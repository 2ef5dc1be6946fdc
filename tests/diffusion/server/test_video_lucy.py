"""Lucy Edit on the server: POST /avx/txt2vid with a tiny LucyEditPipeline folder of the
models directory and `init_video` as base64 PNG frames answers diffusers' LucyEditPipeline
frames (an animated WebP, lossless), the video's frame count and size the request's; the
folder is listed as "lucy-edit" (no first frame, its own defaults); what it does not take is a
422 in one line before the model loads."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("fastapi", reason="the server extra is not installed")
import torch
from fastapi.testclient import TestClient
from lucy_tiny import tiny_lucy_pipeline
from PIL import Image, ImageSequence
from sd_tiny import write_pipeline
from server_support import CachedLoader
from wan_tiny import wave_video

import gpucore

PROMPT = "make the cube red"
HEIGHT, WIDTH, FRAMES = 32, 64, 5
BODY = {"model": "lucy", "prompt": PROMPT, "negative_prompt": "blurry", "steps": 2,
        "cfg_scale": 4.0, "seed": 3, "format": "webp", "fps": 8}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Any]]:
    from diffusers.pipelines.lucy import pipeline_lucy_edit
    from diffusers.pipelines.wan import pipeline_wan

    from diffusion.server import create_app

    root = tmp_path_factory.mktemp("video-lucy")
    models = root / "models"
    write_pipeline(models / "tiny-a")
    reference = tiny_lucy_pipeline(models)
    app = create_app(model=models / "tiny-a", models_dir=models, outputs=root / "outputs",
                     loader=CachedLoader())
    with TestClient(app) as client, pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline_lucy_edit, "prompt_clean", pipeline_wan.prompt_clean)  # (ftfy)
        yield client, reference
    app.state.worker.stop()


def _base64(picture: Any) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def test_edit_on_the_queue(first_device: gpucore.Device,
                           served: tuple[TestClient, Any]) -> None:
    client, reference = served
    listed = {m["model_name"]: m for m in client.get("/avx/video-models").json()["models"]}
    assert listed["lucy"]["family"] == "lucy-edit" and listed["lucy"]["first_frame"] == "none"
    assert listed["lucy"]["defaults"]["fps"] == 24.0
    video = wave_video(6, HEIGHT, WIDTH)
    response = client.post("/avx/txt2vid", json={
        **BODY, "init_video": [_base64(f) for f in video]})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["frames"], answer["width"], answer["height"]) == (FRAMES, WIDTH, HEIGHT)
    assert answer["denoising_strength"] is None
    with Image.open(io.BytesIO(base64.b64decode(answer["video"]))) as webp:
        ours = np.stack([np.asarray(f.convert("RGB"), np.float32) / 255
                         for f in ImageSequence.Iterator(webp)])
    expected = reference(video=video, prompt=PROMPT, negative_prompt="blurry", height=HEIGHT,
                         width=WIDTH, num_frames=FRAMES, num_inference_steps=2,
                         guidance_scale=4.0, output_type="np",
                         generator=torch.Generator().manual_seed(3)).frames[0]
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() < 1.01 / 255  # the 8-bit frames' rounding


def test_refusals_are_422(served: tuple[TestClient, Any],
                          monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusion.server.api.routers import video

    monkeypatch.setattr(video, "video_pipeline", lambda *a, **kw: pytest.fail("the model loaded"))
    client, _ = served
    clip = [_base64(Image.new("RGB", (WIDTH, HEIGHT)))] * FRAMES
    for route, change, says in (
            ("txt2vid", {}, "Lucy Edit edits a video: send init_video"),
            ("txt2vid", {"init_video": clip, "denoising_strength": 0.5},
             "denoising_strength: Lucy Edit runs the whole schedule"),
            ("txt2vid", {"init_video": clip, "cfg_scale_2": 3.0},
             "Lucy Edit has one transformer"),
            ("txt2vid", {"init_video": clip, "cache": "teacache"},
             "for Lucy Edit use First Block Cache"),
            ("img2vid", {"init_video": clip, "image": clip[0]}, "takes no first frame")):
        response = client.post(f"/avx/{route}", json={**BODY, **change})
        assert response.status_code == 422 and says in response.json()["detail"], response.text
