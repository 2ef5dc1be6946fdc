"""/sdapi/v1/unload-checkpoint frees what jobs load beside their model, not only the model.

One server: a txt2img job with restore_faces (GFPGAN with facexlib's detector and parser), an
ADetailer unit (a tiny YOLOv8) and TAESD live previews, a /controlnet/detect with
lineart_anime (a narrow random U-Net), a DeepDanbooru interrogation (a shrunken one), a CLIP
one (tiny random CLIP and BLIP) and an Extras upscale by a model (a tiny Real-ESRGAN compact),
then an unload: the face restorers, ADetailer's models, the previews' decoders, the
preprocessors' networks, the interrogators' (DeepDanbooru, CLIP, BLIP) and the upscaler's are
dropped, and the device holds what it held before the server loaded anything but a few bytes
of gpustd's per-device constants (the model's own share of the unload:
test_server_processes).

A worker process (serve --devices): two jobs that read ADetailer's detector as a unit does,
through the models the job carries, read it once (the pickled ADetailerModels is that
process's own, diffusion.process_shared); a DeepDanbooru interrogation runs there too, a job
reads the face restorers and the CLIP interrogator's CLIP and BLIP through the caches it
carries, and the unload forgets all of them there. (The jobs read those networks without
drawing: a picture would build every kernel of the model again in the new process, seconds on
CI's llvmpipe, for nothing the pickling does not already show; the thread server's test above
draws with them.)
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
pytest.importorskip("diffusers", reason="tiny test models are built with diffusers")
pytest.importorskip("torch", reason="test-only reference (extra: reference)")
pytest.importorskip("transformers", reason="the tiny CLIP and BLIP are built with it")

from blip_ref import tiny_blip, write_blip
from clip_interrogate_ref import write_clip_model, write_terms
from controlnet_aux_ref import write_lineart_anime
from deepdanbooru_ref import planted_deepdanbooru, write_pt
from face_refs import write_face_models
from PIL import Image
from sd_tiny import write_pipeline
from server_support import png_b64, write_taesd, write_upscaler
from yolo_tiny import write_tiny_yolo

import gpucore
from diffusion.loaders.control import annotator_file
from diffusion.preprocessors import annotators
from diffusion.server import create_app
from diffusion.upscalers.models import MODEL_UPSCALERS

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)

UNIT = dict(ad_model="face_tiny.pt", ad_confidence=0.05, ad_mask_max_ratio=0.2,
            ad_mask_k_largest=1, ad_denoising_strength=1.0)
ADETAILER = {"prompt": "a face", "steps": 1, "width": 64, "height": 64, "seed": 3,
             "alwayson_scripts": {"ADetailer": {"args": [True, False, UNIT]}}}
# BLIP's shortest caption (the WebUI's defaults decode 24 to 48 tokens): a fast test
SHORT_CAPTION = {"interrogate_clip_min_length": 1, "interrogate_clip_max_length": 6}


@pytest.fixture
def upscalers() -> Iterator[None]:
    """The process-wide MODEL_UPSCALERS (the server's loader registers --upscaler-dir's
    there), as it was before, after the test."""
    before = dict(MODEL_UPSCALERS)
    yield
    MODEL_UPSCALERS.clear()
    MODEL_UPSCALERS.update(before)


def _picture() -> str:
    rng = np.random.default_rng(0)
    return png_b64(Image.fromarray(rng.integers(0, 256, (24, 32, 3), dtype=np.uint8)))


def _models(root: Path) -> Path:
    """The models folder: the tiny model, its ADetailer model, the face restorers,
    DeepDanbooru, and the CLIP interrogator's CLIP, term lists and BLIP."""
    models = root / "models"
    write_pipeline(models / "tiny-sd")
    for folder in ("adetailer", "torch_deepdanbooru"):
        (models / folder).mkdir()
    write_tiny_yolo(models / "adetailer" / "face_tiny.pt")
    write_face_models(models)
    write_pt(planted_deepdanbooru({"1girl": 1, "cat": -1}, shrink=64),
             models / "torch_deepdanbooru" / "model-resnet_custom_v3.pt")
    write_clip_model(models / "CLIP")
    write_terms(models / "interrogate")
    write_blip(models / "BLIP", tiny_blip())
    return models


