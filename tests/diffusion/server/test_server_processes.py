"""`serve --devices`: a worker PROCESS per device (diffusion.server.jobs.processes) on CI's software
adapter twice. Concurrent requests give the pictures of the one-process server; progress shows
both processes' jobs and interrupt reaches them (the one of the task named, or all); `kill -9`
of a process mid-job answers its request with a 503 while the other process's request
completes, the process comes back, and no partial file is left in the outputs.

Here too, on both servers: /sdapi/v1/unload-checkpoint and reload-checkpoint
(text-generation-webui's sd_api_pictures frees the GPU with them for its LLM, and loads the
model again before a picture): unloading gives the model's device memory back, the model stays
chosen, the next picture loads it again by itself and is the picture of before; the control
models and Wan models the workers keep go too."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
pytest.importorskip("cloudpickle", reason="the multi-process server sends jobs with cloudpickle")
pytest.importorskip("diffusers", reason="tiny test models are built with diffusers")

import httpx
from PIL import Image
from server_support import PROMPT, Background, info, live_server, pixels, wait_for

import gpucore
from diffusion.server import create_app

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)

SLOW = {"prompt": PROMPT, "steps": 200}  # long enough to be caught mid-run


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sd_tiny import write_pipeline

    return write_pipeline(tmp_path_factory.mktemp("server-processes") / "tiny")


@pytest.fixture(scope="module")
def served(model: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    adapter = str(gpucore.Device.auto().info.index)  # the one adapter, in two processes
    outputs = tmp_path_factory.mktemp("outputs")
    app = create_app(model=model, outputs=outputs, worker_adapters=[adapter, adapter])
    with live_server(app) as url:
        yield url, app.state.worker, outputs
        app.state.worker.stop()


def _post(url: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(url + "/sdapi/v1/txt2img", json=body, timeout=300)


def _busy(worker: Any) -> list[Any]:
    return [s for s in worker.slots if s.state["job"] and s.state["sampling_step"] >= 1]


def test_two_processes_give_the_one_process_pictures(served: Any, model: Path) -> None:
    url, worker, _ = served
    bodies = [{"prompt": f"{PROMPT} {i}", "steps": 1, "seed": 70 + i} for i in range(3)]
    waiting = [Background(lambda b=b: _post(url, b)) for b in bodies]
    responses = [w.result() for w in waiting]
    assert all(r.status_code == 200 for r in responses), [r.text for r in responses]
    ours = {info(r)["seed"]: pixels(r.json()["images"][0]) for r in responses}
    single = create_app(model=model)  # the one-process server, in this process
    try:
        from fastapi.testclient import TestClient

        with TestClient(single) as client:
            for body in bodies:
                reference = client.post("/sdapi/v1/txt2img", json=body)
                assert reference.status_code == 200, reference.text
                assert np.array_equal(pixels(reference.json()["images"][0]), ours[body["seed"]])
    finally:
        single.state.worker.stop()
    defaults = httpx.get(url + "/avx/defaults").json()  # read from the processes' model
    assert defaults["model"] == worker.model.title


def test_progress_shows_both_processes_and_interrupt_reaches_them(served: Any) -> None:
    url, worker, _ = served
    jobs = [Background(lambda s=s: _post(url, {**SLOW, "seed": s,
                                               "force_task_id": f"task({s})"}))
            for s in (1, 2)]
    wait_for(lambda: len(_busy(worker)) == 2, what="both processes to run a job")
    seen = httpx.get(url + "/sdapi/v1/progress").json()
    assert 0 < seen["progress"] < 1 and seen["current_image"]
    assert "worker 0" in seen["textinfo"] and "worker 1" in seen["textinfo"]
    httpx.post(url + "/sdapi/v1/interrupt", json={"id_task": "task(1)"})
    response = jobs[0].result()
    assert response.status_code == 200 and info(response)["interrupted"] is True
    assert [s.task for s in _busy(worker)] == ["task(2)"]  # the other process goes on
    httpx.post(url + "/sdapi/v1/interrupt")  # no task: every running job, as the WebUI's
    response = jobs[1].result()
    assert response.status_code == 200 and info(response)["interrupted"] is True


def test_kill_9_fails_only_its_job_and_the_process_comes_back(served: Any) -> None:
    url, worker, outputs = served
    doomed = Background(lambda: _post(url, {**SLOW, "seed": 3, "save_images": True}))
    wait_for(lambda: len(_busy(worker)) == 1, what="the first job to run")
    victim = _busy(worker)[0].index
    other = Background(lambda: _post(url, {"prompt": PROMPT, "steps": 2, "seed": 4,
                                           "save_images": True, "n_iter": 2}))
    wait_for(lambda: len(_busy(worker)) == 2, what="the second job to run")
    pid = worker.processes[victim].process.pid
    os.kill(pid, signal.SIGKILL)
    lost = doomed.result()
    assert lost.status_code == 503 and lost.headers["Retry-After"]
    assert "stopped while running this job" in lost.json()["detail"]
    kept = other.result(timeout=300)
    assert kept.status_code == 200 and len(kept.json()["images"]) == 2, kept.text
    assert info(kept)["interrupted"] is False
    wait_for(lambda: worker.processes[victim].process.is_alive(), what="the restart")
    assert worker.processes[victim].process.pid != pid
    again = [Background(lambda s=s: _post(url, {"prompt": PROMPT, "steps": 1, "seed": s}))
             for s in (5, 6)]
    assert all(job.result(timeout=300).status_code == 200 for job in again)
    saved = [p for p in outputs.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert len(saved) == 2  # the finished pictures, each whole
    for path in saved:
        with Image.open(path) as image:
            image.load()


def test_devices_name_one_adapter_per_process() -> None:
    from diffusion.server.jobs.processes import worker_adapters

    first = str(gpucore.devices()[0].index)
    assert worker_adapters(f"{first},{first}") == [first, first]  # two processes on one GPU
    assert worker_adapters("all")
    with pytest.raises(gpucore.GpuError, match="no adapter with index 99"):
        worker_adapters("0,99")
    with pytest.raises(ValueError, match="no devices named"):
        worker_adapters(" , ")


def test_an_interrupt_before_the_job_begins_in_its_process_is_kept(served: Any) -> None:
    import time

    from diffusion.pipelines.request import GenerationRequest
    from diffusion.server.jobs.worker import GenerationJob

    _, worker, _ = served
    job = GenerationJob(kind="txt2img", seeds=[7, 8],
                        request=GenerationRequest(prompt=PROMPT, steps=3))
    # the process sleeps before it begins: the interrupt reaches it while nothing runs there
    future = worker.submit(lambda: (time.sleep(1.5), worker.generate(job))[1])
    wait_for(lambda: any(slot.running for slot in worker.slots), what="the job to be taken")
    worker.interrupt()
    result = future.result(timeout=120)
    assert result.interrupted is True and result.images == []  # lost: two pictures


def test_memory_lists_each_process_and_sums_them(served: Any) -> None:
    url, worker, _ = served
    cuda = httpx.get(url + "/sdapi/v1/memory").json()["cuda"]
    devices = cuda["devices"]
    assert [d["device"] for d in devices] == [slot.label for slot in worker.slots]
    assert all("GPUCORE_ADAPTER" in d["device"] and d["allocated"] > 0 for d in devices)
    assert cuda["allocated"]["current"] == sum(d["allocated"] for d in devices)
    assert cuda["reserved"]["current"] == sum(d["reserved"] for d in devices)


def _picture(post: Any) -> np.ndarray:
    response = post("/sdapi/v1/txt2img", json={"prompt": PROMPT, "steps": 2, "seed": 11})
    assert response.status_code == 200, response.text
    return pixels(response.json()["images"][0])


def test_unload_frees_the_model_and_the_next_picture_loads_it(model: Path,
                                                              tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from diffusion.pipelines.sd.memory import networks
    from gpustd.nn.offload import parameter_bytes

    app = create_app(model=model, outputs=tmp_path)  # the default loader, as `serve` runs
    with TestClient(app) as client:
        # the weights as loaded (float16 where the adapter has it)
        weights = sum(parameter_bytes(n) for n in networks(app.state.worker.pipe))
        def allocated() -> int:
            return int(client.get("/sdapi/v1/memory").json()["cuda"]["allocated"]["current"])

        before = _picture(client.post)
        defaults = client.get("/avx/defaults").json()
        queue = client.get("/avx/queue").json()
        title = client.get("/sdapi/v1/options").json()["sd_model_checkpoint"]
        loaded = allocated()
        # a control model (or image encoder) and a Wan model kept: unloading drops them too
        from diffusion.server.api import video_pipelines

        loads: list[str] = []
        controls = app.state.server.control_cache
        controls.get(model, dtype=np.float32, device=None,
                     loader=lambda path, **_: loads.append(str(path)))
        video_pipelines._loaded[-1] = (None, object())
        assert client.post("/sdapi/v1/unload-checkpoint").json() == {}
        assert -1 not in video_pipelines._loaded
        controls.get(model, dtype=np.float32, device=None,
                     loader=lambda path, **_: loads.append(str(path)))
        assert len(loads) == 2  # loaded again: the cache was emptied
        # other tests' live buffers in this process stay: the drop is measured
        unloaded = allocated()
        assert loaded - unloaded >= 0.9 * weights, (loaded, unloaded, weights)
        # still chosen: the options, the page's defaults and the queue name it
        assert client.get("/sdapi/v1/options").json()["sd_model_checkpoint"] == title
        assert client.get("/avx/defaults").json() == defaults
        assert client.get("/avx/queue").json() == queue
        np.testing.assert_array_equal(_picture(client.post), before)  # loaded again first
        assert allocated() - unloaded >= 0.9 * weights

        assert client.post("/sdapi/v1/unload-checkpoint").json() == {}
        assert client.post("/sdapi/v1/reload-checkpoint").json() == {}
        assert allocated() - unloaded >= 0.9 * weights
        assert client.post("/sdapi/v1/reload-checkpoint").json() == {}  # loaded: nothing
        np.testing.assert_array_equal(_picture(client.post), before)
        app.state.worker.stop()


def test_unload_frees_each_process_and_the_next_picture_loads_it(served: Any,
                                                                 model: Path) -> None:
    url, _, _ = served

    def post(path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(url + path, timeout=300, **kwargs)

    def allocated() -> list[int]:
        devices = httpx.get(url + "/sdapi/v1/memory").json()["cuda"]["devices"]
        return [d["allocated"] for d in devices]

    before = _picture(post)
    loaded = allocated()
    assert post("/sdapi/v1/unload-checkpoint").json() == {}
    # a process holds nothing else: its model was nearly all it had
    unloaded = allocated()
    assert all(now < was / 10 for now, was in zip(unloaded, loaded, strict=True)), unloaded
    assert httpx.get(url + "/avx/defaults").json()["family"] == "sd1"
    np.testing.assert_array_equal(_picture(post), before)  # its process loads it again
    assert post("/sdapi/v1/reload-checkpoint").json() == {}  # and the other's
    # the weights again (the files' float32 in serve's dtype: float16 on matrix units); a
    # picture's captures held more before
    from diffusion.pipelines.load import auto_dtype

    stored = sum(f.stat().st_size for f in model.rglob("*.safetensors"))
    weights = stored * auto_dtype(gpucore.Device.auto()).itemsize // 4
    assert all(now >= 0.9 * weights for now in allocated()), (allocated(), weights)
