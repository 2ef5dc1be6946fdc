"""LTX-2 on the server: /avx/video-models lists a tiny LTX2Pipeline folder of the models
directory with its family's defaults and its audio, POST /avx/txt2vid makes our pipeline's
video with its audio (an MP4's AAC track; a WebP's WAV as `audio`), /avx/img2vid the one of
its picture, and what LTX-2 does not take is a 422 in one line."""

from __future__ import annotations

import base64
import io
import re
import shutil
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("fastapi", reason="the server extra is not installed")
from fastapi.testclient import TestClient
from ltx2_pipeline_tiny import tiny_ltx2_pipeline
from PIL import Image, ImageSequence
from sd_tiny import write_pipeline
from server_support import CachedLoader, png_b64

import gpucore
from diffusion.pipelines.video.ltx2 import LTX2Pipeline
from diffusion.pipelines.video.ltx2_guidance import LTX2Guidance

CAT = "a cat walks on the beach"
# the tiny transformer has 2 blocks: STG's default block 28 is past them, so its STG is off
# here (perturbed_attn false); 2 steps, 9 frames of 32 x 64
SIZE = {"frames": 9, "width": 64, "height": 32, "steps": 2}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Path]]:
    from diffusion.server import create_app

    root = tmp_path_factory.mktemp("ltx2-server")
    models = root / "models"
    write_pipeline(models / "tiny-a")
    folder, _ = tiny_ltx2_pipeline(root, "ltx2-2", perturbed_attn=False)
    shutil.copytree(folder, models / "ltx2")
    app = create_app(model=models / "tiny-a", models_dir=models, outputs=root / "outputs",
                     loader=CachedLoader())
    with TestClient(app) as client:
        yield client, models / "ltx2"
    app.state.worker.stop()


def test_txt2vid_with_audio(first_device: gpucore.Device,
                            served: tuple[TestClient, Path]) -> None:
    av = pytest.importorskip("av")
    client, folder = served
    listed = client.get("/avx/video-models").json()
    model = next(m for m in listed["models"] if m["title"].startswith("ltx2"))
    assert model["family"] == "ltx-2" and model["audio"] and model["first_frame"] == "optional"
    assert model["defaults"] == {"frames": 121, "width": 768, "height": 512, "steps": 30,
                                 "cfg_scale": 3.0, "fps": 24.0}
    assert model["samplers"] == ["diffusers"] and model["title"] not in listed["bases"]
    expected = LTX2Pipeline.from_pretrained(folder)(
        CAT, height=32, width=64, num_frames=9, num_inference_steps=2, seed=7,
        guidance=LTX2Guidance(stg_scale=0, audio_stg_scale=0))
    response = client.post("/avx/txt2vid", json={"model": "ltx2", "prompt": CAT, "seed": 7,
                                                  "format": "webp", **SIZE})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["frames"], body["fps"], body["sample_rate"]) == (9, 24.0, 24000)
    with Image.open(io.BytesIO(base64.b64decode(body["video"]))) as video:
        frames = np.stack([np.asarray(f.convert("RGB"), np.float32) / 255
                           for f in ImageSequence.Iterator(video)])
    assert np.abs(frames - expected.frames[0]).mean() < 0.01  # 8-bit frames
    with wave.open(io.BytesIO(base64.b64decode(body["audio"]))) as file:
        pcm = np.frombuffer(file.readframes(file.getnframes()), "<i2").reshape(-1, 2).T
    assert np.abs(pcm / 32767 - expected.audio[0]).max() < 1e-4  # 16-bit rounding
    assert body["cache"] is None
    response = client.post("/avx/txt2vid", json={"model": "ltx2", "prompt": CAT, "seed": 7,
                                                  "cache": "fbc:0.9", **SIZE})
    assert response.status_code == 200, response.text
    with av.open(io.BytesIO(base64.b64decode(response.json()["video"]))) as container:
        assert container.streams.audio[0].rate == 24000
    assert re.fullmatch(r"fbc 0\.9, \d+/\d+ model calls computed", response.json()["cache"])
    for fields, message in (({"frames": 13}, r"frames must be 1 + 8k"),
                            ({"cache": "teacache"}, "cache 'teacache' is not taken by LTX-2"),
                            ({"sampler": "UniPC"}, "sampler 'UniPC' is not taken by LTX-2")):
        response = client.post("/avx/txt2vid", json={"model": "ltx2", "prompt": CAT,
                                                      **SIZE, **fields})
        assert response.status_code == 422 and message in response.text, response.text


def test_img2vid_with_audio(first_device: gpucore.Device,
                            served: tuple[TestClient, Path]) -> None:
    """/avx/img2vid: the picture (resized to the request's size) is the first frame, as our
    pipeline makes it; the frames differ from text to video's."""
    client, folder = served
    picture = Image.fromarray(np.random.default_rng(3).integers(0, 256, (40, 56, 3), np.uint8))
    pipe = LTX2Pipeline.from_pretrained(folder)
    settings = {"height": 32, "width": 64, "num_frames": 9, "num_inference_steps": 2,
                "seed": 7, "guidance": LTX2Guidance(stg_scale=0, audio_stg_scale=0)}
    expected = pipe(CAT, image=picture, **settings)
    assert np.abs(expected.frames - pipe(CAT, **settings).frames).mean() > 1e-2
    response = client.post("/avx/img2vid", json={"model": "ltx2", "prompt": CAT, "seed": 7,
                                                  "format": "webp", "image": png_b64(picture),
                                                  **SIZE})
    assert response.status_code == 200, response.text
    with Image.open(io.BytesIO(base64.b64decode(response.json()["video"]))) as video:
        frames = np.stack([np.asarray(f.convert("RGB"), np.float32) / 255
                           for f in ImageSequence.Iterator(video)])
    assert np.abs(frames - expected.frames[0]).mean() < 0.01  # 8-bit frames
    assert "audio" in response.json()
