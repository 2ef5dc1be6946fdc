"""SkyReels V2 on the server: GET /avx/video-models lists a diffusion forcing folder with its
own defaults and a text-to-video one as Wan's; POST /avx/txt2vid runs the diffusion forcing
folder with its fields (asynchronous, causal blocks, fps 16) to diffusers' frames; its fields
sent to another model, or a step cache sent to it, are 422s saying what to change."""

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
from PIL import Image, ImageSequence
from sd_tiny import write_pipeline
from server_support import CachedLoader
from skyreels_v2_tiny import tiny_skyreels_pipeline

import gpucore

RED = "a red cube on a wooden table"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Any]]:
    from diffusers.pipelines.skyreels_v2 import pipeline_skyreels_v2_diffusion_forcing as df
    from diffusers.pipelines.wan import pipeline_wan

    from diffusion.server import create_app

    root = tmp_path_factory.mktemp("skyreels-server")
    models = root / "models"
    write_pipeline(models / "tiny-a")
    reference = tiny_skyreels_pipeline(models, "df")
    tiny_skyreels_pipeline(models, "t2v")
    app = create_app(model=models / "tiny-a", models_dir=models, outputs=root / "outputs",
                     loader=CachedLoader())
    # diffusers' pipeline calls ftfy unconditionally (not installed here); Wan's cleaning is
    # the same for this ASCII prompt
    with pytest.MonkeyPatch.context() as patch, TestClient(app) as client:
        patch.setattr(df, "prompt_clean", pipeline_wan.prompt_clean)
        yield client, reference
    app.state.worker.stop()


def test_diffusion_forcing_on_the_queue(first_device: gpucore.Device,
                                        served: tuple[TestClient, Any]) -> None:
    client, reference = served
    listed = {m["model_name"]: m for m in client.get("/avx/video-models").json()["models"]}
    assert listed["skyreels-df"]["family"] == "skyreels-v2-df"
    assert listed["skyreels-df"]["defaults"]["frames"] == 97
    assert listed["skyreels-t2v"]["family"] == "wan"
    body = {"model": "skyreels-df", "prompt": RED, "frames": 13, "width": 48, "height": 32,
            "steps": 2, "cfg_scale": 1.0, "seed": 3, "format": "webp", "fps": 16,
            "ar_step": 1, "causal_block_size": 2}
    response = client.post("/avx/txt2vid", json=body)
    assert response.status_code == 200, response.text
    with Image.open(io.BytesIO(base64.b64decode(response.json()["video"]))) as video:
        ours = np.stack([np.asarray(f.convert("RGB"), np.float32) / 255
                         for f in ImageSequence.Iterator(video)])
    expected = reference(RED, height=32, width=48, num_frames=13, num_inference_steps=2,
                         guidance_scale=1.0, fps=16, ar_step=1, causal_block_size=2,
                         output_type="np", generator=torch.Generator().manual_seed(3)).frames[0]
    assert ours.shape == (13, 32, 48, 3)
    assert np.abs(ours - expected).max() < 1.5 / 255  # the 8-bit frames' rounding


def test_forcing_fields_elsewhere_are_422(served: tuple[TestClient, Any]) -> None:
    client, _ = served
    small = {"prompt": RED, "frames": 5, "width": 48, "height": 32, "steps": 1}
    response = client.post("/avx/txt2vid", json={**small, "model": "skyreels-t2v",
                                                  "overlap_history": 17})
    assert response.status_code == 422
    assert "overlap_history is for SkyReels V2 diffusion forcing" in response.text
    response = client.post("/avx/txt2vid", json={**small, "model": "skyreels-df",
                                                  "cache": "fbc"})
    assert response.status_code == 422
    assert "not taken by SkyReels V2 diffusion forcing" in response.text
