"""bench.load's load phase, cheap: 8 clients x 2 requests against a server on a tiny model;
every answer 200 and the picture its seed makes alone, host memory flat."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
pytest.importorskip("diffusers", reason="tiny test models are built with diffusers")

import gpucore

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)


@pytest.mark.slow
def test_concurrent_clients_get_their_seeds_pictures_and_memory_stays_flat(
        tmp_path: Path) -> None:
    from sd_tiny import write_pipeline
    from server_support import PROMPT, live_server

    from bench.load import hammer, host_rss_mib
    from diffusion.server import create_app

    app = create_app(model=write_pipeline(tmp_path / "tiny"), queue_size=32)
    samples: list[float] = []
    with live_server(app) as url:
        # cfg_scale 1: one UNet pass a picture, not two (the queue and the seeds are under
        # test; guided pictures' memory is test_bench_flatness's)
        result = hammer(url, {"prompt": PROMPT, "steps": 1, "cfg_scale": 1}, [1, 2], clients=8,
                        requests=2,
                        sample=lambda: samples.append(host_rss_mib(os.getpid())))
        app.state.worker.stop()
    assert result["done"] == 16 and result["errors"] == 0 and result["wrong"] == 0, result
    assert samples[1] - samples[0] < 64, f"host memory grew {samples[0]:.0f} -> {samples[1]:.0f}"
