"""ChronoEdit through the server like any edit model: /sdapi/v1/img2img with the init image as
the picture to edit and the prompt as the instruction, its sampler left to the family (the
folder's own), the temporal reasoning settings as body keys named after diffusers' arguments,
the picture diffusers' ChronoEditPipeline's within the PNG's rounding; a reasoning video of
other than 1 + 4k frames refused in one line (422)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("fastapi", reason="the server extra is not installed")
import torch
from chronoedit_tiny import tiny_chronoedit_pipeline
from PIL import Image
from server_support import info, pixels, png_b64, serving

import gpucore

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)

PROMPT = "make the cube blue"
TOL = 0.01  # mean |ours - diffusers| in [0, 1]: the PNG's rounding


def test_chronoedit_through_the_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusers.pipelines.chronoedit import pipeline_chronoedit
    from diffusers.pipelines.wan import pipeline_wan

    reference = tiny_chronoedit_pipeline(tmp_path)
    rng = np.random.default_rng(8)
    picture = Image.fromarray((rng.random((32, 48, 3)) * 255).astype(np.uint8))
    reasoning = {"enable_temporal_reasoning": True, "num_temporal_reasoning_steps": 2}

    def img2img(**more: Any) -> Any:
        return client.post("/sdapi/v1/img2img", json={
            "prompt": PROMPT, "init_images": [png_b64(picture)], "width": 48, "height": 32,
            "steps": 3, "cfg_scale": 3.0, "seed": 6, "num_frames": 5,
            "override_settings": {"randn_source": "CPU"}, **reasoning, **more})

    with serving(tmp_path, "chronoedit") as client:
        response = img2img()
        assert response.status_code == 200, response.text
        assert "Temporal reasoning steps: 2" in info(response)["infotexts"][0]
        ours = pixels(response.json()["images"][0]) / np.float32(255)
        response = img2img(num_frames=6)
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "1 + 4k" in detail and "\n" not in detail, detail
    # its prompt cleaning calls ftfy, not installed here; WanPipeline's skips it (the same for
    # this ASCII prompt)
    monkeypatch.setattr(pipeline_chronoedit, "prompt_clean", pipeline_wan.prompt_clean)
    expected = reference(image=picture, prompt=PROMPT, height=32, width=48,
                         num_inference_steps=3, guidance_scale=3.0, num_frames=5,
                         generator=torch.Generator().manual_seed(6), output_type="np",
                         **reasoning).frames[0][-1]
    assert np.abs(ours - expected).mean() < TOL
