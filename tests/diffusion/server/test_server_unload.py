"""/sdapi/v1/unload-checkpoint frees what a job loads beside its model, not only the model: a
txt2img job with restore_faces (GFPGAN with facexlib's detector and parser), an ADetailer unit
(a tiny YOLOv8) and TAESD live previews, then an unload: the face restorers, ADetailer's
models and the previews' decoders are dropped, and the device holds what it held before the
server loaded anything but a few bytes of gpustd's per-device constants (the model's own share
of the unload: test_server_processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
pytest.importorskip("diffusers", reason="tiny test models are built with diffusers")
pytest.importorskip("torch", reason="test-only reference (extra: reference)")

from face_refs import write_face_models
from sd_tiny import write_pipeline
from server_support import write_taesd
from yolo_tiny import write_tiny_yolo

import gpucore
from diffusion.faces import restorers_for
from diffusion.server import create_app

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)

UNIT = dict(ad_model="face_tiny.pt", ad_confidence=0.05, ad_mask_max_ratio=0.2,
            ad_mask_k_largest=1, ad_denoising_strength=1.0)


def test_unload_frees_the_faces_detectors_and_previews(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    models = write_face_models(tmp_path / "models")
    model = write_pipeline(models / "tiny-sd")
    (models / "adetailer").mkdir()
    write_tiny_yolo(models / "adetailer" / "face_tiny.pt")
    write_taesd(models / "VAE-approx")
    device = gpucore.default_device()  # the worker's (it was given no devices)
    device.synchronize()
    before = device.memory_stats().allocated
    app = create_app(model=model, models_dir=models, outputs=tmp_path / "outputs")
    state = app.state.server
    with TestClient(app) as client:
        client.post("/sdapi/v1/options", json={"show_progress_type": "TAESD",
                                               "face_restoration_model": "GFPGAN"})
        response = client.post("/sdapi/v1/txt2img", json={
            "prompt": "a face", "steps": 1, "width": 64, "height": 64, "seed": 3,
            "restore_faces": True,
            "alwayson_scripts": {"ADetailer": {"args": [True, False, UNIT]}}})
        assert response.status_code == 200, response.text
        restorers = restorers_for(state.faces, state.worker.slots[0].device)
        kept = (restorers._models, state.adetailer._loaded, state.previews._networks)
        assert all(kept), kept  # the job used each
        assert client.post("/sdapi/v1/unload-checkpoint").json() == {}
        device.synchronize()
        left = device.memory_stats().allocated - before
        assert not any(kept), kept
        # what stays: the few 256-byte constants gpustd keeps per device once the model's
        # first forward passes made them; each network here holds tens of KiB or more
        assert left < 4096, left
        app.state.worker.stop()
