"""FLUX and SD3 through the server like any model: listed by /sdapi/v1/sd-models, run by
txt2img / img2img with Forge's `distilled_cfg_scale` and CFG 1 for FLUX when the body leaves
cfg_scale out, Forge's infotext; the page's defaults say when to offer Distilled CFG Scale."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("fastapi", reason="the server extra is not installed")
from fastapi.testclient import TestClient
from flow_tiny import bfl_checkpoint
from PIL import Image
from server_support import CachedLoader, info, png_b64

import gpucore
from diffusion.loaders.formats.gguf_write import write_gguf
from diffusion.pipelines.flow.flow_model import FlowModel
from diffusion.server import create_app

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)

SMALL = {"width": 24, "height": 16, "steps": 2, "seed": 5}


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory, tiny_flux_dev: tuple[Path, Any],
           tiny_sd3: tuple[Path, Any]) -> Any:
    root = tmp_path_factory.mktemp("flow-server")
    models = root / "models"
    models.mkdir()
    for name, (folder, _) in (("flux", tiny_flux_dev), ("sd3", tiny_sd3)):
        (models / name).symlink_to(folder / name, target_is_directory=True)
    # city96's kind of FLUX file, listed as Forge lists it (it loads with --text-encoder files)
    bfl = bfl_checkpoint(tiny_flux_dev[1].transformer, "", bf16=False)
    write_gguf(models / "flux1-dev-Q8_0.gguf", ((k, v.numpy()) for k, v in bfl.items()), "q8_0",
               architecture="flux")
    app = create_app(model=models / "flux", models_dir=models, outputs=root / "outputs",
                     max_size=256, loader=CachedLoader())
    with pytest.MonkeyPatch.context() as patch, TestClient(app) as test_client:
        patch.setattr(FlowModel, "max_sequence_length", 16)  # the tiny models' cost is T5's
        yield test_client


def _img2img(client: Any, seed: int, **fields: Any) -> str:
    """POST /sdapi/v1/img2img of "a red circle" from a random 24x16 picture drawn from `seed`
    with `fields`; the first infotext."""
    image = Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 24, 3), np.uint8))
    response = client.post("/sdapi/v1/img2img", json={
        "prompt": "a red circle", "init_images": [png_b64(image)], **fields, **SMALL})
    assert response.status_code == 200, response.text
    return str(info(response)["infotexts"][0])


def test_flux_and_sd3_through_the_api(client: Any) -> None:
    names = {item["model_name"] for item in client.get("/sdapi/v1/sd-models").json()}
    assert {"flux", "sd3", "flux1-dev-Q8_0"} <= names
    assert client.get("/avx/defaults").json()["distilled_cfg"] is True
    # FLUX dev: CFG 1 when the body leaves it out, the distilled guidance as sent
    response = client.post("/sdapi/v1/txt2img", json={
        "prompt": "a red circle", "sampler_name": "Euler", "distilled_cfg_scale": 2.5, **SMALL})
    assert response.status_code == 200, response.text
    facts = info(response)
    assert facts["cfg_scale"] == 1 and facts["distilled_cfg_scale"] == 2.5
    assert ("Sampler: Euler, Schedule type: Simple, CFG scale: 1, Distilled CFG Scale: 2.5, "
            "Seed: 5, Size: 24x16, Model: flux") in facts["infotexts"][0]
    # the hires fix with Forge's hr_distilled_cfg for its second pass
    response = client.post("/sdapi/v1/txt2img", json={
        "prompt": "a red circle", "sampler_name": "Euler", "enable_hr": True, "hr_scale": 2,
        "hr_second_pass_steps": 1, "denoising_strength": 0.5, "hr_distilled_cfg": 5, **SMALL})
    assert response.status_code == 200, response.text
    assert ("Denoising strength: 0.5, Hires Distilled CFG Scale: 5, Hires upscale: 2, "
            "Hires steps: 1, Hires upscaler: Latent") in info(response)["infotexts"][0]
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "enable_hr": True,
                                                       "hr_distilled_cfg": -1, **SMALL})
    assert response.status_code == 422 and "hr_distilled_cfg" in response.text
    # Forge's module files: none here (test_server_modules switches them), others refused
    assert client.get("/sdapi/v1/options").json()["forge_additional_modules"] == []
    assert client.get("/sdapi/v1/sd-modules").json() == []
    assert client.post("/sdapi/v1/options", json={"forge_additional_modules": []}).is_success
    response = client.post("/sdapi/v1/options", json={
        "forge_additional_modules": ["t5-v1_1-xxl-encoder-Q8_0.gguf"]})
    assert response.status_code == 422 and "/sdapi/v1/sd-modules" in response.text
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", **SMALL, "override_settings":
                                                       {"forge_additional_modules": ["ae"]}})
    assert response.status_code == 422 and "not one of this server's module" in response.text
    # img2img at half strength
    text = _img2img(client, 0, denoising_strength=0.5, sampler_name="DPM++ 2M")
    assert "Denoising strength: 0.5" in text
    # a sampler not defined for flow models: a 4xx naming it
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "sampler_name": "DPM2",
                                                       **SMALL})
    assert 400 <= response.status_code < 500 and "DPM2" in response.text
    # SD3: CFG as sent, no distilled guidance offered or written; the distilled_cfg_scale
    # Forge's clients send with every body is ignored, as Forge ignores it (the CLI refuses
    # --distilled-cfg-scale given for such a model)
    switched = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "sd3"})
    assert switched.status_code == 200, switched.text
    assert client.get("/avx/defaults").json()["distilled_cfg"] is False
    response = client.post("/sdapi/v1/txt2img", json={
        "prompt": "a red circle", "cfg_scale": 4.5, "sampler_name": "Euler a",
        "distilled_cfg_scale": 7, **SMALL})
    assert response.status_code == 200, response.text
    text = info(response)["infotexts"][0]
    assert "CFG scale: 4.5" in text and "Distilled" not in text


def test_step_cache_through_the_api(client: Any) -> None:
    """The body's `cache` key (diffusion.models.step_cache): the infotext counts the steps
    computed; a kind the family lacks is a 4xx saying so."""
    switched = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "flux"})
    assert switched.status_code == 200, switched.text
    response = client.post("/sdapi/v1/txt2img", json={
        "prompt": "a red circle", "sampler_name": "Euler", "cache": "fbc:5", **SMALL})
    assert response.status_code == 200, response.text
    assert 'Cache: "fbc 5, 1/2 steps computed"' in info(response)["infotexts"][0]
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "cache": "fbc:ten",
                                                       **SMALL})
    assert response.status_code == 422 and "cache threshold" in response.text
    switched = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "sd3"})
    assert switched.status_code == 200, switched.text
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "x", "cache": "teacache",
                                                       **SMALL})
    assert 400 <= response.status_code < 500 and "teacache: not supported" in response.text


def test_webui_seed_and_hires_options_through_the_api(client: Any) -> None:
    """The WebUI's variation seed, a hires prompt and sampler of its own and img2img's noise
    multiplier on FLUX, as Forge takes them: written to the infotext as the WebUI writes them;
    prompt editing runs (another picture than either text alone)."""
    switched = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "flux"})
    assert switched.status_code == 200, switched.text
    response = client.post("/sdapi/v1/txt2img", json={
        "prompt": "a red circle", "sampler_name": "Euler", "subseed": 9,
        "subseed_strength": 0.3, "enable_hr": True, "hr_scale": 2, "hr_second_pass_steps": 1,
        "denoising_strength": 0.5, "hr_prompt": "a blue square", "hr_sampler_name": "DPM++ 2M",
        **SMALL})
    assert response.status_code == 200, response.text
    text = info(response)["infotexts"][0]
    assert "Variation seed: 9, Variation seed strength: 0.3" in text
    assert "Hires prompt: a blue square" in text and "Hires sampler: DPM++ 2M" in text
    text = _img2img(client, 1, denoising_strength=0.6, sampler_name="Euler",
                    initial_noise_multiplier=0.8)
    assert "Noise multiplier: 0.8" in text
    pictures = {}
    for prompt in ("a red circle", "a blue square", "[a red circle:a blue square:1]"):
        response = client.post("/sdapi/v1/txt2img", json={"prompt": prompt,
                                                           "sampler_name": "Euler", **SMALL})
        assert response.status_code == 200, response.text
        pictures[prompt] = response.json()["images"][0]
    assert len(set(pictures.values())) == 3


def test_a_switch_is_refused_with_the_loaded_models_line_before_its_load(
        client: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """override_settings naming a model not loaded (city96's GGUF of the FLUX transformer
    loaded here, SD3) with what its family does not take: the 422 the loaded FLUX.1 dev
    pipeline answers, before the switch is queued (nothing loads, nothing changes)."""
    switched = client.post("/sdapi/v1/options", json={"sd_model_checkpoint": "flux"})
    assert switched.status_code == 200, switched.text
    body = {"prompt": "x", "tiling": True, **SMALL}
    loaded = client.post("/sdapi/v1/txt2img", json=body)  # the loaded pipeline refuses it
    assert loaded.status_code == 422 and "tiling" in loaded.json()["detail"], loaded.text
    worker = client.app.state.worker
    monkeypatch.setattr(worker, "loader", lambda *args, **kw: pytest.fail("a model loaded"))
    for name in ("flux1-dev-Q8_0", "sd3"):
        response = client.post("/sdapi/v1/txt2img", json={
            **body, "override_settings": {"sd_model_checkpoint": name}})
        assert response.status_code == 422 and response.json() == loaded.json(), name
    assert worker.model.name == "flux" and worker.planned.name == "flux"
