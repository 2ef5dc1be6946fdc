"""Videos on the server: POST /avx/txt2vid runs a tiny Wan folder of the models directory on
the worker's queue and answers diffusers' WanPipeline frames as an animated WebP (lossless);
bad settings and a model that is not Wan are 422s saying what to change."""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("fastapi", reason="the server extra is not installed")
import torch
from fastapi.testclient import TestClient
from PIL import Image, ImageSequence
from sd_tiny import write_pipeline
from server_support import Background, CachedLoader, wait_for_step
from wan_tiny import tiny_wan_pipeline

import gpucore

RED = "a red cube on a wooden table"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Any]]:
    from diffusion.server import create_app

    root = tmp_path_factory.mktemp("video-server")
    models = root / "models"
    write_pipeline(models / "tiny-a")
    reference = tiny_wan_pipeline(models)
    app = create_app(model=models / "tiny-a", models_dir=models, outputs=root / "outputs",
                     loader=CachedLoader())
    with TestClient(app) as client:
        yield client, reference
    app.state.worker.stop()


def _frames(b64: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as video:
        return np.stack([np.asarray(f.convert("RGB"), np.float32) / 255
                         for f in ImageSequence.Iterator(video)])


def test_txt2vid_on_the_queue(first_device: gpucore.Device,
                              served: tuple[TestClient, Any]) -> None:
    client, reference = served
    body = {"model": "wan", "prompt": RED, "negative_prompt": "blurry", "frames": 5,
            "width": 48, "height": 32, "steps": 2, "cfg_scale": 4.0, "seed": 3,
            "format": "webp", "fps": 8}
    response = client.post("/avx/txt2vid", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["seed"] == 3 and answer["format"] == "webp" and not answer["interrupted"]
    assert answer["cache"] is None  # no step cache asked
    ours = _frames(answer["video"])
    expected = reference(RED, negative_prompt="blurry", height=32, width=48, num_frames=5,
                         num_inference_steps=2, guidance_scale=4.0, output_type="np",
                         generator=torch.Generator().manual_seed(3)).frames[0]
    assert ours.shape == (5, 32, 48, 3)
    assert np.abs(ours - expected).mean() < 0.01
    # the queue is free again and the picture model still answers
    assert client.get("/sdapi/v1/progress").json()["state"]["job"] == ""


def test_progress_and_interrupt(first_device: gpucore.Device,
                                served: tuple[TestClient, Any]) -> None:
    """/sdapi/v1/progress follows a video's steps; /interrupt stops it after the current one
    and the frames come back decoded from there."""
    client, _ = served
    body = {"model": "wan", "prompt": RED, "frames": 1, "width": 32, "height": 32,
            "steps": 40, "cfg_scale": 1.0, "seed": 1, "format": "webp"}
    running = Background(lambda: client.post("/avx/txt2vid", json=body))
    seen = wait_for_step(client.get, step=1)
    assert seen["state"]["job"] == "txt2vid" and seen["state"]["sampling_steps"] == 40
    client.post("/sdapi/v1/interrupt")
    answer = running.result().json()
    assert answer["interrupted"] and _frames(answer["video"]).shape == (1, 32, 32, 3)


@pytest.mark.parametrize(("change", "says"), [
    ({"frames": 8}, "frames must be 1 + 4k"),
    ({"width": 40}, "multiples of 16"),
    ({"model": "tiny-a"}, "is not a Wan folder"),
    ({"sampler": "Heun"}, "is not one Wan runs"),
    ({"cfg_scale_2": 2.0}, "has one transformer"),
    ({"cache": "magcache"}, "Wan runs First Block Cache"),
    ({"cache": "fbc:-1"}, "cache threshold must be in [0, 10)"),
    ({"steps": 1001}, "1000"),  # txt2vid's limit, and the picture routes'
])
def test_bad_video_requests_are_422(served: tuple[TestClient, Any], change: dict[str, Any],
                                    says: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each before the worker loads the Wan model (what it does not take: its folder's
    configs say)."""
    from diffusion.server.api.routers import video

    monkeypatch.setattr(video, "video_pipeline", lambda *a, **kw: pytest.fail("the model loaded"))
    client, _ = served
    body = {"model": "wan", "prompt": "x", "frames": 5, "width": 48, "height": 32, **change}
    response = client.post("/avx/txt2vid", json=body)
    assert response.status_code == 422 and says in response.text, response.text


def test_a_first_frame_for_a_text_model_is_422_before_it_loads(
        served: tuple[TestClient, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    """img2vid on Wan 2.1 T2V: its transformer's config.json says it reads no first frame."""
    from diffusion.server.api.routers import video

    monkeypatch.setattr(video, "video_pipeline", lambda *a, **kw: pytest.fail("the model loaded"))
    client, _ = served
    picture = io.BytesIO()
    Image.new("RGB", (48, 32), (200, 30, 30)).save(picture, "PNG")
    response = client.post("/avx/img2vid", json={
        "model": "wan", "prompt": "x", "frames": 5, "width": 48, "height": 32,
        "image": base64.b64encode(picture.getvalue()).decode()})
    assert response.status_code == 422, response.text
    assert "this Wan model makes videos from text only" in response.json()["detail"]


def test_video_models_lists_the_wan_folders(served: tuple[TestClient, Any]) -> None:
    """The page's Video tab reads this: the Wan folders alone (not tiny-a), whether each takes
    a first frame (Wan 2.1 T2V: none) and the samplers Wan runs."""
    client, _ = served
    answer = client.get("/avx/video-models").json()
    (model,) = answer["models"]
    assert model["model_name"] == "wan" and model["title"].startswith("wan ")
    assert model["first_frame"] == "none"
    assert answer["samplers"] == ["diffusers", "UniPC", "Euler"]


def test_lowvram_server_gives_the_plain_frames(first_device: gpucore.Device,
                                               tmp_path: Path,
                                               served: tuple[TestClient, Any]) -> None:
    """serve --lowvram: the video job loads the Wan folder straight to host memory and streams
    its blocks (none on the GPU after the job), says so in its answer, and gives the plain
    server's frames bit for bit."""
    from diffusion.pipelines.sd.memory import MemoryMode
    from diffusion.server import create_app
    from diffusion.server.api import video_pipelines
    from gpustd.nn.offload import device_bytes

    plain, _ = served
    body = {"model": "wan", "prompt": RED, "frames": 1, "width": 48, "height": 32,
            "steps": 1, "cfg_scale": 4.0, "seed": 5, "format": "webp"}
    ours = plain.post("/avx/txt2vid", json=body)
    assert ours.status_code == 200 and ours.json()["memory"] is None, ours.text
    models = tmp_path / "models"
    folder = plain.app.state.registry.find("wan").path
    shutil.copytree(folder, models / "wan")
    app = create_app(model=plain.app.state.registry.find("tiny-a").path, models_dir=models,
                     outputs=tmp_path / "outputs", loader=CachedLoader(),
                     memory=MemoryMode(lowvram=True))
    with TestClient(app) as client:
        low = client.post("/avx/txt2vid", json=body)
        assert low.status_code == 200, low.text
        pipe = video_pipelines._loaded[id(None)][1]
        assert pipe.memory_mode == MemoryMode(lowvram=True)
        assert sum(device_bytes(block) for block in pipe.transformer.blocks) == 0
    app.state.worker.stop()
    assert low.json()["memory"] == "--lowvram"
    frames = _frames(low.json()["video"])
    assert frames.std() > 0.02  # a picture, not a flat field
    np.testing.assert_array_equal(frames, _frames(ours.json()["video"]))
