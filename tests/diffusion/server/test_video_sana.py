"""SANA-Video on the server, which does not run it yet: POST /avx/txt2vid with a tiny
SanaVideoPipeline folder is a 422 in one line naming the CLI command that does, not a
traceback."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("fastapi", reason="the server extra is not installed")
from fastapi.testclient import TestClient
from sana_video_tiny import tiny_sana_video_pipeline
from sd_tiny import write_pipeline
from server_support import CachedLoader


def test_txt2vid_names_the_command(tmp_path: Path) -> None:
    from diffusion.server import create_app

    models = tmp_path / "models"
    write_pipeline(models / "tiny-a")
    tiny_sana_video_pipeline(tmp_path)
    shutil.copytree(tmp_path / "sana-video", models / "sana-video")
    app = create_app(model=models / "tiny-a", models_dir=models, outputs=tmp_path / "outputs",
                     loader=CachedLoader())
    with TestClient(app) as client:
        response = client.post("/avx/txt2vid", json={
            "model": "sana-video", "prompt": "a fox", "frames": 5, "width": 64, "height": 32,
            "steps": 2})
    app.state.worker.stop()
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert "model 'sana-video' is a SANA-Video folder, which the server does not run" in detail
    assert "python -m diffusion txt2vid" in detail
