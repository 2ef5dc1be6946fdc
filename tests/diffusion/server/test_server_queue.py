"""The server's queue and worker on a tiny random model: FIFO under a flood of concurrent
requests, the queue bound (503), interrupt and skip with progress and previews, a client that
disconnects, HTTP Basic auth, `serve`'s own errors, and a WebUI API script run unchanged
against a real uvicorn server."""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
pytest.importorskip("diffusers", reason="tiny test models are built with diffusers")

import httpx
from fastapi.testclient import TestClient
from PIL import Image
from server_support import (
    PROMPT,
    Background,
    CachedLoader,
    free_port,
    info,
    live_server,
    pixels,
    wait_for,
    wait_for_step,
)

import diffusion.cli.main as cli
import gpucore
from diffusion.server import create_app

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)

SLOW = {"prompt": PROMPT, "steps": 150, "seed": 1}  # long enough to be caught mid-run


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sd_tiny import write_pipeline

    return write_pipeline(tmp_path_factory.mktemp("server-queue") / "tiny")


@pytest.fixture(scope="module")
def loader() -> CachedLoader:
    return CachedLoader()


@pytest.fixture(scope="module")
def url(model: Path, loader: CachedLoader) -> Any:
    app = create_app(model=model, loader=loader)
    with live_server(app) as base:
        yield base
        app.state.worker.stop()  # a failed test's job must not hold up the server's exit


def _get(url: str) -> Any:
    return lambda path: httpx.get(url + path, timeout=30)


def _post(url: str, path: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url + path, json=body, timeout=300)


def test_interrupt_returns_the_partial_image_and_progress_shows_it(url: str) -> None:
    slow = Background(lambda: _post(url, "/sdapi/v1/txt2img", SLOW))
    seen = wait_for_step(_get(url), step=2)
    assert seen["state"]["job"] == "txt2img" and seen["state"]["sampling_steps"] == 150
    assert 0 < seen["progress"] < 1 and seen["eta_relative"] > 0 and "step" in seen["textinfo"]
    assert Image.open(io.BytesIO(base64.b64decode(seen["current_image"]))).size == (16, 16)
    quiet = httpx.get(url + "/sdapi/v1/progress", params={"skip_current_image": True}).json()
    assert quiet["current_image"] is None and quiet["state"]["job"] == "txt2img"
    stopped = httpx.post(url + "/sdapi/v1/interrupt")
    assert stopped.status_code == 200 and stopped.json() == {}  # the WebUI's answer
    response = slow.result()
    assert response.status_code == 200, response.text
    data = info(response)
    assert data["interrupted"] is True and len(response.json()["images"]) == 1
    assert pixels(response.json()["images"][0]).shape == (32, 32, 3)
    after = _post(url, "/sdapi/v1/txt2img", {"prompt": PROMPT, "steps": 1, "seed": 2})
    assert after.status_code == 200 and info(after)["interrupted"] is False
    assert httpx.get(url + "/sdapi/v1/progress").json()["state"]["job"] == ""


def test_skip_moves_on_to_the_next_image(url: str) -> None:
    job = Background(lambda: _post(url, "/sdapi/v1/txt2img", {**SLOW, "batch_size": 2}))
    wait_for_step(_get(url), step=2, job_no=0)
    httpx.post(url + "/sdapi/v1/skip")
    seen = wait_for_step(_get(url), step=2, job_no=1)
    assert seen["state"]["job_count"] == 2 and seen["progress"] > 0.5
    httpx.post(url + "/sdapi/v1/interrupt")
    response = job.result()
    assert response.status_code == 200 and info(response)["all_seeds"] == [1, 2]
    assert len(response.json()["images"]) == 2


def test_flood_of_concurrent_requests_is_served_in_order(url: str) -> None:
    blocker = Background(lambda: _post(url, "/sdapi/v1/txt2img", SLOW))
    wait_for_step(_get(url), step=1)
    bodies = [{"prompt": f"shape number {i}", "steps": 1, "seed": 100 + i, "cfg_scale": 1}
              for i in range(8)]
    done: list[int] = []
    lock = threading.Lock()

    def send(i: int) -> httpx.Response:
        response = _post(url, "/sdapi/v1/txt2img", bodies[i])
        with lock:
            done.append(i)
        return response
    waiting = []
    for i in range(len(bodies)):  # each one queued before the next is sent
        waiting.append(Background(lambda i=i: send(i)))
        wait_for(lambda i=i: httpx.get(url + "/avx/queue").json()["pending"] == i + 1,
                 what=f"request {i} to be queued")
    httpx.post(url + "/sdapi/v1/interrupt")
    assert blocker.result().status_code == 200
    responses = [w.result() for w in waiting]
    assert all(r.status_code == 200 for r in responses)
    assert done == list(range(len(bodies)))  # first in, first out
    for body, response in zip(bodies, responses, strict=True):
        assert info(response)["all_seeds"] == [body["seed"]]
        assert info(response)["prompt"] == body["prompt"]
        alone = _post(url, "/sdapi/v1/txt2img", body)
        assert alone.json()["images"] == response.json()["images"]


