"""Helios on the server. POST /avx/txt2vid with a tiny HeliosPipeline folder is a 422 in one
line naming the CLI command until the video router calls video_helios; its parts directly:
`helios_answer` writes diffusers' video (webp frames within 1/255), `refuse_helios` names what
Helios does not take."""

from __future__ import annotations

import base64
import io
import shutil
from pathlib import Path
from types import SimpleNamespace
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
from diffusion.pipelines.video.models import VideoDefaults
from diffusion.server.api.video_helios import helios_answer, refuse_helios

PROMPT = "a red fox runs through the snow"


def _body(**change: Any) -> SimpleNamespace:
    fields = dict(prompt=PROMPT, negative_prompt="blurry", format="webp", also_webp=False,
                  cfg_scale_2=None, sampler="diffusers", cache=None, init_video=None)
    return SimpleNamespace(**{**fields, **change})


def test_txt2vid_names_the_command(tmp_path: Path) -> None:
    from diffusion.server import create_app

    models = tmp_path / "models"
    write_pipeline(models / "tiny-a")
    tiny_helios_pipeline(tmp_path)
    shutil.copytree(tmp_path / "helios", models / "helios")
    app = create_app(model=models / "tiny-a", models_dir=models, outputs=tmp_path / "outputs",
                     loader=CachedLoader())
    with TestClient(app) as client:
        response = client.post("/avx/txt2vid", json={
            "model": "helios", "prompt": "a fox", "frames": 33, "width": 48, "height": 32,
            "steps": 2})
    app.state.worker.stop()
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "model 'helios' is a Helios folder, which the server does not run" in detail
    assert "python -m diffusion txt2vid" in detail


def test_helios_answer_is_diffusers_video(first_device: gpucore.Device, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers.pipelines.helios import pipeline_helios
    from diffusers.pipelines.wan import pipeline_wan

    from diffusion.pipelines.video.helios import HeliosPipeline

    # HeliosPipeline calls ftfy (not installed); Wan's cleaning is the same for ASCII prompts
    monkeypatch.setattr(pipeline_helios, "prompt_clean", pipeline_wan.prompt_clean)
    reference = tiny_helios_pipeline(tmp_path)
    pipe = HeliosPipeline.from_pretrained(tmp_path / "helios", device=first_device)
    s = VideoDefaults(frames=33, width=48, height=32, steps=2, cfg_scale=4.0, fps=24.0)
    steps: list[int] = []
    observer = SimpleNamespace(step=lambda done, total, latents: steps.append(done),
                               interrupted=lambda: False)
    answer = helios_answer(pipe, _body(), s, 7, observer)
    assert (answer["frames"], answer["width"], answer["height"]) == (33, 48, 32)
    assert steps == [1, 2] and not answer["interrupted"]
    with Image.open(io.BytesIO(base64.b64decode(answer["video"]))) as video:
        frames = np.stack([np.asarray(f.convert("RGB"), np.float32) / 255
                           for f in ImageSequence.Iterator(video)])
    with torch.no_grad():
        expected = reference(prompt=PROMPT, negative_prompt="blurry", height=32, width=48,
                             num_frames=33, num_inference_steps=2, guidance_scale=4.0,
                             generator=torch.Generator().manual_seed(7)).frames[0]
    assert np.abs(frames - np.asarray(expected)).max() < 1 / 255


@pytest.mark.nodevice
def test_refuse_helios() -> None:
    refuse_helios(_body(), None, None, None)
    for change, extra, says in (({}, {"image": object()}, "image (/avx/img2vid)"),
                                ({"init_video": "v"}, {}, "init_video is not taken"),
                                ({"sampler": "UniPC"}, {}, "sampler 'UniPC' is not taken"),
                                ({"cfg_scale_2": 2.0}, {}, "cfg_scale_2 is not taken")):
        with pytest.raises(ValueError, match=r"^" + says.split(" (")[0]) as error:
            refuse_helios(_body(**change), None, None, None, **extra)
        assert says in str(error.value) and "Helios" in str(error.value)
    with pytest.raises(ValueError, match="memory mode"):
        refuse_helios(_body(), None, None, "lowvram")
