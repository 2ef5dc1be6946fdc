"""Wan 2.2 Animate on the server: POST /avx/txt2vid with a tiny WanAnimatePipeline folder of the
models directory, the character picture, pose, face, background and mask videos as base64 PNGs
("replace", two segments), answers diffusers' WanAnimatePipeline frames (an animated WebP,
lossless) with Wan Animate's own steps and guidance where none are sent; the listing marks the
folder; its transformer as the original release's single file with the folder as its base
answers the folder's frames; what is refused is a 422 in one line before the model loads."""

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
from wan_animate_pipe_tiny import random_video, tiny_wan_animate_pipeline
from wan_animate_tiny import animate_original_names

import gpucore

PROMPT = "a dancer on a stage"
HEIGHT, WIDTH, FRAMES = 16, 32, 7
FILE = "diffusion_models/Wan2_2-Animate-14B.safetensors"
BODY = {"model": "wan-animate", "prompt": PROMPT, "width": WIDTH, "height": HEIGHT, "seed": 3,
        "format": "webp", "fps": 8}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[TestClient, Any]]:
    from diffusion.server import create_app

    root = tmp_path_factory.mktemp("video-animate")
    models = root / "models"
    write_pipeline(models / "tiny-a")
    reference = tiny_wan_animate_pipeline(models)
    plain = models / "wan-i2v"  # the same parts under a WanImageToVideoPipeline index
    shutil.copytree(models / "wan-animate", plain)
    index = json.loads((plain / "model_index.json").read_text())
    (plain / "model_index.json").write_text(json.dumps(
        {**index, "_class_name": "WanImageToVideoPipeline"}))
    (models / FILE).parent.mkdir()
    from safetensors.torch import save_file

    state = {k: v.detach().clone() for k, v in reference.transformer.state_dict().items()}
    save_file(animate_original_names(state, 2), str(models / FILE))
    app = create_app(model=models / "tiny-a", models_dir=models, outputs=root / "outputs",
                     loader=CachedLoader())
    with TestClient(app) as client:
        yield client, reference
    app.state.worker.stop()


def _pngs(video: np.ndarray) -> list[str]:
    out = []
    for frame in video:
        buffer = io.BytesIO()
        Image.fromarray(frame[..., 0] if frame.shape[-1] == 1 else frame).save(buffer, "PNG")
        out.append(base64.b64encode(buffer.getvalue()).decode("ascii"))
    return out


def _inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(8)
    return {"animate_image": random_video(rng, 1, 20, 28), "pose_video":
            random_video(rng, FRAMES, 24, 40), "face_video": random_video(rng, FRAMES, 16, 16),
            "background_video": random_video(rng, FRAMES, HEIGHT, WIDTH), "mask_video":
            (random_video(rng, FRAMES, HEIGHT, WIDTH, 1) > 127).astype(np.uint8) * 255}


