"""`serve`'s warm-up: a first picture drawn as the model loads, so that the first request
builds no kernel (and records its captures no more than the second would)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
pytest.importorskip("diffusers", reason="tiny test models are built with diffusers")

from fastapi.testclient import TestClient
from server_support import PROMPT

import gpucore
from diffusion.cli.main import build_parser
from diffusion.cli.serve import server_settings
from diffusion.server import create_app

pytestmark = pytest.mark.usefixtures("cache_home")  # the kernel lists go to a private cache


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sd_tiny import write_pipeline

    path = tmp_path_factory.mktemp("warmup") / "tiny"
    write_pipeline(path)
    return path


def _first_request_builds(model: Path, outputs: Path, info: gpucore.AdapterInfo,
                          warmup: bool) -> tuple[int, int]:
    """(pipelines built while loading, pipelines the first request built), on a Device of
    its own (a fresh pipeline cache, as in a new process)."""
    device = gpucore.Device(info)
    app = create_app(model=model, outputs=outputs, devices=[device], warmup=warmup)
    loaded = device.pipelines_created
    with TestClient(app) as client:
        response = client.post("/sdapi/v1/txt2img", json={"prompt": PROMPT, "steps": 3})
        assert response.status_code == 200, response.text
    return loaded, device.pipelines_created - loaded


def test_the_first_request_builds_no_kernel(model: Path, tmp_path: Path,
                                            first_device: gpucore.Device,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    loaded, first = _first_request_builds(model, tmp_path, first_device.info, warmup=True)
    assert "warmed up tiny in" in capsys.readouterr().err
    assert first == 0
    unwarmed = gpucore.Device(first_device.info)
    create_app(model=model, outputs=tmp_path, devices=[unwarmed], warmup=False).state.worker.stop()
    assert loaded > unwarmed.pipelines_created  # the warm-up built them, not the load


def test_serve_warms_up_unless_told_not_to() -> None:
    parser = build_parser()
    assert server_settings(parser.parse_args(["serve"])).warmup
    assert not server_settings(parser.parse_args(["serve", "--no-warmup"])).warmup
