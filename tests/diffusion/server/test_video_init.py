"""Wan video-to-video on the server: POST /avx/txt2vid with a tiny WanPipeline folder of the
models directory and `init_video` as base64 PNG frames answers diffusers'
WanVideoToVideoPipeline frames (an animated WebP, lossless), its frame count and size the
video's; the same video sent as one animated WebP file answers the same frames; what is
refused is a 422 in one line before the model loads."""

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
from wan_tiny import tiny_wan_pipeline, wave_video

import gpucore

PROMPT = "a red cube on a wooden table"
HEIGHT, WIDTH, FRAMES = 32, 48, 5
BODY = {"model": "wan", "prompt": PROMPT, "negative_prompt": "blurry", "steps": 4,
        "cfg_scale": 4.0, "seed": 3, "format": "webp", "fps": 8}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Any]]:
    from diffusion.server import create_app

    root = tmp_path_factory.mktemp("video-init")
    models = root / "models"
    write_pipeline(models / "tiny-a")
    reference = tiny_wan_pipeline(models)
    app = create_app(model=models / "tiny-a", models_dir=models, outputs=root / "outputs",
                     loader=CachedLoader())
    with TestClient(app) as client:
        yield client, reference
    app.state.worker.stop()


def _base64(picture: Any, **save: Any) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, **save)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _frames(answer: dict[str, Any]) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(answer["video"]))) as webp:
        return np.stack([np.asarray(f.convert("RGB"), np.float32) / 255
                         for f in ImageSequence.Iterator(webp)])


def test_init_video_on_the_queue(first_device: gpucore.Device,
                                 served: tuple[TestClient, Any]) -> None:
    import diffusers
    from diffusers.pipelines.wan import pipeline_wan, pipeline_wan_video2video

    client, t2v = served
    video = wave_video(6, HEIGHT, WIDTH)
    response = client.post("/avx/txt2vid", json={
        **BODY, "init_video": [_base64(f, format="PNG") for f in video],
        "denoising_strength": 0.5})
    assert response.status_code == 200, response.text
    answer = response.json()
    assert (answer["frames"], answer["width"], answer["height"]) == (FRAMES, WIDTH, HEIGHT)
    assert answer["denoising_strength"] == 0.5
    ours = _frames(answer)
    reference = diffusers.WanVideoToVideoPipeline(
        tokenizer=t2v.tokenizer, text_encoder=t2v.text_encoder, transformer=t2v.transformer,
        vae=t2v.vae, scheduler=t2v.scheduler)
    with pytest.MonkeyPatch.context() as patch:  # its cleaning calls ftfy unconditionally
        patch.setattr(pipeline_wan_video2video, "prompt_clean", pipeline_wan.prompt_clean)
        expected = reference(prompt=PROMPT, video=video, strength=0.5, negative_prompt="blurry",
                             height=HEIGHT, width=WIDTH, num_inference_steps=4,
                             guidance_scale=4.0, output_type="np",
                             generator=torch.Generator().manual_seed(3)).frames[0]
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() < 1.01 / 255  # the 8-bit frames' rounding
    # the video as one animated WebP file (lossless): the same frames
    webp = _base64(video[0], format="WEBP", save_all=True, append_images=video[1:],
                   lossless=True, duration=125)
    again = client.post("/avx/txt2vid", json={**BODY, "init_video": webp,
                                              "denoising_strength": 0.5})
    assert again.status_code == 200, again.text
    np.testing.assert_array_equal(_frames(again.json()), ours)


def test_init_video_refusals_are_422(served: tuple[TestClient, Any],
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusion.server.api.routers import video

    monkeypatch.setattr(video, "video_pipeline", lambda *a, **kw: pytest.fail("the model loaded"))
    client, _ = served
    frame = _base64(Image.new("RGB", (WIDTH, HEIGHT)), format="PNG")
    odd = _base64(Image.new("RGB", (40, 30)), format="PNG")
    for change, says in (
            ({"denoising_strength": 0.5}, "denoising_strength is for video-to-video"),
            ({"init_video": [frame] * 6},
             'init_video has 6 frames; Wan makes 1 + 4k (1, 5, ..., 81): give frames=5 to '
             "take its first 5"),
            ({"init_video": [odd] * 5}, "give width=32 and height=16 to resize it"),
            ({"init_video": [frame] * 5, "denoising_strength": 0.2},
             "denoising_strength 0.2 leaves none of 4 steps to run"),
            ({"init_video": [frame] * 5, "control_scale": 0.5},
             "init_video and control_scale do not go together"),
            ({"init_video": "bm90IGEgdmlkZW8="}, "init_video: not a readable picture"),
            ({"init_video": [frame] * 5, "frames": 9}, "fewer than frames=9")):
        response = client.post("/avx/txt2vid", json={**BODY, **change})
        assert response.status_code == 422 and says in response.json()["detail"], response.text
    response = client.post("/avx/img2vid", json={**BODY, "image": frame,
                                                 "init_video": [frame] * 5})
    assert response.status_code == 422 and "first frame" in response.text, response.text