def test_unload_frees_what_the_jobs_loaded(tmp_path: Path, upscalers: None,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient

    models = _models(tmp_path)
    write_taesd(models / "VAE-approx")
    write_lineart_anime(tmp_path / "annotators")
    monkeypatch.setenv(annotator_file.ENV_VAR, str(tmp_path / "annotators"))
    write_upscaler(tmp_path / "ESRGAN" / "realesr-animevideov3.pth")
    device = gpucore.default_device()  # the worker's (it was given no devices)
    device.synchronize()
    before = device.memory_stats().allocated
    app = create_app(model=models / "tiny-sd", models_dir=models, outputs=tmp_path / "outputs",
                     upscaler_dir=tmp_path / "ESRGAN")
    state = app.state.server
    with TestClient(app) as client:
        client.post("/sdapi/v1/options", json={"show_progress_type": "TAESD",
                                               "face_restoration_model": "GFPGAN",
                                               **SHORT_CAPTION})
        response = client.post("/sdapi/v1/txt2img", json={**ADETAILER, "restore_faces": True})
        assert response.status_code == 200, response.text
        for route, body in (
                ("/controlnet/detect", {"controlnet_module": "lineart_anime",
                                        "controlnet_processor_res": 64,
                                        "controlnet_input_images": [_picture()]}),
                ("/sdapi/v1/interrogate", {"image": _picture(), "model": "deepdanbooru"}),
                ("/sdapi/v1/interrogate", {"image": _picture(), "model": "clip"}),
                ("/sdapi/v1/extra-single-image", {"image": _picture(), "upscaling_resize": 2,
                                                  "upscaler_1": "R-ESRGAN AnimeVideo"})):
            response = client.post(route, json=body)
            assert response.status_code == 200, (route, response.text)
        upscaler = MODEL_UPSCALERS["R-ESRGAN AnimeVideo"]

        def kept() -> list[Any]:
            clip = state.clip_interrogator
            return [state.faces._models, state.adetailer._loaded, state.previews._networks,
                    annotators._models, state.deepbooru._networks.devices(),
                    clip._networks.devices(), clip.blip._networks.devices(), upscaler._models]

        assert all(kept()), kept()  # the jobs used each
        assert client.post("/sdapi/v1/unload-checkpoint").json() == {}
        device.synchronize()
        left = device.memory_stats().allocated - before
        assert not any(kept()), kept()
        # what stays: the few 256-byte constants gpustd keeps per device once the model's
        # first forward passes made them; each network here holds tens of KiB or more
        assert left < 4096, left


def test_a_worker_process_keeps_its_networks_until_the_unload(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    pytest.importorskip("cloudpickle", reason="the multi-process server sends jobs with it")
    models = _models(tmp_path)
    adapter = str(gpucore.Device.auto().info.index)
    app = create_app(model=models / "tiny-sd", models_dir=models, outputs=tmp_path / "outputs",
                     worker_adapters=[adapter])
    state = app.state.server
    # there: the process's own
    detectors, booru, faces = state.adetailer, state.deepbooru, state.faces
    clip = state.clip_interrogator

    def held() -> tuple[list[bool], list[bool]]:
        """In the worker process: each detector it keeps, whether an earlier call saw it
        (marked: a detector read again is a new object), and whether DeepDanbooru, the face
        restorers, CLIP and BLIP hold networks."""
        loaded = list(detectors._loaded.values())
        seen = [getattr(yolo, "seen", False) for yolo in loaded]
        for yolo in loaded:
            yolo.seen = True
        return seen, [bool(booru._networks.devices()), bool(faces._models),
                      bool(clip._networks.devices()), bool(clip.blip._networks.devices())]

    def unit() -> tuple[list[bool], list[bool]]:
        """In the worker process, as ADetailer's pass reads its unit's model (through the
        job's own `detectors`, pickled as the pass carries them): what `held` says then."""
        detectors.load(detectors.find(UNIT["ad_model"]), gpucore.default_device())
        return held()

    def read() -> tuple[list[bool], list[bool]]:
        """In the worker process, as restore_faces and a CLIP interrogation read their
        networks (through the job's own caches): what `held` says then."""
        faces.restorer("GFPGAN")
        clip.models()
        clip.blip.load()
        return held()

    with TestClient(app) as client:
        found = [state.worker.submit(unit).result() for _ in range(2)]
        response = client.post("/sdapi/v1/interrogate",
                               json={"image": _picture(), "model": "deepdanbooru"})
        assert response.json() == {"caption": "1girl"}, response.text
        found.append(state.worker.submit(held).result())
        found.append(state.worker.submit(read).result())
        assert client.post("/sdapi/v1/unload-checkpoint").json() == {}
        found.append(state.worker.submit(held).result())
    # read by the first job, kept for the second; DeepDanbooru read there, then the face
    # restorers, CLIP and BLIP; all forgotten
    nothing = [False] * 4
    assert found == [([False], nothing), ([True], nothing), ([True], [True, *nothing[1:]]),
                     ([True], [True] * 4), ([], nothing)]
