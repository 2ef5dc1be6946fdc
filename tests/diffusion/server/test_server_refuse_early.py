"""Requests refused before they are queued, with the line the worker would answer after the
queue (and a load): what the family of the model loaded now does not take (from the loaded
pipeline's own Capabilities), a refiner_checkpoint that cannot take over from the model (an SD
model's latents, an inpainting request; told from its files, before it loads), an
hr_checkpoint_name of no model or another one. Stand-in pipelines of model files that hold
only their headers: each refuses in `generate` as the loaded pipelines do, and counts its
calls, so a refused request is seen never to reach the worker."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from flow_headers import flux_shapes, write_header
from PIL import Image
from sd_headers import write_sd_folder
from server_support import StandInPipeline, png_b64

from diffusion.pipelines.families import capabilities_of

pytest.importorskip("fastapi", reason="the server extra is not installed")
pytestmark = pytest.mark.nodevice

SMALL = {"prompt": "a red circle", "width": 16, "height": 16, "steps": 2, "seed": 5,
         "sampler_name": "Euler"}
TXT2IMG = "/sdapi/v1/txt2img"


class Told(StandInPipeline):
    """The stand-in pipeline of the model at `path`: its family's Capabilities as the registry
    tells them (what the loaded pipeline's are: test_capabilities_before_load.py), refusing in
    `generate` as a loaded pipeline does; `calls` counts the requests that reached it."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        told = capabilities_of(path)
        assert told is not None
        self.capabilities, self.family, self.calls = told, told.family, 0

    def generate(self, request: Any, *, observer: Any) -> Any:
        self.calls += 1
        self.capabilities.refuse(request)
        return super().generate(request, observer=observer)


def _client(model: Path, models: Path) -> tuple[Any, list[Told]]:
    from fastapi.testclient import TestClient

    from diffusion.server import create_app

    pipes: list[Told] = []

    def loader(path: Path, **where: Any) -> Told:
        pipes.append(Told(Path(path)))
        return pipes[-1]
    return TestClient(create_app(model=model, models_dir=models, loader=loader)), pipes


def test_the_loaded_models_refusals_come_before_the_queue(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """FLUX.1 dev loaded: a sampler it has not, a schedule type it has not for the hires
    pass on the same checkpoint (hr_checkpoint_name), and a refiner are 422 with the loaded
    pipeline's line and nothing queued; with the early check taken away the same bodies
    reach the worker and get the same line from it (as they did before this check)."""
    from diffusion.server.api.routers import generate

    models = tmp_path / "models"
    models.mkdir()
    flux = write_header(models / "flux1-dev.safetensors", flux_shapes())
    hires = {**SMALL, "enable_hr": True, "hr_scale": 2, "denoising_strength": 0.5,
             "hr_checkpoint_name": "flux1-dev.safetensors", "hr_scheduler": "Karras"}
    refused = [({**SMALL, "sampler_name": "DDIM"},
                "sampler DDIM is not defined for flow-matching models here"),
               (hires, "hires schedule type Karras is not defined for flow-matching models here"),
               ({**SMALL, "refiner_checkpoint": "flux1-dev.safetensors"},
                "a refiner: not supported for flow-matching models yet; leave it out")]
    client, pipes = _client(flux, models)
    with client:
        assert client.post(TXT2IMG, json=SMALL).status_code == 200  # the stand-in runs
        pipe = pipes[0]
        assert pipe.calls == 1
        early = []
        for body, says in refused:
            response = client.post(TXT2IMG, json=body)
            assert response.status_code == 422, response.text
            early.append(response.json()["detail"])
            assert early[-1].startswith(says) and "\n" not in early[-1]
        assert pipe.calls == 1 and len(pipes) == 1
        assert client.app.state.worker.pending() == 0
        monkeypatch.setattr(generate, "_refuse_early", lambda *args: None)
        for number, ((body, _), said) in enumerate(zip(refused, early, strict=True), 2):
            response = client.post(TXT2IMG, json=body)  # the worker's own answer
            assert response.status_code == 422 and response.json()["detail"] == said
            assert pipe.calls == number


def test_a_refiner_or_hires_checkpoint_is_refused_before_anything_loads(
        tmp_path: Path) -> None:
    """SDXL loaded: an SD 1.x refiner, the SDXL refiner for an inpainting request or after a
    switch to SD 1.x, an unknown refiner, and hr_checkpoint_name naming no model or another
    one: 422 naming the option, the refiner never loaded and the worker never run; the SDXL
    refiner on a txt2img request loads and runs, and the SDXL model named as its own refiner
    runs as one without a second load."""
    models = tmp_path / "models"
    sdxl = write_sd_folder(models / "sdxl", "sdxl")
    write_sd_folder(models / "sdxl-refiner", "sdxl-refiner")
    write_sd_folder(models / "sd1", "sd1")
    rng = np.random.default_rng(0)
    picture = png_b64(Image.fromarray(rng.integers(0, 256, (16, 16, 3), np.uint8)))
    mask = png_b64(Image.new("L", (16, 16), 255))
    hires = {**SMALL, "enable_hr": True, "hr_scale": 2, "denoising_strength": 0.5}
    latents = ("is a {} model and cannot continue the latents of a {} model; an SDXL base "
               "hands over to the SDXL refiner (or another SDXL model)")
    refused = [
        (TXT2IMG, {**SMALL, "refiner_checkpoint": "sd1"},
         "refiner_checkpoint 'sd1' " + latents.format("sd1", "sdxl")),
        (TXT2IMG, {**SMALL, "refiner_checkpoint": "sdxl-refiner",
                   "override_settings": {"sd_model_checkpoint": "sd1"}},
         "refiner_checkpoint 'sdxl-refiner' " + latents.format("sdxl-refiner", "sd1")),
        ("/sdapi/v1/img2img", {**SMALL, "refiner_checkpoint": "sdxl-refiner",
                               "init_images": [picture], "mask": mask},
         "refiner_checkpoint 'sdxl-refiner': the refiner takes over txt2img and img2img; "
         "inpainting runs without one: leave it out"),
        (TXT2IMG, {**SMALL, "refiner_checkpoint": "nope"},
         "refiner_checkpoint 'nope' is not one of this server's models"),
        (TXT2IMG, {**hires, "hr_checkpoint_name": "nope"},
         "hr_checkpoint_name 'nope' is not one of this server's models"),
        (TXT2IMG, {**hires, "hr_checkpoint_name": "sd1"},
         "hr_checkpoint_name 'sd1': a hires pass on another checkpoint than the first "
         "pass's is not supported here")]
    client, pipes = _client(sdxl, models)
    with client:
        for route, body, says in refused:
            response = client.post(route, json=body)
            assert response.status_code == 422, response.text
            assert response.json()["detail"].startswith(says), response.json()["detail"]
        assert [pipe.family for pipe in pipes] == ["sdxl"] and pipes[0].calls == 0
        assert client.app.state.worker.pending() == 0
        response = client.post(TXT2IMG, json={**SMALL, "refiner_checkpoint": "sdxl-refiner"})
        assert response.status_code == 200, response.text
        assert [pipe.family for pipe in pipes] == ["sdxl", "sdxl-refiner"]
        assert pipes[0].calls == 1
        assert pipes[0].requests[-1].refiner is pipes[1]
        # the loaded model named as its own refiner takes over from itself, not loaded again
        response = client.post(TXT2IMG, json={**SMALL, "refiner_checkpoint": "sdxl"})
        assert response.status_code == 200, response.text
        assert [pipe.family for pipe in pipes] == ["sdxl", "sdxl-refiner"]
        assert pipes[0].calls == 2 and pipes[0].requests[-1].refiner is pipes[0]


def test_a_model_loads_as_its_own_refiner_without_modules() -> None:
    """ModelEntry.loads_as, what the route asks before it takes the loaded model as the
    refiner: its own file, spelled any way, with neither module files (a VAE chosen too) nor
    a base; not another file."""
    from dataclasses import replace

    from diffusion.server.catalog.models_dir import ModelEntry

    entry = ModelEntry(path=Path("/models/sdxl"), name="sdxl", sha256="0" * 64)
    assert entry.loads_as(Path("/models/../models/sdxl")) and entry.loads_as(entry.path)
    assert not entry.loads_as(Path("/models/sdxl-refiner"))
    for other in (replace(entry, vae=Path("/models/VAE/sdxl-vae.safetensors")),
                  replace(entry, modules=(Path("/models/text_encoder/clip_l.safetensors"),)),
                  replace(entry, base=Path("/models/sdxl-base"))):
        assert not other.loads_as(entry.path), other
