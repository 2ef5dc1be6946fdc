"""Live previews through a live server on a tiny random model: /sdapi/v1/options'
show_progress_type TAESD makes /sdapi/v1/progress's current_image the TAESD decoder's picture
(8 times the latents' size), Full the model's VAE's (the picture's size), Approx NN
VAEApprox's (twice the latents'), live_previews_enable false makes none, and a missing TAESD
file falls back to Approx cheap (1/8 size), saying so once in the log."""

from __future__ import annotations

import base64
import io
import logging
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
torch = pytest.importorskip("torch", reason="test-only reference (extra: reference)")
diffusers = pytest.importorskip("diffusers", reason="tiny test models are built with diffusers")

import httpx  # noqa: E402
from PIL import Image  # noqa: E402
from server_support import (  # noqa: E402
    PROMPT,
    Background,
    CachedLoader,
    live_server,
    wait_for,
    wait_for_step,
    write_taesd,
)

import gpucore  # noqa: E402
from diffusion.server import create_app  # noqa: E402

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)

# 24x40: the tiny model's VAE halves (latents 12x20), TAESD makes 8 times its latents;
# long enough to be caught mid-run
SLOW = {"prompt": PROMPT, "steps": 150, "seed": 1, "width": 24, "height": 40}


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sd_tiny import write_pipeline

    return write_pipeline(tmp_path_factory.mktemp("server-previews") / "tiny")


def _write_vae_approx(folder: Path) -> None:
    """A random VAEApprox as the WebUI's models/VAE-approx/model.pt holds it."""
    generator = torch.Generator().manual_seed(0)
    state, inputs = {}, 4
    for index, (out, side) in enumerate(((8, 7), (16, 5), (32, 3), (64, 3), (32, 3), (16, 3),
                                         (8, 3), (3, 3)), start=1):
        state[f"conv{index}.weight"] = torch.randn(out, inputs, side, side,
                                                   generator=generator) * 0.1
        state[f"conv{index}.bias"] = torch.zeros(out)
        inputs = out
    torch.save(state, folder / "model.pt")


def _progress(url: str) -> Any:
    return lambda path: httpx.get(url + path, timeout=30)


def _size(progress: dict[str, Any]) -> tuple[int, int]:
    return Image.open(io.BytesIO(base64.b64decode(progress["current_image"]))).size


def _run(url: str, options: dict[str, Any], step: int = 1,
         image: bool = False) -> dict[str, Any]:
    """Set `options`, start a slow job, the progress seen at `step` (and, with `image`, once
    it has a preview: the step counts before its preview is drawn); the job interrupted."""
    assert httpx.post(url + "/sdapi/v1/options", json=options, timeout=60).status_code == 200
    job = Background(lambda: httpx.post(url + "/sdapi/v1/txt2img", json=SLOW, timeout=300))
    try:
        seen = wait_for_step(_progress(url), step=step)
        if image:
            wait_for(lambda: seen.update(_progress(url)("/sdapi/v1/progress").json())
                     or seen["current_image"] is not None, what="a preview")
        return seen
    finally:
        httpx.post(url + "/sdapi/v1/interrupt")
        assert job.result().status_code == 200


def test_taesd_preview_and_disabled(model: Path, tmp_path: Path) -> None:
    write_taesd(tmp_path / "VAE-approx")
    app = create_app(model=model, loader=CachedLoader(), vae_approx_dir=tmp_path / "VAE-approx")
    with live_server(app) as url:
        try:
            assert httpx.get(url + "/sdapi/v1/options").json()["show_progress_type"] == \
                "Approx cheap"
            taesd = _run(url, {"show_progress_type": "TAESD", "show_progress_every_n_steps": 2},
                         step=2, image=True)
            assert _size(taesd) == (8 * 12, 8 * 20)
            # Full: the model's own VAE, the picture's size; Approx NN: twice the latents'
            full = _run(url, {"show_progress_type": "Full", "show_progress_every_n_steps": 1},
                        image=True)
            assert _size(full) == (24, 40)
            _write_vae_approx(tmp_path / "VAE-approx")
            assert _size(_run(url, {"show_progress_type": "Approx NN"}, image=True)) == (24, 40)
            off = _run(url, {"live_previews_enable": False})
            assert off["current_image"] is None and off["state"]["sampling_step"] >= 1
            rare = _run(url, {"live_previews_enable": True, "show_progress_every_n_steps": 999})
            assert rare["current_image"] is None
            bad = httpx.post(url + "/sdapi/v1/options", json={"show_progress_type": "Fast"})
            assert bad.status_code in (400, 422) and "show_progress_type" in bad.text
        finally:
            app.state.worker.stop()


