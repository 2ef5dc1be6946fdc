"""A thread server's interrogators (DeepDanbooru, the CLIP interrogator's CLIP and BLIP) on the
device of the worker that asks (serve with `devices`: one worker thread per GPU). Before, each
was read once onto gpucore's default device and every worker interrogated there. Two gpucore
Devices of the one adapter stand in for two GPUs; results equal the single-device ones. The
tiny random files are the interrogate tests' (tests/deepdanbooru_ref.py, blip_ref.py,
clip_interrogate_ref.py)."""

from __future__ import annotations

import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
pytest.importorskip("torch", reason="test-only reference (extra: reference)")
pytest.importorskip("transformers", reason="test-only reference (extra: reference)")

from blip_ref import IMAGE_SIZE, tiny_blip, write_blip
from clip_interrogate_ref import write_clip_model, write_terms
from deepdanbooru_ref import random_deepdanbooru, write_pt
from fastapi import FastAPI
from fastapi.testclient import TestClient
from PIL import Image
from server_support import png_b64

import gpucore
from diffusion.interrogate import BlipCaptioner, ClipInterrogator, DeepBooru
from diffusion.server.api.limits import add_error_handlers
from diffusion.server.api.routers import interrogate
from diffusion.server.jobs.worker import Worker

TAGS = [f"tag_{i}" for i in range(6)]
# every tag with its score (threshold 0, ranks shown): the text carries the network's numbers;
# a short caption: few decoding steps
OPTIONS = {"interrogate_deepbooru_score_threshold": 0.0, "interrogate_return_ranks": True,
           "interrogate_clip_min_length": 1, "interrogate_clip_max_length": 6}


@pytest.fixture(scope="module")
def second(first_device: gpucore.Device) -> gpucore.Device:
    """A second Device of the first adapter: another worker's GPU."""
    return gpucore.Device(first_device.info)


@pytest.fixture(scope="module")
def third(first_device: gpucore.Device) -> gpucore.Device:
    """A third: with `second`, two workers' GPUs, neither of them the default device."""
    return gpucore.Device(first_device.info)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models folder: a shrunken random DeepDanbooru, a tiny CLIPModel, term lists, tiny BLIP."""
    root = tmp_path_factory.mktemp("interrogators")
    (root / "torch_deepdanbooru").mkdir()
    write_pt(random_deepdanbooru(TAGS, shrink=64),
             root / "torch_deepdanbooru" / "model-resnet_custom_v3.pt")
    write_clip_model(root / "CLIP")
    write_terms(root / "interrogate")
    write_blip(root / "BLIP", tiny_blip())
    return root


def _interrogators(root: Path) -> tuple[DeepBooru, ClipInterrogator]:
    """Fresh interrogators of the files, as the server makes them (no device: each call names
    its own, or takes the default device's)."""
    blip = BlipCaptioner(root / "BLIP", image_size=IMAGE_SIZE)
    return DeepBooru(root / "torch_deepdanbooru"), ClipInterrogator(
        root / "CLIP", root / "interrogate", blip=blip)


def _on(*networks: Any) -> set[int]:
    """The ids of the devices the networks' weights live on."""
    return {id(w.device) for network in networks for w in network.parameters()}


def _picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (37, 45, 3), dtype=np.uint8))


def test_each_device_reads_and_runs_its_own_networks(first_device: Any, second: Any,
                                                     files: Path) -> None:
    """One network per device, each read once, its weights there; the same tags and caption
    from both; a call naming no device keeps the default device's (single-device servers)."""
    booru, clip = _interrogators(files)
    picture = _picture(1)
    here, there = booru.scores(picture, first_device), booru.scores(picture, second)
    np.testing.assert_allclose(here, there, atol=1e-6)
    assert np.abs(here - booru.scores(_picture(2), second)).max() > 0.01  # the picture matters
    assert booru.model(second) is booru.model(second)  # read once
    assert {id(w.device) for w in booru.model(second).weights.values()} == {id(second)}
    assert {id(w.device) for w in booru.model(first_device).weights.values()} == \
        {id(first_device)}
    assert booru._networks.devices() == [first_device, second]
    assert booru.model() is booru.model(gpucore.default_device())

    text = clip.caption(picture, OPTIONS, second)
    assert text == clip.caption(picture, OPTIONS, first_device)
    assert text != clip.caption(_picture(2), OPTIONS, second)  # the picture matters
    assert text.count(", (") >= 3  # BLIP's caption, then the ranked terms
    for device in (first_device, second):
        vision, encoder, _ = clip.models(device)
        assert _on(vision, encoder, clip.blip.load(device)[0]) == {id(device)}
    assert clip._networks.devices() == clip.blip._networks.devices() == [second, first_device]
    clip.forget()  # unload-checkpoint: every device's
    booru.forget()
    assert not clip._networks.devices() and not clip.blip._networks.devices()
    assert not booru._networks.devices()


def test_the_route_interrogates_on_its_workers_device(second: Any, third: Any,
                                                      files: Path) -> None:
    """One worker busy, /sdapi/v1/interrogate runs on the other: DeepDanbooru, CLIP and BLIP
    read on its device alone (not the default device, which neither worker has), the texts
    the single-device ones."""
    booru, clip = _interrogators(files)
    worker = Worker(lambda path, **where: None, devices=[second, third])
    app = FastAPI()
    add_error_handlers(app)
    app.state.server = SimpleNamespace(worker=worker, queue_size=4, options=OPTIONS,
                                       deepbooru=booru, clip_interrogator=clip)
    app.include_router(interrogate.api, prefix="/sdapi/v1")
    started, gate = threading.Event(), threading.Event()
    held: list[Any] = []  # the busy worker's device (either thread may take the job)
    busy = worker.submit(lambda: (held.append(worker.device), started.set(), gate.wait(30)))
    picture = _picture(3)
    try:
        assert started.wait(30)
        with TestClient(app) as client:
            answers = [client.post("/sdapi/v1/interrogate",
                                   json={"image": png_b64(picture), "model": model})
                       for model in ("deepdanbooru", "clip")]
        assert [answer.status_code for answer in answers] == [200, 200], answers[-1].text
        other = [third] if held == [second] else [second]
        assert booru._networks.devices() == other
        assert clip._networks.devices() == clip.blip._networks.devices() == other
    finally:
        gate.set()
        busy.result(30)
        worker.stop()
    single = _interrogators(files)  # a single-device server's: the default device
    tags = answers[0].json()["caption"]
    assert tags == single[0].tag(picture, OPTIONS) and tags.count(":") == len(TAGS)
    assert answers[1].json()["caption"] == single[1].caption(picture, OPTIONS)
