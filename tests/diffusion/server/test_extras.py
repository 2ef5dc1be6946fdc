"""The Extras API (/sdapi/v1/upscalers, extra-single-image, extra-batch-images) as the WebUI
answers it, and hires fix by upscaler name, with a tiny random Real-ESRGAN compact model."""

from __future__ import annotations

from concurrent.futures import Future
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
torch = pytest.importorskip("torch", reason="test-only reference (extra: reference)")

from fastapi import FastAPI  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from PIL import Image  # noqa: E402
from server_support import pixels, png_b64, write_upscaler  # noqa: E402

from diffusion.server.api.limits import add_error_handlers  # noqa: E402
from diffusion.server.api.routers import extras  # noqa: E402
from diffusion.upscalers import models  # noqa: E402
from diffusion.upscalers.interpolation import HiresFix, upscale_image  # noqa: E402


class _InlineWorker:
    """The worker's `submit`, run at once (the queue itself is the worker tests' business)."""

    device = None  # the calling worker's device: None, the upscalers' own

    def submit(self, run: Any, *, exclusive: bool = False, task: str | None = None) -> Future:
        future: Future = Future()
        try:
            future.set_result(run())
        except Exception as error:  # handed to the awaiting route, as a worker does
            future.set_exception(error)
        return future


@pytest.fixture
def upscalers(tmp_path: Path, first_device: Any) -> Any:
    before = dict(models.MODEL_UPSCALERS)  # the process-wide registry, restored after
    models.MODEL_UPSCALERS.clear()
    write_upscaler(tmp_path / "realesr-animevideov3.pth")
    models.register_upscaler_dir(tmp_path, device=first_device)
    yield tmp_path
    models.MODEL_UPSCALERS.clear()
    models.MODEL_UPSCALERS.update(before)


@pytest.fixture
def client(upscalers: Path) -> Any:
    app = FastAPI()
    add_error_handlers(app)
    app.state.server = SimpleNamespace(worker=_InlineWorker(), queue_size=1)  # what _run reads
    app.include_router(extras.api, prefix="/sdapi/v1")
    with TestClient(app) as test_client:
        yield test_client


def _picture(width: int = 24, height: int = 20) -> Image.Image:
    rng = np.random.default_rng(1)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def test_upscalers_listing(client: Any, upscalers: Path) -> None:
    listing = client.get("/sdapi/v1/upscalers").json()
    assert [item["name"] for item in listing] == ["None", "Lanczos", "Nearest",
                                                  "R-ESRGAN AnimeVideo"]
    assert listing[-1]["model_path"] == str(upscalers / "realesr-animevideov3.pth")
    assert listing[-1]["scale"] == 4 and set(listing[0]) == {
        "name", "model_name", "model_path", "model_url", "scale"}
    latent = [item["name"] for item in client.get("/sdapi/v1/latent-upscale-modes").json()]
    assert latent[:2] == ["Latent", "Latent (antialiased)"] and "Latent (nearest-exact)" in latent
    assert client.get("/sdapi/v1/realesrgan-models").json() == [
        {"name": "R-ESRGAN AnimeVideo", "path": str(upscalers / "realesr-animevideov3.pth"),
         "scale": 4}]


def test_extra_single_and_batch(client: Any) -> None:
    picture = _picture()
    # what webuiapi's extra_single_image sends (its defaults), with our upscaler by name
    body = {"resize_mode": 0, "show_extras_results": True, "gfpgan_visibility": 0,
            "codeformer_visibility": 0, "codeformer_weight": 0, "upscaling_resize": 2,
            "upscaling_resize_w": 512, "upscaling_resize_h": 512, "upscaling_crop": True,
            "upscaler_1": "R-ESRGAN AnimeVideo", "upscaler_2": "None",
            "extras_upscaler_2_visibility": 0, "upscale_first": False,
            "image": png_b64(picture)}
    single = client.post("/sdapi/v1/extra-single-image", json=body)
    assert single.status_code == 200, single.text
    got = pixels(single.json()["image"])
    # the network at 4x, then Lanczos to 2x (the WebUI's Upscaler.upscale)
    want = models.MODEL_UPSCALERS["R-ESRGAN AnimeVideo"].upscale(np.asarray(picture), 2)
    assert got.shape == (40, 48, 3) and np.array_equal(got, want)
    assert "R-ESRGAN AnimeVideo" in single.json()["html_info"]
    # resize to 40x40 covering, center-cropped; upscaler 2 blended at half
    crop = {**body, "resize_mode": 1, "upscaling_resize_w": 40, "upscaling_resize_h": 40,
            "upscaler_2": "Nearest", "extras_upscaler_2_visibility": 0.5}
    assert pixels(client.post("/sdapi/v1/extra-single-image", json=crop).json()[
        "image"]).shape == (40, 40, 3)
    batch = client.post("/sdapi/v1/extra-batch-images", json={
        **{k: v for k, v in body.items() if k != "image"}, "upscaler_1": "Lanczos",
        "imageList": [{"data": png_b64(picture), "name": "a.png"},
                      {"data": png_b64(_picture(16, 16)), "name": "b.png"}]})
    assert [pixels(b).shape for b in batch.json()["images"]] == [(40, 48, 3), (32, 32, 3)]
    bad = client.post("/sdapi/v1/extra-single-image", json={**body, "upscaler_1": "ESRGAN_4x"})
    assert bad.status_code == 422 and "R-ESRGAN AnimeVideo" in bad.text


def test_hires_fix_by_upscaler_name(upscalers: Path) -> None:
    hires = HiresFix(scale=1.5, upscaler="R-ESRGAN AnimeVideo")
    assert not hires.is_latent
    image = np.asarray(_picture(16, 16))
    out = upscale_image(image, hires.target(16, 16), hires.upscaler)
    assert out.shape == (24, 24, 3)
    with pytest.raises(ValueError, match=r"unknown hires upscaler.*R-ESRGAN AnimeVideo"):
        HiresFix(upscaler="R-ESRGAN 4x+")


def test_resize_to_a_size_off_the_multiple_of_8() -> None:
    """resize_mode 1 with crop gives exactly the size asked, as the WebUI's paste onto a
    canvas of that size: 42x24 from 21x12 is a 40x24 upscale centred between black columns."""
    picture = np.random.default_rng(4).integers(0, 256, (12, 21, 3), dtype=np.uint8)
    options = extras.ExtrasSingleRequest(resize_mode=1, upscaling_resize_w=42,
                                         upscaling_resize_h=24, upscaler_1="Lanczos")
    got = extras._upscale(picture, options, None)
    assert got.shape == (24, 42, 3)
    assert np.array_equal(got[:, 1:41], upscale_image(picture, (40, 24), "Lanczos"))
    assert not got[:, [0, 41]].any()


def test_upscaler_1_none_leaves_the_picture(client: Any) -> None:
    """upscaler_1 "None" (the request's default): the WebUI's Extras upscales nothing, upscaler
    2 included, and answers the picture as sent, not a Lanczos enlargement."""
    picture = _picture()
    got = client.post("/sdapi/v1/extra-single-image", json={
        "image": png_b64(picture), "upscaling_resize": 2, "upscaler_2": "Nearest",
        "extras_upscaler_2_visibility": 0.5})
    assert got.status_code == 200, got.text
    assert np.array_equal(pixels(got.json()["image"]), np.asarray(picture))