def test_missing_taesd_file_falls_back_to_approx_cheap(model: Path, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    app = create_app(model=model, loader=CachedLoader(), vae_approx_dir=tmp_path)
    with live_server(app) as url, caplog.at_level(logging.WARNING):
        try:
            seen = _run(url, {"show_progress_type": "TAESD"}, image=True)
            assert _size(seen) == (12, 20)
        finally:
            app.state.worker.stop()
    said = [r.getMessage() for r in caplog.records if "taesd_decoder" in r.getMessage()]
    assert len(said) == 1 and "Approx cheap" in said[0], said


def test_taesd_preview_from_a_worker_process(model: Path, tmp_path: Path) -> None:
    pytest.importorskip("cloudpickle", reason="the multi-process server sends jobs with it")
    write_taesd(tmp_path / "VAE-approx")
    adapter = str(gpucore.Device.auto().info.index)
    app = create_app(model=model, worker_adapters=[adapter], models_dir=tmp_path)
    with live_server(app) as url:
        try:
            taesd = _run(url, {"show_progress_type": "TAESD"}, image=True)
            assert _size(taesd) == (8 * 12, 8 * 20)
            # found in --models-dir's VAE-approx, which holds no checkpoint
            assert len(httpx.get(url + "/sdapi/v1/sd-models").json()) == 1
        finally:
            app.state.worker.stop()


@pytest.mark.nodevice
def test_preview_options_are_checked_and_files_named_as_the_webui() -> None:
    from diffusion.server.previews import Previews, check_preview_options, taesd_name

    assert [taesd_name(s) for s in ("sd1", "sd2", "sdxl", "sd3", "flux", "chroma", "flux2")] == [
        "taesd_decoder", "taesd_decoder", "taesdxl_decoder", "taesd3_decoder", "taef1_decoder",
        "taef1_decoder", None]
    for bad in ({"live_previews_enable": 1}, {"show_progress_every_n_steps": 2.5},
                {"show_progress_every_n_steps": -2}, {"show_progress_type": "taesd"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            check_preview_options(bad)
    previews = Previews()
    previews.configure({"show_progress_every_n_steps": 3, "show_progress_type": "TAESD"})
    assert [previews.due(step) for step in (1, 3, 6)] == [False, True, True]
    previews.configure({"live_previews_enable": False})
    assert not previews.due(3) and previews.kind == "TAESD"


@pytest.mark.nodevice
def test_full_previews_under_lowvram_draw_as_approx_nn_unless_allowed(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from diffusion.server.previews import Previews, check_preview_options

    decoded: list[Any] = []

    def decode(latents: Any) -> list[Any]:
        decoded.append(latents)
        return [latents[0, :3].transpose(1, 2, 0)]

    previews = Previews(tmp_path)  # no model.pt there: Approx NN falls back to Approx cheap
    previews.configure({"show_progress_type": "Full"})
    latents = torch.zeros(2, 4, 3, 5).numpy()
    with caplog.at_level(logging.WARNING):
        assert previews.picture(latents, latent_space="sd1", device=None, decode=decode,
                                lowvram=True) is None
    assert not decoded and "model.pt" in caplog.text
    previews.configure(check_preview_options({"live_preview_allow_lowvram_full": True}))
    picture = previews.picture(latents, latent_space="sd1", device=None, decode=decode,
                               lowvram=True)
    assert picture.shape == (3, 5, 3) and len(decoded) == 1 and decoded[0].shape == (1, 4, 3, 5)
    with pytest.raises(ValueError, match="live_preview_allow_lowvram_full"):
        check_preview_options({"live_preview_allow_lowvram_full": "yes"})
