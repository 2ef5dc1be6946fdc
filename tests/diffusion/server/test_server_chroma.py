"""Chroma through the server like any model: listed, run by txt2img with CFG and a negative
prompt (the CLI's picture for the same settings), and with Forge's infotext when the body
leaves the sampler and CFG out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("fastapi", reason="the server extra is not installed")
from fastapi.testclient import TestClient
from PIL import Image
from server_support import CachedLoader, info, pixels

import diffusion.cli.main as cli
import gpucore
from diffusion.server import create_app

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)


def test_chroma_through_the_api(tmp_path: Path, tiny_chroma: tuple[Path, Any],
                                short_prompts: None,
                                capsys: pytest.CaptureFixture[str]) -> None:
    model = tiny_chroma[0] / "chroma"
    assert cli.main(["txt2img", "--model", str(model), "--prompt", "a red circle",
                     "--negative-prompt", "a dog", "--width", "24", "--height", "16", "--steps",
                     "2", "--seed", "7", "--sampler", "Euler a", "--cfg-scale", "4",
                     "--dtype", "float32", "--out", str(tmp_path / "cli.png")]) == 0
    with Image.open(tmp_path / "cli.png") as image:
        expected = np.asarray(image.convert("RGB"))
    capsys.readouterr()
    app = create_app(model=model, outputs=tmp_path / "outputs", max_size=256,
                     loader=CachedLoader())
    with TestClient(app) as client:
        assert "chroma" in {m["model_name"] for m in client.get("/sdapi/v1/sd-models").json()}
        body = {"prompt": "a red circle", "negative_prompt": "a dog", "width": 24,
                "height": 16, "steps": 2, "seed": 7}
        response = client.post("/sdapi/v1/txt2img", json={**body, "sampler_name": "Euler a",
                                                           "cfg_scale": 4})
        assert response.status_code == 200, response.text
        got = pixels(response.json()["images"][0]).astype(np.int16)
        assert np.abs(got - expected).max() <= 1
        # the body's own default CFG (the WebUI's 7), as for SD3: only families guided
        # otherwise (FLUX) put theirs in its place; Chroma's sampler, Euler
        response = client.post("/sdapi/v1/txt2img", json=body)
        assert response.status_code == 200, response.text
        assert ("Negative prompt: a dog\nSteps: 2, Sampler: Euler, Schedule type: Simple, "
                "CFG scale: 7, Seed: 7, Size: 24x16, Model: chroma") in info(response)[
            "infotexts"][0]
