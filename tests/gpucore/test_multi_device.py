"""Several devices at once: open_devices, DeviceGroup.map against numpy on random inputs and
uneven chunks, and `serve --devices`: two workers on one queue
serving concurrent requests with the one-device images, interrupt/skip over several running
jobs, and a model switch that waits for the jobs before it and holds back the jobs after it.

On CI the two adapters are Vulkan lavapipe and OpenGL llvmpipe. DeviceGroup.map and the
server's two workers run on two non-OpenGL devices (a second Device on the same adapter where
there is one such adapter): with OpenGL in the mix, these threads crashed a CI worker twice.
The second time the trace showed how: a garbage collection on the thread driving one device
ran wgpu-py's finalizer of a buffer (wgpuBufferRelease) while another thread drove the other
device. gpucore._gl now makes every release of an OpenGL device's objects under the devices'
one lock, outside any collection (tests/gpucore/test_core_gl_release.py), which is what that
trace lacked. These tests stay off OpenGL all the same: the crash came once in several runs,
so passing runs would not show it gone, and a crash here loses a CI worker.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import ADAPTERS, session_devices

import gpucore
import gpustd
from gpucore import DeviceGroup, split_sizes
from gpustd import Tensor

if not ADAPTERS:
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def two_devices() -> list[gpucore.Device]:
    """Two devices, neither OpenGL (see above): two adapters' where there are, else a second
    wgpu device on the one adapter (made once: its kernels compile again)."""
    ours = [d for d in session_devices() if d.backend != "gl"] or session_devices()[:1]
    return ours[:2] if len(ours) > 1 else [ours[0], gpucore.Device(ours[0].info)]


@pytest.fixture(scope="module")
def group(two_devices: list[gpucore.Device]) -> DeviceGroup:
    return DeviceGroup(two_devices)


def test_split_sizes() -> None:
    assert split_sizes(10, 3) == [4, 3, 3] and split_sizes(2, 4) == [1, 1, 0, 0]
    assert [len(p) for p in np.array_split(np.arange(37), 5)] == split_sizes(37, 5)
    assert split_sizes(10, 2, weights=[3, 1]) == [8, 2]  # 7.5 / 2.5: the remainder to one
    assert sum(split_sizes(101, 3, weights=[0.2, 0.5, 0.3])) == 101
    with pytest.raises(ValueError, match="weights"):
        split_sizes(10, 2, weights=[1])
    with pytest.raises(ValueError, match="parts"):
        split_sizes(10, 0)


def test_open_devices_by_index_and_errors() -> None:
    present = gpucore.devices()
    opened = gpucore.open_devices("all")
    labels = {d.info.label for d in opened}
    assert len(labels) == len(opened)  # "all": each adapter once
    first = gpucore.open_devices(str(opened[0].info.index))
    assert [d.info.index for d in first] == [opened[0].info.index]
    with pytest.raises(gpucore.NoAdapterError, match="index 99"):
        gpucore.open_devices("99")
    with pytest.raises(ValueError, match="twice"):
        gpucore.open_devices(f"{present[0].index},{present[0].index}")
    with pytest.raises(ValueError, match="no devices"):
        gpucore.open_devices("")
    with pytest.raises(ValueError, match="twice"):
        DeviceGroup([opened[0], opened[0]])


def test_map_runs_each_chunk_on_its_device(group: DeviceGroup) -> None:
    rng = np.random.default_rng(11)
    n = len(group)
    chunks = [rng.standard_normal((int(rng.integers(1, 70)), 33)).astype(np.float32)
              for _ in range(2 * n + 1)]  # uneven sizes, more chunks than devices
    weight = rng.standard_normal((33, 17)).astype(np.float32)
    threads: dict[int, set[int]] = {}

    def work(device: gpucore.Device, chunk: np.ndarray) -> tuple[gpucore.Device, np.ndarray]:
        threads.setdefault(id(device), set()).add(threading.get_ident())
        x = Tensor.from_numpy(chunk, device=device)
        w = Tensor.from_numpy(weight, device=device)
        return device, gpustd.exp(gpustd.linalg.matmul(x, w) * 0.1).numpy()

    for balance in (False, True):
        out = group.map(work, chunks, balance=balance)
        for chunk, (_, got) in zip(chunks, out, strict=True):
            want = np.exp(0.1 * (chunk.astype(np.float64) @ weight))
            assert np.max(np.abs(got - want) / np.abs(want)) < 1e-5
        if not balance:  # static: chunk i on device i % n, reproducibly
            assert [d for d, _ in out] == [group[i % n] for i in range(len(chunks))]
    if n > 1:
        assert len({t for ts in threads.values() for t in ts}) >= n  # a thread per device
    with pytest.raises(ZeroDivisionError):
        group.map(lambda device, x: 1 / x, [1, 0, 2])


# -- serve --devices: several workers on one queue ----------------------------------------

class _Recording:
    """A pipeline that records every generate call (device, GenerationRequest) and passes it
    on."""

    def __init__(self, pipe: Any, device: gpucore.Device, calls: list) -> None:
        self._pipe, self._device, self._calls = pipe, device, calls

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def generate(self, request: Any, **kwargs: Any) -> Any:  # kwargs: the observer
        self._calls.append((self._device, request))
        return self._pipe.generate(request, **kwargs)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, two_devices: list[gpucore.Device]) -> Any:
    pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
    pytest.importorskip("diffusers", reason="tiny test models are built with diffusers")
    import shutil

    from sd_tiny import write_pipeline
    from server_support import live_server

    from diffusion import load_pipeline
    from diffusion.server import create_app

    models = tmp_path_factory.mktemp("multi-device") / "models"
    write_pipeline(models / "tiny-a")
    shutil.copytree(models / "tiny-a", models / "tiny-b")  # a second model to switch to
    calls: list = []
    pipes: dict[tuple[Path, int], Any] = {}

    def loader(path: Path, device: gpucore.Device) -> Any:
        pipes[path, id(device)] = load_pipeline(path, device=device)
        return _Recording(pipes[path, id(device)], device, calls)

    app = create_app(model=models / "tiny-a", models_dir=models, loader=loader,
                     devices=two_devices)
    with live_server(app) as url:
        yield url, app.state.worker, calls, pipes
        app.state.worker.stop()


def _post(url: str, path: str, body: dict[str, Any]) -> Any:
    import httpx

    return httpx.post(url + path, json=body, timeout=300)


def _running(worker: Any, job_no: int = 0) -> bool:
    return all(s.state["job"] and s.state["job_no"] == job_no and s.state["sampling_step"] >= 1
               for s in worker.slots)


def test_two_workers_serve_concurrent_requests_with_one_device_images(served: Any) -> None:
    from server_support import PROMPT, Background, info, pixels

    url, worker, calls, _ = served
    bodies = [{"prompt": f"{PROMPT} {i}", "steps": 1, "seed": 40 + i} for i in range(2)]
    calls.clear()
    waiting = [Background(lambda b=b: _post(url, "/sdapi/v1/txt2img", b)) for b in bodies]
    responses = [w.result() for w in waiting]
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    images = {info(r)["seed"]: pixels(r.json()["images"][0]) for r in responses}
    assert sorted(images) == [b["seed"] for b in bodies]
    assert len({img.tobytes() for img in images.values()}) == len(bodies)
    pipes = {id(s.device): s.pipe._pipe for s in worker.slots}
    assert {id(device) for device, _ in calls} == set(pipes)  # each worker took one
    for device, request in calls:  # each image again, alone, on the device that made it
        assert np.array_equal(pipes[id(device)].generate(request).images[0],
                              images[request.seed])
    device, request = calls[0]  # and on the other device: the same picture
    other = next(pipe for key, pipe in pipes.items() if key != id(device))
    diff = np.abs(other.generate(request).images[0].astype(int) - images[request.seed])
    assert diff.max() <= 2, f"the two devices' images differ by {diff.max()} levels"


def test_interrupt_and_skip_act_on_every_running_job(served: Any) -> None:
    import httpx
    from server_support import PROMPT, Background, info, wait_for

    url, worker, _, _ = served
    slow = {"prompt": PROMPT, "steps": 150, "batch_size": 2}
    jobs = [Background(lambda s=s: _post(url, "/sdapi/v1/txt2img", {**slow, "seed": s}))
            for s in (1, 5)]
    wait_for(lambda: _running(worker), what="both workers to run")
    seen = httpx.get(url + "/sdapi/v1/progress").json()
    assert seen["state"]["job"] == "txt2img" and 0 < seen["progress"] < 1
    assert seen["textinfo"].count(" on ") == 2 and seen["current_image"]
    httpx.post(url + "/sdapi/v1/skip")
    wait_for(lambda: _running(worker, job_no=1), what="both jobs at their second image")
    httpx.post(url + "/sdapi/v1/interrupt")
    for job, seed in zip(jobs, (1, 5), strict=True):
        response = job.result()
        assert response.status_code == 200 and info(response)["interrupted"] is True
        assert info(response)["all_seeds"] == [seed, seed + 1]
    after = _post(url, "/sdapi/v1/txt2img", {"prompt": PROMPT, "steps": 1, "seed": 2})
    assert after.status_code == 200 and info(after)["interrupted"] is False


def test_model_switch_waits_for_earlier_jobs_and_holds_later_ones(served: Any) -> None:
    import time

    import httpx
    from server_support import PROMPT, Background, info, wait_for

    url, worker, _, _ = served
    slow = Background(lambda: _post(url, "/sdapi/v1/txt2img",
                                     {"prompt": PROMPT, "steps": 150, "seed": 1}))
    wait_for(lambda: any(s.state["sampling_step"] >= 1 for s in worker.slots), what="a job")
    switch = Background(lambda: _post(url, "/sdapi/v1/options",
                                      {"sd_model_checkpoint": "tiny-b"}))
    wait_for(lambda: worker.pending() == 1, what="the switch to be queued")
    later = Background(lambda: _post(url, "/sdapi/v1/txt2img",
                                     {"prompt": PROMPT, "steps": 1, "seed": 3}))
    wait_for(lambda: worker.pending() == 2, what="the later job to be queued")
    time.sleep(0.3)  # the idle worker must not take the job queued after the switch
    assert worker.pending() == 2 and worker.model.model_name == "tiny-a"
    httpx.post(url + "/sdapi/v1/interrupt")
    assert slow.result().status_code == 200 and info(slow.result())["sd_model_name"] == "tiny-a"
    assert switch.result().status_code == 200
    assert info(later.result())["sd_model_name"] == "tiny-b"
    assert all(s.pipe._pipe is not None and s.pipe._device is s.device for s in worker.slots)
    assert len({id(s.pipe._pipe) for s in worker.slots}) == 2  # a copy per device


def test_serve_devices_says_what_is_wrong(capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("uvicorn", reason="server extra (pip install .[server])")
    from server_support import free_port

    import diffusion.cli.main as cli

    assert cli.main(["serve", "--port", str(free_port()), "--devices", "99"]) == 2
    err = capsys.readouterr().err
    assert "--devices 99" in err and "no adapter with index 99" in err
    # the adapters are there: the advice is to choose among them, not to install a driver
    assert "python -m gpucore info" in err and "Install a Vulkan driver" not in err
