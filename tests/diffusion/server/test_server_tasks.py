"""Each client follows its own job: the WebUI's page generates with a task id (`force_task_id`)
and polls POST /internal/progress with it, so two browser tabs no longer show each other's
progress, ETA and preview; /sdapi/v1/progress still shows the running job, naming its task
(`current_task`). Interrupt and skip given the task id stop that job alone. A stand-in
pipeline on two stand-in devices whose steps the test releases one by one: no model, no GPU,
and every state is reached on purpose, not by timing."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="server extra (pip install .[server])")

import httpx
from server_support import Background, info, live_server, wait_for

from diffusion.pipelines.sd.stable_diffusion import (
    GenerationResult,
    SamplingDefaults,
    unet_capabilities,
)
from diffusion.server import create_app

pytestmark = pytest.mark.nodevice


class Gated:
    """What the worker needs of a pipeline; each prompt's steps wait for `release(prompt)`,
    and its latents hold the step number (so that each job's preview is its own)."""

    native_size = 64
    defaults = SamplingDefaults()
    capabilities = unet_capabilities("sd1", sdxl=False, inpainting=False, turbo=False)

    def __init__(self) -> None:
        self.gates: dict[str, threading.Semaphore] = {}

    def gate(self, prompt: str) -> threading.Semaphore:
        return self.gates.setdefault(prompt, threading.Semaphore(0))

    def release(self, prompt: str, steps: int = 1) -> None:
        self.gate(prompt).release(steps)

    def generate(self, request: Any, *, observer: Any) -> GenerationResult:
        for done in range(1, request.steps + 1):
            assert self.gate(request.prompt).acquire(timeout=30), "the test never released it"
            latents = np.full((1, 4, 8, 8), done / request.steps, np.float32)
            if not observer.step(done, request.steps, latents):
                break
        return GenerationResult(images=[np.zeros((64, 64, 3), np.uint8)], seeds=[request.seed],
                                settings={"prompt": request.prompt, "steps": request.steps,
                                          "sampler": "Euler", "cfg_scale": 7, "seed":
                                          request.seed, "width": 64, "height": 64})


def _device(name: str) -> Any:
    return SimpleNamespace(info=SimpleNamespace(label=name))


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    model = tmp_path_factory.mktemp("tasks") / "stand-in"
    model.mkdir()
    pipe = Gated()
    app = create_app(model=model, loader=lambda path, **where: pipe,
                     devices=[_device("stand-in 0"), _device("stand-in 1")],
                     outputs=str(tmp_path_factory.mktemp("outputs")))
    with live_server(app) as url:
        yield url, pipe
        app.state.worker.stop()


def _generate(url: str, prompt: str, steps: int, task: str | None = None,
              **more: Any) -> Background:
    body = {"prompt": prompt, "steps": steps, "seed": 1, **more}
    if task is not None:
        body["force_task_id"] = task
    return Background(lambda: httpx.post(url + "/sdapi/v1/txt2img", json=body, timeout=60))


def _poll(url: str, task: str, **more: Any) -> dict[str, Any]:
    response = httpx.post(url + "/internal/progress", json={"id_task": task, **more}, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def _at_step(url: str, task: str, step: int) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    def reached() -> bool:
        seen.update(_poll(url, task))
        return bool(seen["active"]) and seen["state"]["sampling_step"] == step
    wait_for(reached, timeout=20, what=f"{task} at step {step}")
    return seen


def test_two_clients_each_see_only_their_own_job(served: Any) -> None:
    url, pipe = served
    first = _generate(url, "first", 4, "task(first)")
    _at_step(url, "task(first)", 0)  # queued in this order: first on a device, then second
    second = _generate(url, "second", 10, "task(second)")
    _at_step(url, "task(second)", 0)
    third = _generate(url, "third", 2, "task(third)")  # both devices busy: it waits
    wait_for(lambda: _poll(url, "task(third)")["queued"], timeout=20, what="third queued")
    pipe.release("first", 1)
    pipe.release("second", 3)

    mine, theirs = _at_step(url, "task(first)", 1), _at_step(url, "task(second)", 3)
    assert (mine["progress"], theirs["progress"]) == (0.25, 0.3)
    assert (mine["state"]["sampling_steps"], theirs["state"]["sampling_steps"]) == (4, 10)
    assert mine["eta"] > 0 and theirs["eta"] > 0
    assert mine["textinfo"] == "txt2img: image 1/1, step 1/4"
    for answer in (mine, theirs):
        assert answer["live_preview"].startswith("data:image/png;base64,")
    assert mine["live_preview"] != theirs["live_preview"]  # each job's own latents
    # the WebUI page sends back the preview id it has: no new picture until the next step
    again = _poll(url, "task(first)", id_live_preview=mine["id_live_preview"])
    assert again["live_preview"] is None and again["id_live_preview"] == mine["id_live_preview"]
    assert _poll(url, "task(first)", live_preview=False)["live_preview"] is None
    waiting = _poll(url, "task(third)")
    assert waiting == {"active": False, "queued": True, "completed": False, "progress": None,
                       "eta": None, "live_preview": None, "id_live_preview": -1,
                       "textinfo": "In queue: 1/1", "state": None}
    unknown = _poll(url, "task(nobody)")
    assert not (unknown["active"] or unknown["queued"] or unknown["completed"])
    assert unknown["textinfo"] == "Waiting..."
    # the API's progress: the oldest running job, as before, with its task id
    api = httpx.get(url + "/sdapi/v1/progress").json()
    assert api["current_task"] == "task(first)" and api["progress"] == 0.25

    pipe.release("first", 3)
    assert first.result().status_code == 200
    pipe.release("third", 1)  # on the device the first job left
    assert _at_step(url, "task(third)", 1)["progress"] == 0.5
    done = _poll(url, "task(first)")
    assert done["completed"] and not done["active"] and done["progress"] is None
    assert _at_step(url, "task(second)", 3)["progress"] == 0.3  # still its own numbers
    assert httpx.get(url + "/sdapi/v1/progress").json()["current_task"] == "task(second)"
    pipe.release("second", 7)
    pipe.release("third", 1)
    assert second.result().status_code == 200 and third.result().status_code == 200


def test_a_request_without_a_task_id_gets_one(served: Any) -> None:
    """As the WebUI's API makes one (create_task_id), so /sdapi/v1/progress names every job."""
    url, pipe = served
    job = _generate(url, "anonymous", 2)
    wait_for(lambda: httpx.get(url + "/sdapi/v1/progress").json()["state"]["job"] == "txt2img",
             timeout=20, what="the job to start")
    task = httpx.get(url + "/sdapi/v1/progress").json()["current_task"]
    assert task.startswith("task(txt2img-") and _poll(url, task)["active"]
    pipe.release("anonymous", 2)
    assert job.result().status_code == 200
    assert _poll(url, task)["completed"]
    assert httpx.get(url + "/sdapi/v1/progress").json()["current_task"] is None


def test_interrupt_and_skip_by_task_stop_that_job_alone(served: Any) -> None:
    """The page's Interrupt and Skip send its id_task: of two jobs on two devices only the one
    named stops (or skips an image); a queued job named stops before its first step."""
    url, pipe = served
    mine = _generate(url, "mine", 4, "task(mine)")
    _at_step(url, "task(mine)", 0)
    theirs = _generate(url, "theirs", 4, "task(theirs)", n_iter=2)
    _at_step(url, "task(theirs)", 0)
    queued = _generate(url, "queued", 4, "task(queued)")
    wait_for(lambda: _poll(url, "task(queued)")["queued"], timeout=20, what="queued")
    pipe.release("mine", 1)
    pipe.release("theirs", 1)
    _at_step(url, "task(mine)", 1)
    _at_step(url, "task(theirs)", 1)

    for route, task in (("interrupt", "task(mine)"), ("interrupt", "task(queued)"),
                        ("skip", "task(theirs)")):
        response = httpx.post(f"{url}/sdapi/v1/{route}", json={"id_task": task}, timeout=10)
        assert response.status_code == 200, response.text
    pipe.release("mine", 1)  # the step it was in ends, and the job with it
    stopped = mine.result()
    assert info(stopped)["interrupted"] and len(stopped.json()["images"]) == 1
    never_began = queued.result()  # on the device the first job left
    assert info(never_began)["interrupted"] and never_began.json()["images"] == []
    pipe.release("theirs", 1)  # its first image ends there, its second is drawn in full
    wait_for(lambda: _poll(url, "task(theirs)")["state"]["job_no"] == 1, timeout=20,
             what="the second image")
    pipe.release("theirs", 4)
    finished = theirs.result()
    assert not info(finished)["interrupted"] and len(finished.json()["images"]) == 2
