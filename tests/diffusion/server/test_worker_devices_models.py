"""A thread server's side networks on the device of the worker that asks for them (serve with
`devices`: one worker thread per GPU). Before, a model upscaler was read once, on gpucore's
default device, and every worker upscaled there (the Extras route, SD upscale, the hires fix);
the Extras route restored faces on the default device; a second worker's ADetailer detector or
annotator network dropped the first worker's copy (and read it again in turn). Two gpucore
Devices of the one adapter stand in for two GPUs; results equal the single-device ones."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
pytest.importorskip("torch", reason="test-only reference (extra: reference)")

from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from server_support import pixels, png_b64, write_upscaler

import gpucore
from diffusion.pipelines.sd.prepare import Pass, hires_latents
from diffusion.preprocessors import annotators
from diffusion.server.api import adetailer_units
from diffusion.server.api.limits import add_error_handlers
from diffusion.server.api.routers import extras
from diffusion.server.jobs.worker import Worker
from diffusion.upscalers import models
from diffusion.upscalers.interpolation import HiresFix

NAME = "R-ESRGAN AnimeVideo"


@pytest.fixture(scope="module")
def second(first_device: gpucore.Device) -> gpucore.Device:
    """A second Device of the first adapter: another worker's GPU."""
    return gpucore.Device(first_device.info)


@pytest.fixture
def reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The devices the upscaler's network is read onto, the folder registered as the server
    registers it (no device: each call names its own)."""
    before = dict(models.MODEL_UPSCALERS)  # the process-wide registry, restored after
    models.MODEL_UPSCALERS.clear()
    write_upscaler(tmp_path / "realesr-animevideov3.pth")
    models.register_upscaler_dir(tmp_path)
    devices, read = [], models.load_upscaler_model

    def spy(path: Any, **options: Any) -> Any:
        devices.append(options["device"])
        return read(path, **options)
    monkeypatch.setattr(models, "load_upscaler_model", spy)
    yield devices
    models.MODEL_UPSCALERS.clear()
    models.MODEL_UPSCALERS.update(before)


def _weights_on(network: Any) -> set[int]:
    return {id(w.device) for w in network.weights.values()}


def _picture(seed: int = 1, height: int = 20, width: int = 24) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def test_an_upscaler_runs_on_the_device_that_asks(first_device: Any, second: Any,
                                                  reads: list[Any]) -> None:
    """One network per device, each read once, its weights there; the same pixels from
    both; a call naming no device keeps the default device's (single-device servers)."""
    upscaler, image = models.MODEL_UPSCALERS[NAME], _picture()
    here = upscaler.upscale(image, 2, first_device)
    there = upscaler.upscale(image, 2, second)
    assert np.array_equal(here, there) and here.shape == (40, 48, 3)
    assert not np.array_equal(here, upscaler.upscale(_picture(2), 2, second))  # it reads it
    assert reads == [first_device, second]  # once each, the second call's network kept
    assert _weights_on(upscaler.model(first_device)) == {id(first_device)}
    assert _weights_on(upscaler.model(second)) == {id(second)}
    assert upscaler.model() is upscaler.model(gpucore.default_device())
    count = len(reads)
    upscaler.forget()  # unload-checkpoint: every device's
    upscaler.model(second)
    assert reads[count:] == [second]


