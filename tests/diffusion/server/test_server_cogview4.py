"""CogView4 through the server like any model: listed by /sdapi/v1/sd-models, txt2img with
Euler (CFG 5 with a negative prompt) named in its infotext, the negative prompt visibly
mattering, and a refiner refused in one line (422) before anything runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("fastapi", reason="the server extra is not installed")
from server_support import info, pixels, serving

import gpucore

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)

SMALL = {"width": 48, "height": 32, "steps": 2, "seed": 5}
PROMPT = "a red circle on a blue square"


def test_cogview4_through_the_api(tiny_cogview4: tuple[Path, Any]) -> None:
    folder, _ = tiny_cogview4

    def txt2img(negative: str, **more: Any) -> Any:
        return client.post("/sdapi/v1/txt2img", json={
            "prompt": PROMPT, "negative_prompt": negative, "cfg_scale": 5,
            "sampler_name": "Euler", "override_settings": {"randn_source": "CPU"}, **SMALL,
            **more})

    with serving(folder.parent, folder.name) as client:
        names = {item["model_name"] for item in client.get("/sdapi/v1/sd-models").json()}
        assert folder.name in names
        response = txt2img("an astronaut riding a horse")
        assert response.status_code == 200, response.text
        text = info(response)["infotexts"][0]
        assert "Sampler: Euler, Schedule type: Simple, CFG scale: 5" in text
        assert f"Model: {folder.name}" in text
        ours = pixels(response.json()["images"][0]) / np.float32(255)
        assert ours.shape == (SMALL["height"], SMALL["width"], 3)
        # the negative prompt visibly matters (measured mean change 0.0061 in the pipeline's
        # test; a PNG rounds to 1/255)
        other = pixels(txt2img("a blurry photo").json()["images"][0]) / np.float32(255)
        assert np.abs(ours - other).mean() > 0.002
        response = txt2img("", refiner_checkpoint=folder.name, refiner_switch_at=0.5)
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "refiner" in detail and "CogView4" in detail and "\n" not in detail, detail