def test_animate_on_the_queue(first_device: gpucore.Device, served: tuple[TestClient, Any],
                              monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers.pipelines.wan import pipeline_wan, pipeline_wan_animate

    # diffusers' Animate module calls ftfy unconditionally; the same for this ASCII prompt
    monkeypatch.setattr(pipeline_wan_animate, "prompt_clean", pipeline_wan.prompt_clean)
    client, reference = served
    models = client.get("/avx/video-models").json()["models"]
    assert {m["title"].split(" ")[0]: m["animate"] for m in models} == {
        "wan-animate": True, "wan-i2v": False, FILE: True}
    x = _inputs()
    fields = {name: _pngs(video) for name, video in x.items()}
    fields["animate_image"] = fields["animate_image"][0]
    response = client.post("/avx/txt2vid", json={**BODY, **fields, "steps": 2,
                                                 "segment_frames": 5})
    assert response.status_code == 200, response.text
    assert response.json()["frames"] == FRAMES
    with Image.open(io.BytesIO(base64.b64decode(response.json()["video"]))) as webp:
        ours = np.stack([np.asarray(f.convert("RGB"), np.float32) / 255
                         for f in ImageSequence.Iterator(webp)])

    def pil(video: np.ndarray) -> list[Any]:
        return [Image.fromarray(f[..., 0] if f.shape[-1] == 1 else f) for f in video]

    expected = reference(image=pil(x["animate_image"])[0], pose_video=pil(x["pose_video"]),
                         face_video=pil(x["face_video"]),
                         background_video=pil(x["background_video"]),
                         mask_video=pil(x["mask_video"]), mode="replace", prompt=PROMPT,
                         height=HEIGHT, width=WIDTH, segment_frame_length=5,
                         num_inference_steps=2, output_type="np",
                         generator=torch.Generator().manual_seed(3)).frames[0]
    assert ours.shape == expected.shape == (FRAMES, HEIGHT, WIDTH, 3)
    assert np.abs(ours - expected).max() < 1 / 255  # the 8-bit frames' rounding


def test_animate_refusals_are_422(served: tuple[TestClient, Any],
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusion.server.api.routers import video

    monkeypatch.setattr(video, "video_pipeline", lambda *a, **kw: pytest.fail("the model loaded"))
    client, _ = served
    frame = _pngs(np.zeros((1, HEIGHT, WIDTH, 3), np.uint8))[0]
    given = {"animate_image": frame, "pose_video": [frame] * 3, "face_video": [frame] * 3}
    for change, says in (
            ({"model": "wan-i2v", **given}, "animate_image needs a Wan 2.2 Animate model"),
            ({"pose_video": [frame] * 3}, "Wan 2.2 Animate needs animate_image"),
            ({**given, "mask_video": [frame] * 3}, "needs both background_video and mask_video"),
            ({**given, "face_video": [frame] * 2},
             "the face_video has 2 frames but the pose_video has 3"),
            ({**given, "segment_frames": 6}, "the segment length must be 1 + 4k"),
            ({**given, "segment_overlap": 2}, "must be 1 or 5"),
            ({**given, "cache": "magcache"}, "Wan runs First Block Cache"),
            ({**given, "frames": 9}, "leave frames out"),
            ({**given, "control_scale": 0.5}, "Wan 2.2 Animate does not take control_scale")):
        response = client.post("/avx/txt2vid", json={**BODY, **change})
        assert response.status_code == 422 and says in response.text, response.text


def test_animate_file_with_its_base(first_device: gpucore.Device,
                                    served: tuple[TestClient, Any]) -> None:
    """The original release's file, listed as Animate (not as a second expert) with the
    Animate folder among the bases, gives the folder's frames bit for bit."""
    client, _ = served
    listing = client.get("/avx/video-models").json()
    model = next(m for m in listing["models"] if m["kind"] == "file")
    assert model["family"] == "wan-animate" and model["defaults"]["steps"] == 20
    assert listing["files"]["model_2"] == []
    assert any(title.startswith("wan-animate ") for title in listing["bases"])
    x = _inputs()
    fields = {name: _pngs(x[name]) for name in ("pose_video", "face_video")}
    fields["animate_image"] = _pngs(x["animate_image"])[0]
    videos = []
    for source in ({}, {"model": FILE, "base": "wan-animate"}):
        response = client.post("/avx/txt2vid", json={**BODY, **fields, **source, "steps": 1,
                                                     "segment_frames": 5})
        assert response.status_code == 200, response.text
        videos.append(response.json()["video"])
    assert videos[1] == videos[0]


def test_animate_step_cache(first_device: gpucore.Device, served: tuple[TestClient, Any]
                            ) -> None:
    """`cache` reaches Wan Animate's pipeline, and the answer says how many calls ran: at 5
    the tiny model's first block never moves that far, so each of the two segments runs the
    other blocks at the first of its three steps only (its frames against diffusers' with
    the rule by hand: pipelines/test_wan_animate_pipeline.py)."""
    client, _ = served
    x = _inputs()
    fields = {name: _pngs(x[name]) for name in ("pose_video", "face_video")}
    fields["animate_image"] = _pngs(x["animate_image"])[0]
    response = client.post("/avx/txt2vid", json={**BODY, **fields, "steps": 3,
                                                 "segment_frames": 5, "cache": "fbc:5"})
    assert response.status_code == 200, response.text
    assert response.json()["cache"] == "fbc 5, 2/6 model calls computed"
