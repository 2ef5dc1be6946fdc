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


def test_init_video_is_extended(first_device: gpucore.Device,
                                served: tuple[TestClient, Any]) -> None:
    """/avx/txt2vid's init_video on a diffusion forcing folder: 13 frames more from its last
    5, the answer the video then them, as SkyReelsV2DiffusionForcingVideoToVideoPipeline;
    what it does not go with, one-line 422s before the queue."""
    import diffusers
    from diffusers.pipelines.skyreels_v2 import pipeline_skyreels_v2_diffusion_forcing_v2v
    from diffusers.pipelines.wan import pipeline_wan
    from wan_tiny import wave_video

    client, reference = served
    reference.transformer.register_to_config(num_frame_per_block=1)  # (the first test's 2)
    video = wave_video(4, 32, 48, frames=7)
    clip = []
    for frame in video:
        out = io.BytesIO()
        frame.save(out, format="PNG")
        clip.append(base64.b64encode(out.getvalue()).decode("ascii"))
    body = {"model": "skyreels-df", "prompt": RED, "frames": 13, "width": 48, "height": 32,
            "steps": 2, "cfg_scale": 1.0, "seed": 3, "format": "webp", "base_num_frames": 9,
            "overlap_history": 5, "init_video": clip}
    response = client.post("/avx/txt2vid", json=body)
    assert response.status_code == 200, response.text
    with Image.open(io.BytesIO(base64.b64decode(response.json()["video"]))) as webp:
        ours = np.stack([np.asarray(f.convert("RGB"), np.float32) / 255
                         for f in ImageSequence.Iterator(webp)])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline_skyreels_v2_diffusion_forcing_v2v, "prompt_clean",
                      pipeline_wan.prompt_clean)
        v2v = diffusers.SkyReelsV2DiffusionForcingVideoToVideoPipeline(**reference.components)
        expected = v2v(video=video, prompt=RED, height=32, width=48, num_frames=13,
                       base_num_frames=9, overlap_history=5, guidance_scale=1.0,
                       num_inference_steps=2, output_type="np",
                       generator=torch.Generator().manual_seed(3)).frames[0]
    assert ours.shape == expected.shape == (7 + 13, 32, 48, 3)
    assert np.abs(ours - expected).max() < 1.5 / 255  # the 8-bit frames' rounding
    for change, says in (({"overlap_history": None}, "send overlap_history"),
                         ({"overlap_history": 9}, "fewer than overlap_history 9"),
                         ({"denoising_strength": 0.5}, "it extends it")):
        response = client.post("/avx/txt2vid", json={**body, **change})
        assert response.status_code == 422 and says in response.text, response.text
    response = client.post("/avx/img2vid", json={**body, "image": clip[0]})
    assert response.status_code == 422 and "do not go together" in response.text


def _base64(picture: Image.Image) -> str:
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode("ascii")


def test_last_image_ends_the_video(first_device: gpucore.Device,
                                   served: tuple[TestClient, Any]) -> None:
    """/avx/img2vid's last_image on a diffusion forcing folder: the video ends on it, as
    SkyReelsV2DiffusionForcingImageToVideoPipeline(last_image=); over more than one window or
    beside FramePack's own fields, one-line 422s before the queue."""
    import diffusers
    from diffusers.pipelines.skyreels_v2 import pipeline_skyreels_v2_diffusion_forcing_i2v
    from diffusers.pipelines.wan import pipeline_wan

    client, reference = served
    reference.transformer.register_to_config(num_frame_per_block=1)  # (the first test's 2)
    rng = np.random.default_rng(6)
    first, last = (Image.fromarray((rng.random((32, 48, 3)) * 255).astype(np.uint8))
                   for _ in range(2))
    body = {"model": "skyreels-df", "prompt": RED, "frames": 9, "width": 48, "height": 32,
            "steps": 2, "cfg_scale": 1.0, "seed": 3, "format": "webp", "fps": 16,
            "image": _base64(first), "last_image": _base64(last)}
    response = client.post("/avx/img2vid", json=body)
    assert response.status_code == 200, response.text
    with Image.open(io.BytesIO(base64.b64decode(response.json()["video"]))) as webp:
        ours = np.stack([np.asarray(f.convert("RGB"), np.float32) / 255
                         for f in ImageSequence.Iterator(webp)])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline_skyreels_v2_diffusion_forcing_i2v, "prompt_clean",
                      pipeline_wan.prompt_clean)
        i2v = diffusers.SkyReelsV2DiffusionForcingImageToVideoPipeline(**reference.components)
        expected = i2v(image=first, last_image=last, prompt=RED, height=32, width=48,
                       num_frames=9, num_inference_steps=2, guidance_scale=1.0, fps=16,
                       output_type="np", generator=torch.Generator().manual_seed(3)).frames[0]
    assert ours.shape == expected.shape == (9, 32, 48, 3)
    assert np.abs(ours - expected).max() < 1.5 / 255  # the 8-bit frames' rounding
    longer = {"frames": 21, "base_num_frames": 13, "overlap_history": 5}
    for change, says in ((longer, "one window"),
                         ({"sampling_type": "vanilla"}, "sampling_type is not taken")):
        response = client.post("/avx/img2vid", json={**body, **change})
        assert response.status_code == 422 and says in response.text, response.text