def test_the_hires_fix_upscales_on_the_pipelines_device(second: Any, reads: list[Any]) -> None:
    """An SD pipeline's hires fix by a model upscaler: on the device its UNet parts name."""
    decoded = _picture(3, 16, 16)
    encoded: list[np.ndarray] = []

    def encode(pixels: np.ndarray, generator: Any, vae: Any = None) -> np.ndarray:
        encoded.append(pixels)
        return np.zeros((1, 4, pixels.shape[2] // 8, pixels.shape[3] // 8), np.float32)
    codec = SimpleNamespace(vae_scale_factor=8, device=second, encode_latents=encode,
                            decode_latents=lambda latents, vae=None: [decoded])
    r = Pass("", "", 2, 7.0, 0, 16, 16, 1, 1, 1.0, "numpy", "txt2img")
    hires = HiresFix(scale=2.0, upscaler=NAME)
    start, after = hires_latents(codec, r, np.zeros((1, 4, 2, 2), np.float32), hires)
    assert reads == [second] and start.shape == (1, 4, 4, 4) and (after.width, after.height) \
        == (32, 32)
    want = models.MODEL_UPSCALERS[NAME].upscale_to(decoded, (32, 32), second)
    assert np.allclose(encoded[0][0].transpose(1, 2, 0), want / 127.5 - 1, atol=1e-6)


class _Faces:
    """Face restorers that record the device each restore runs on (no files)."""

    def __init__(self) -> None:
        self.devices: list[Any] = []

    def check(self, name: str) -> None:
        pass

    def restore(self, rgb: np.ndarray, name: str, *, device: Any = None,
                **options: Any) -> np.ndarray:
        self.devices.append(device)
        return rgb


def test_the_extras_route_upscales_and_restores_on_its_workers_device(
        first_device: Any, second: Any, reads: list[Any]) -> None:
    """One worker busy, an Extras request runs on the other: its upscaler and its face
    restoration on that worker's device, the picture the single-device one."""
    worker = Worker(lambda path, **where: None, devices=[first_device, second])
    faces = _Faces()
    app = FastAPI()
    add_error_handlers(app)
    app.state.server = SimpleNamespace(worker=worker, queue_size=4, faces=faces)
    app.include_router(extras.api, prefix="/sdapi/v1")
    started, gate = threading.Event(), threading.Event()
    held: list[Any] = []  # the device of the worker the first job holds (either may take it)

    def hold() -> None:
        held.append(worker.device)
        started.set()
        gate.wait(30)
    busy = worker.submit(hold)
    try:
        assert started.wait(30)
        free = second if held == [first_device] else first_device
        image = _picture()
        with TestClient(app) as client:
            answer = client.post("/sdapi/v1/extra-single-image", json={
                "upscaler_1": NAME, "upscaling_resize": 2, "gfpgan_visibility": 1,
                "image": png_b64(Image.fromarray(image))})
        assert answer.status_code == 200, answer.text
        assert reads == [free] and faces.devices == [free]
        want = models.MODEL_UPSCALERS[NAME].upscale(image, 2, first_device)
        assert np.array_equal(pixels(answer.json()["image"]), want)
    finally:
        gate.set()
        busy.result(30)
        worker.stop()


@pytest.mark.nodevice
def test_adetailer_detectors_are_kept_per_device(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Two workers' detectors of one file, each read once (before, each device's load dropped
    the other's, and the two read the file in turn); a new version of the file is read again."""
    read: list[Any] = []

    def load(path: Path, device: Any) -> object:
        read.append(device)
        return object()
    monkeypatch.setattr(adetailer_units, "load_yolo", load)
    one, two = object(), object()  # two GPUs (the stand-in reader opens neither)
    path = tmp_path / "face_yolov8n.pt"
    path.write_bytes(b"v1")
    kept = adetailer_units.ADetailerModels(tmp_path)
    first, other = kept.load(path, one), kept.load(path, two)
    assert kept.load(path, one) is first and kept.load(path, two) is other
    assert read == [one, two]
    later = path.stat().st_mtime_ns + 10**9
    os.utime(path, ns=(later, later))
    assert kept.load(path, one) is not first and read == [one, two, one]


@pytest.mark.nodevice
def test_annotator_networks_are_kept_per_device(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The last three annotator files used on each device are kept (openpose_full's three
    networks), the least recently used released first, and another device's never (before:
    three for all devices, so a worker released the networks another was running)."""
    monkeypatch.setattr(annotators, "_models", {})
    monkeypatch.setattr(annotators, "find_annotator",
                        lambda module, subfolder, filename: tmp_path / filename)
    released: list[tuple[str, Any]] = []
    monkeypatch.setattr(annotators.ReplayedNetwork, "release",
                        lambda self: released.append((self.file, self.device)))

    def network(name: str, device: Any) -> Any:
        return annotators.annotator_model("m", "m", name, lambda state, device: SimpleNamespace(
            file=state.name, device=device), device, read=lambda path: path)
    one, two = object(), object()
    mine = [network(name, one) for name in ("a", "b", "c")]
    theirs = network("a", two)
    assert network("a", one) is mine[0] and network("a", two) is theirs and not released
    network("d", one)  # "b" is one's least recently used
    assert released == [("b", one)]
    assert [network(name, one) for name in ("a", "c")] == [mine[0], mine[2]]
    assert network("a", two) is theirs and released == [("b", one)]
