"""Motif-Video on the server: /avx/video-models lists a tiny MotifVideoPipeline folder with its
family's defaults (its guider's scale), POST /avx/txt2vid makes diffusers' video and POST
/avx/img2vid on a MotifVideoImage2VideoPipeline folder its image-to-video one; serve --lowvram
gives the plain server's frames bit for bit; a picture for the text-to-video folder, Wan's
fields and other samplers are 422s in one line."""

from __future__ import annotations

import base64
import io
import json
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
    reference = tiny_motif_pipeline(root, i2v=True, guidance=3.0)
    shutil.copytree(root / "motif-i2v", models / "motif-i2v")
    # the same weights as a text-to-video folder
    shutil.copytree(root / "motif-i2v", models / "motif")
    index = json.loads((models / "motif" / "model_index.json").read_text())
    index["_class_name"] = "MotifVideoPipeline"
    (models / "motif" / "model_index.json").write_text(json.dumps(index))
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
        return np.asarray(pipe(prompt=PROMPT, height=32, width=48, num_frames=5,
                               num_inference_steps=2, output_type="np",
                               generator=torch.Generator().manual_seed(7), **extra).frames[0])


def test_motif_text_and_image_to_video(first_device: gpucore.Device,
                                       served: tuple[TestClient, Any]) -> None:
    import diffusers

    client, reference = served
    listed = {m["title"]: m for m in client.get("/avx/video-models").json()["models"]}
    model = next(m for title, m in listed.items() if title.startswith("motif "))
    assert model["family"] == "motif-video" and model["samplers"] == ["diffusers"]
    assert model["defaults"]["frames"] == 121 and model["defaults"]["cfg_scale"] == 3.0
    assert model["first_frame"] == "none"
    assert next(m for t, m in listed.items() if t.startswith("motif-i2v"))["first_frame"] \
        == "optional"
    response = client.post("/avx/txt2vid", json={"model": "motif", "prompt": PROMPT,
                                                  "seed": 7, "format": "webp", **SIZE})
    assert response.status_code == 200, response.text
    text = diffusers.MotifVideoPipeline(**reference.components)
    assert np.abs(_frames(response.json()) - _theirs(text)).max() < 1 / 255
    picture = Image.fromarray((np.random.default_rng(2).uniform(0, 1, (32, 48, 3)) * 255
                               ).astype(np.uint8))
    png = io.BytesIO()
    picture.save(png, format="PNG")
    response = client.post("/avx/img2vid", json={
        "model": "motif-i2v", "prompt": PROMPT, "seed": 7, "format": "webp", **SIZE,
        "image": base64.b64encode(png.getvalue()).decode()})
    assert response.status_code == 200, response.text
    assert np.abs(_frames(response.json()) - _theirs(reference, image=picture)).max() < 1 / 255


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


def test_lowvram_server_gives_the_plain_frames(first_device: gpucore.Device, tmp_path: Path,
                                               served: tuple[TestClient, Any]) -> None:
    """serve --lowvram: the job loads the Motif-Video folder straight to host memory and
    streams its blocks (none on the GPU after the job), says so, and gives the plain server's
    frames bit for bit."""
    from diffusion.pipelines.sd.memory import MemoryMode
    from diffusion.server import create_app
    from diffusion.server.api import video_pipelines
    from gpustd.nn.offload import device_bytes

    plain, _ = served
    body = {"model": "motif", "prompt": PROMPT, "seed": 7, "format": "webp", **SIZE}
    ours = plain.post("/avx/txt2vid", json=body)
    assert ours.status_code == 200 and ours.json()["memory"] is None, ours.text
    models = tmp_path / "models"
    shutil.copytree(plain.app.state.registry.find("motif").path, models / "motif")
    app = create_app(model=plain.app.state.registry.find("tiny-a").path, models_dir=models,
                     outputs=tmp_path / "outputs", loader=CachedLoader(),
                     memory=MemoryMode(lowvram=True))
    with TestClient(app) as client:
        low = client.post("/avx/txt2vid", json=body)
        assert low.status_code == 200, low.text
        pipe = video_pipelines._loaded[id(None)][1]
        assert pipe.memory_mode == MemoryMode(lowvram=True)
        blocks = [*pipe.transformer.transformer_blocks,
                  *pipe.transformer.single_transformer_blocks]
        assert sum(device_bytes(block) for block in blocks) == 0
    app.state.worker.stop()
    assert low.json()["memory"] == "--lowvram"
    frames = _frames(low.json())
    assert frames.std() > 0.02  # a video, not a flat field
    np.testing.assert_array_equal(frames, _frames(ours.json()))
