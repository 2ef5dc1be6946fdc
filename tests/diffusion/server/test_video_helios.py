"""Helios on the server: /avx/video-models lists a tiny HeliosPipeline folder with its family's
defaults, POST /avx/txt2vid makes diffusers' video (one 33-frame chunk), continues an
init_video as diffusers' HeliosPipeline(video=) does, and POST /avx/img2vid makes its
image-to-video one of the picture; Wan's fields, other samplers, a strength for the init video
or one shorter than a chunk are 422s in one line."""

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
from helios_tiny import tiny_helios_pipeline
from PIL import Image, ImageSequence
from sd_tiny import write_pipeline
from server_support import CachedLoader

import gpucore

PROMPT = "a red fox runs through the snow"
SIZE = {"frames": 33, "width": 48, "height": 32, "steps": 2, "cfg_scale": 4.0}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Any]]:
    from diffusers.pipelines.helios import pipeline_helios
    from diffusers.pipelines.wan import pipeline_wan

    from diffusion.server import create_app

    # HeliosPipeline calls ftfy (not installed); Wan's cleaning is the same for ASCII prompts
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline_helios, "prompt_clean", pipeline_wan.prompt_clean)
        root = tmp_path_factory.mktemp("helios-server")
        models = root / "models"
        write_pipeline(models / "tiny-a")
        reference = tiny_helios_pipeline(root)
        shutil.copytree(root / "helios", models / "helios")
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
        return np.asarray(reference(prompt=PROMPT, height=32, width=48, num_frames=33,
                                    num_inference_steps=2, guidance_scale=4.0,
                                    generator=torch.Generator().manual_seed(7),
                                    output_type="np", **extra).frames[0])


def test_helios_text_and_image_to_video(first_device: gpucore.Device,
                                        served: tuple[TestClient, Any]) -> None:
    client, reference = served
    listed = client.get("/avx/video-models").json()
    model = next(m for m in listed["models"] if m["title"].startswith("helios"))
    assert model["family"] == "helios" and model["samplers"] == ["diffusers"]
    assert model["defaults"]["frames"] == 129 and model["first_frame"] == "optional"
    response = client.post("/avx/txt2vid", json={"model": "helios", "prompt": PROMPT,
                                                  "seed": 7, "format": "webp", **SIZE})
    assert response.status_code == 200, response.text
    assert response.json()["frames"] == 33
    assert np.abs(_frames(response.json()) - _theirs(reference)).max() < 1 / 255
    picture = (np.random.default_rng(2).uniform(0, 1, (32, 48, 3)) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(picture).save(buffer, format="PNG")
    response = client.post("/avx/img2vid", json={
        "model": "helios", "prompt": PROMPT, "seed": 7, "format": "webp", **SIZE,
        "image": base64.b64encode(buffer.getvalue()).decode("ascii")})
    assert response.status_code == 200, response.text
    expected = _theirs(reference, image=Image.fromarray(picture))
    assert np.abs(_frames(response.json()) - expected).max() < 1 / 255
    for change, says in (({"sampler": "UniPC"}, "sampler 'UniPC' is not taken by Helios"),
                         ({"cfg_scale_2": 2.0}, "cfg_scale_2 is not taken by Helios"),
                         ({"cache": "fbc"}, "cache 'fbc' is not taken by Helios")):
        response = client.post("/avx/txt2vid", json={"model": "helios", "prompt": PROMPT,
                                                      **SIZE, **change})
        assert response.status_code == 422 and says in response.json()["detail"], response.text


def test_helios_continues_an_init_video(first_device: gpucore.Device,
                                        served: tuple[TestClient, Any]) -> None:
    from wan_tiny import wave_video

    client, reference = served
    video = wave_video(5, 32, 48, frames=34)
    clip = []
    for frame in video:
        buffer = io.BytesIO()
        frame.save(buffer, format="PNG")
        clip.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    body = {"model": "helios", "prompt": PROMPT, "seed": 7, "format": "webp", **SIZE,
            "init_video": clip}
    response = client.post("/avx/txt2vid", json=body)
    assert response.status_code == 200, response.text
    ours = _frames(response.json())
    expected = _theirs(reference, video=video)
    assert ours.shape == expected.shape
    # within a level (the 8-bit frames); that the video visibly matters:
    # test_helios_pipeline's video-to-video test
    assert np.abs(ours - expected).max() < 1 / 255
    for change, says in (({"denoising_strength": 0.5}, "it continues it"),
                         ({"init_video": clip[:20]}, "whole chunks of 33")):
        response = client.post("/avx/txt2vid", json={**body, **change})
        assert response.status_code == 422 and says in response.json()["detail"], response.text
    response = client.post("/avx/img2vid", json={**body, "image": clip[0]})
    assert response.status_code == 422 and "do not go together" in response.text