def test_a_client_that_disconnects_does_not_stall_the_worker(url: str) -> None:
    blocker = Background(lambda: _post(url, "/sdapi/v1/txt2img", SLOW))
    wait_for_step(_get(url), step=1)
    body = json.dumps({"prompt": PROMPT, "steps": 1}).encode()
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /sdapi/v1/txt2img HTTP/1.1\r\nHost: x\r\nContent-Type: "
                     b"application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        wait_for(lambda: httpx.get(url + "/avx/queue").json()["pending"] == 1,
                 what="the request to be queued")
    # its job leaves the queue (and is never run) while the blocker still runs
    wait_for(lambda: httpx.get(url + "/avx/queue").json()["pending"] == 0, timeout=10,
             what="the gone client's job to leave the queue")
    assert httpx.get(url + "/sdapi/v1/progress").json()["state"]["sampling_steps"] == 150
    httpx.post(url + "/sdapi/v1/interrupt")
    assert blocker.result().status_code == 200
    wait_for(lambda: not any(httpx.get(url + "/avx/queue").json()[k]
                             for k in ("pending", "running")), what="an idle worker")
    after = _post(url, "/sdapi/v1/txt2img", {"prompt": PROMPT, "steps": 1, "seed": 9})
    assert after.status_code == 200 and len(after.json()["images"]) == 1


def test_a_lost_device_fails_the_job_with_device_lost_error(
        url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """As docs/server.md says: the request whose job meets a lost device gets a 500 naming
    DeviceLostError, with gpucore's message; the worker takes the next job (here the stand-in
    loss is gone: a real one stays, and the server must be restarted)."""
    import wgpu

    from gpucore._staging import Staging

    def lost(*args: object, **kwargs: object) -> None:  # the picture's read-back, as wgpu-native
        raise wgpu.GPUError("Parent device is lost")   # reports a device lost mid-job
    monkeypatch.setattr(Staging, "read", lost)
    failed = _post(url, "/sdapi/v1/txt2img", {"prompt": PROMPT, "steps": 1, "seed": 3})
    monkeypatch.undo()
    assert failed.status_code == 500, failed.text
    assert failed.json()["error"] == "DeviceLostError"
    assert failed.json()["detail"] == (
        "the server failed: the GPU device was lost (Parent device is lost); create a new "
        "Device (check the driver and GPU memory)")
    after = _post(url, "/sdapi/v1/txt2img", {"prompt": PROMPT, "steps": 1, "seed": 3})
    assert after.status_code == 200 and len(after.json()["images"]) == 1


def test_full_queue_is_503_with_retry_after(model: Path, loader: CachedLoader) -> None:
    with TestClient(create_app(model=model, loader=loader, queue_size=1)) as client:
        slow = Background(lambda: client.post("/sdapi/v1/txt2img", json=SLOW))
        wait_for_step(client.get, step=1)
        queued = Background(lambda: client.post("/sdapi/v1/txt2img",
                                                json={"prompt": PROMPT, "steps": 1}))
        wait_for(lambda: client.get("/avx/queue").json()["pending"] == 1, what="queued")
        refused = client.post("/sdapi/v1/txt2img", json={"prompt": PROMPT, "steps": 1})
        assert refused.status_code == 503 and int(refused.headers["Retry-After"]) > 0
        assert "queue is full" in refused.json()["detail"]
        client.post("/sdapi/v1/interrupt")
        assert slow.result().status_code == 200 and queued.result().status_code == 200


def test_api_auth(model: Path, loader: CachedLoader) -> None:
    app = create_app(model=model, loader=loader, api_auth="alice:s3cret,bob:pw:with:colons")
    with TestClient(app) as client:
        for path in ("/sdapi/v1/samplers", "/sdapi/v1/progress", "/avx/queue"):
            refused = client.get(path)
            assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Basic"
            assert client.get(path, auth=("alice", "wrong")).status_code == 401
            assert client.get(path, auth=("alice", "s3cret")).status_code == 200
            assert client.get(path, auth=("bob", "pw:with:colons")).status_code == 200
        assert client.post("/sdapi/v1/txt2img", json={"steps": 1}).status_code == 401


def test_webui_api_script_runs_unchanged(url: str, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The WebUI wiki's API example, as written for the WebUI (only `url` differs)."""
    import requests
    from PIL import PngImagePlugin

    monkeypatch.chdir(tmp_path)
    payload = {"prompt": "maltese puppy", "steps": 5}
    response = requests.post(url=f"{url}/sdapi/v1/txt2img", json=payload)
    r = response.json()
    for i in r["images"]:
        image = Image.open(io.BytesIO(base64.b64decode(i.split(",", 1)[0])))
        png_payload = {"image": "data:image/png;base64," + i}
        response2 = requests.post(url=f"{url}/sdapi/v1/png-info", json=png_payload)
        pnginfo = PngImagePlugin.PngInfo()
        pnginfo.add_text("parameters", response2.json().get("info"))
        image.save("output.png", pnginfo=pnginfo)
    saved = Image.open(tmp_path / "output.png")
    assert saved.info["parameters"] == json.loads(r["info"])["infotexts"][0]
    assert "Steps: 5" in saved.info["parameters"] and np.asarray(saved).shape == (32, 32, 3)


def test_serve_says_what_is_wrong(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        assert cli.main(["serve", "--port", str(port)]) == 2
        assert "cannot listen on 127.0.0.1" in capsys.readouterr().err
    assert cli.main(["serve", "--port", str(free_port()), "--api-auth", "nopassword"]) == 2
    assert "USER:PASS" in capsys.readouterr().err
    missing = str(tmp_path / "no-such-model")
    assert cli.main(["serve", "--listen", "--port", str(free_port()), "--model", missing]) == 2
    err = capsys.readouterr().err
    assert "without --api-auth" in err and "does not exist" in err and err.count("\n") == 2
