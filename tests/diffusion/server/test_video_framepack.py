"""FramePack on the server: /avx/video-models lists a tiny HunyuanVideoFramepackPipeline
folder as FramePack's, taking a first frame; POST /avx/img2vid with a last frame and a 2-frame
section gives diffusers' video and the CLI's (`img2vid --last-image --latent-window-size`)
frames; a last frame with F1's forwards sampling, txt2vid, and FramePack's fields on another
model are refused in one line."""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
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

import gpucore

CIRCLE = "a red circle on a blue background"
# a 2-frame window (5 frames a section): 5 frames ask for one section, made backwards from the
# last frame, prefixed by the first frame's latents (9 frames)
SETTINGS = {"frames": 5, "steps": 1, "seed": 7, "width": 48, "height": 32, "cfg_scale": 9.0}


def _picture(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (32, 48, 3),
                                                                dtype=np.uint8))


def _base64(picture: Image.Image) -> str:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, tiny_hunyuan_video: tuple[Path, Any]
           ) -> Iterator[tuple[TestClient, Path, Any]]:
    """(the client, the FramePack folder, diffusers' pipeline of it)."""
    from hunyuan_video_framepack_tiny import tiny_framepack_pipeline

    from diffusion.server import create_app

    root = tmp_path_factory.mktemp("framepack-server")
    models = root / "models"
    write_pipeline(models / "tiny-a")
    reference = tiny_framepack_pipeline(models, tiny_hunyuan_video[1])
    shutil.copytree(tiny_hunyuan_video[0], models / "hunyuan-video")
    app = create_app(model=models / "tiny-a", models_dir=models, outputs=root / "outputs",
                     loader=CachedLoader())
    with TestClient(app) as client:
        yield client, models / "framepack", reference
    app.state.worker.stop()


def test_img2vid(first_device: gpucore.Device, served: tuple[TestClient, Path, Any],
                 tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from cli_support import cli_ok, png_frames

    client, folder, reference = served
    listed = client.get("/avx/video-models").json()
    model = next(m for m in listed["models"] if m["title"].startswith("framepack"))
    assert model["family"] == "framepack" and model["first_frame"] == "required"
    assert model["defaults"]["fps"] == 30.0
    response = client.post("/avx/img2vid", json={
        "model": "framepack", "prompt": CIRCLE, "image": _base64(_picture(1)),
        "last_image": _base64(_picture(3)), "latent_window_size": 2, "format": "webp",
        **SETTINGS})
    assert response.status_code == 200, response.text
    with Image.open(io.BytesIO(base64.b64decode(response.json()["video"]))) as video:
        ours = np.stack([np.asarray(f.convert("RGB"), np.float32) / 255
                         for f in ImageSequence.Iterator(video)])
    with torch.no_grad():
        expected, plain = (reference(
            image=_picture(1), prompt=CIRCLE, height=32, width=48, num_frames=5,
            num_inference_steps=1, guidance_scale=9.0, latent_window_size=2,
            generator=torch.Generator().manual_seed(7), output_type="np", **last).frames[0]
            for last in ({"last_image": _picture(3)}, {}))
    assert ours.shape == expected.shape == (9, 32, 48, 3)
    # the WebP is lossless: 8-bit rounding (measured 0.0009 mean); the last frame moves the
    # video by 0.034 mean (measured)
    assert np.abs(ours - expected).mean() < 0.004
    assert np.abs(ours - plain).mean() > 0.017
    # the CLI's frames with the same options: the same floats, rounded alike
    _picture(1).save(tmp_path / "in.png")
    _picture(3).save(tmp_path / "end.png")
    out, _ = cli_ok(capsys, "img2vid", "--model", str(folder), "--image",
                    str(tmp_path / "in.png"), "--last-image", str(tmp_path / "end.png"),
                    "--latent-window-size", "2", "--prompt", CIRCLE, "--dtype", "float32",
                    *(f"--{k.replace('_', '-')}={v}" for k, v in SETTINGS.items()),
                    "-o", str(tmp_path / "cli"))
    assert np.abs(png_frames(out) - ours).max() <= 1 / 255 + 1e-6


def test_refused(served: tuple[TestClient, Path, Any]) -> None:
    from diffusion.server.api.video_framepack import framepack_inputs

    client, folder, _ = served
    image = _base64(_picture(1))
    response = client.post("/avx/img2vid", json={
        "model": "framepack", "prompt": CIRCLE, "image": image, "last_image": image,
        "sampling_type": "vanilla", **SETTINGS})
    assert response.status_code == 422
    assert response.json()["detail"].startswith("last_image needs sampling_type")
    response = client.post("/avx/txt2vid", json={"model": "framepack", "prompt": CIRCLE})
    assert response.status_code == 422
    assert "FramePack, which animates a picture: use /avx/img2vid" in response.json()["detail"]
    response = client.post("/avx/img2vid", json={
        "model": "framepack", "prompt": CIRCLE, "image": image, "latent_window_size": 0})
    assert response.status_code == 422
    body = SimpleNamespace(last_image=None, sampling_type=None, latent_window_size=3)
    with pytest.raises(ValueError, match=r"^latent_window_size is for FramePack models; "
                                         r"hunyuan-video is not one$"):
        framepack_inputs(folder.parent / "hunyuan-video", body)
