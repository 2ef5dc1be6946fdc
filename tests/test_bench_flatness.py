"""bench.flatness, cheap: 20 pictures from a server on a tiny model, one at a time (about
1.3 s each on lavapipe); after a warm-up of 8 the device pool's allocated and reserved bytes
never grow and the host's RSS stays within 32 MiB (the bench's run makes 1000)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
pytest.importorskip("diffusers", reason="tiny test models are built with diffusers")

import gpucore

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)


def test_twenty_pictures_leave_host_and_device_memory_flat(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient
    from sd_tiny import write_pipeline

    from bench.flatness import measure
    from diffusion.server import create_app

    app = create_app(model=write_pipeline(tmp_path / "tiny"), outputs=tmp_path / "outputs")
    try:
        with TestClient(app) as client:
            result = measure(lambda path, body: client.post(path, json=body), client.get,
                             pictures=20, every=4, warmup=8, size=32, steps=1)
    finally:
        app.state.worker.stop()
    assert len(result["samples"]) == 5 and result["samples"][0][2] > 0  # the model's weights
    assert result["flat"], result
