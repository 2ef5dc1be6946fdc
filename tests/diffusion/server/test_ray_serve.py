"""The server on Ray Serve (diffusion.server.ray_app): a local Ray cluster (no network beyond
localhost) with 2 CPU-only replicas on the software adapter; 8 concurrent requests from the
WebUI's own client (webuiapi) through Ray Serve's HTTP proxy give the one-process server's
pictures, and progress (the API's and the page's, by task) and interrupt reach the replicas'
jobs through any replica."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
pytest.importorskip("ray.serve", reason="Ray Serve is an optional extra (pip install .[ray])")
pytest.importorskip("webuiapi", reason="the WebUI's client (pip install .[test])")
pytest.importorskip("diffusers", reason="tiny test models are built with diffusers")

import webuiapi
from server_support import PROMPT, Background, free_port, info, pixels

import gpucore

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from sd_tiny import write_pipeline

    return write_pipeline(tmp_path_factory.mktemp("ray-serve") / "tiny")


@pytest.fixture(scope="module")
def port(model: Path) -> Any:
    import ray
    from ray import serve

    from diffusion.server.ray_app import deployment

    # Ray runs its workers at nice 15; on CI's 2 cores the other pytest worker (nice 0) then
    # starves the replicas (this module: 70 s alone, 300 s beside a busy worker). Unniced,
    # they share the cores evenly. The raylet and its workers read this at their start.
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_worker_niceness", "0")
        # the adapter as the raylet's environment, which its workers inherit, not as a job's
        # runtime_env: the workers Ray starts ahead (one a CPU) have none, and a job with one
        # left them idle and started its actors' workers anew, each after the request
        env.setenv("GPUCORE_ADAPTER", str(gpucore.Device.auto().info.index))
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False,
                 _node_ip_address="127.0.0.1")  # the cluster's own ports on loopback too
        try:
            chosen = free_port()
            serve.start(http_options={"host": "127.0.0.1", "port": chosen})
            serve.run(deployment(replicas=2, gpus_per_replica=0, cpus_per_replica=1,
                                 model=model), name="diffusion", route_prefix="/")
            yield chosen
        finally:
            serve.shutdown()
            ray.shutdown()


@pytest.mark.slow
def test_eight_webuiapi_requests_through_ray_give_the_single_server_pictures(
        port: int, model: Path) -> None:
    from fastapi.testclient import TestClient

    from diffusion.server import create_app

    api = webuiapi.WebUIApi(host="127.0.0.1", port=port)
    seeds = list(range(80, 88))
    # cfg_scale 1: one UNet pass a step, not two (routing, not guidance, is under test here;
    # guidance through the server is test_server_api's); 16 pictures at half the UNet cost
    calls = [Background(lambda s=s: api.txt2img(prompt=PROMPT, seed=s, steps=1, width=32,
                                                height=32, sampler_name="Euler", cfg_scale=1))
             for s in seeds]
    results = {s: call.result(timeout=300) for s, call in zip(seeds, calls, strict=True)}
    single = create_app(model=model)
    try:
        with TestClient(single) as client:
            for seed, result in results.items():
                assert result.info["seed"] == seed
                body = {"prompt": PROMPT, "seed": seed, "steps": 1, "width": 32, "height": 32,
                        "sampler_name": "Euler", "cfg_scale": 1}
                reference = client.post("/sdapi/v1/txt2img", json=body)
                assert reference.status_code == 200, reference.text
                assert np.array_equal(np.asarray(result.image.convert("RGB")),
                                      pixels(reference.json()["images"][0]))
    finally:
        single.state.worker.stop()


def test_progress_and_interrupt_reach_every_replica(port: int) -> None:
    import time

    import httpx
    from server_support import wait_for

    url = f"http://127.0.0.1:{port}"
    body = {"prompt": PROMPT, "steps": 300, "width": 32, "height": 32}

    def running(count: int) -> bool:
        time.sleep(0.5)  # seldom: progress calls count as requests to Ray's router
        text = httpx.get(url + "/sdapi/v1/progress", timeout=30).json()["textinfo"] or ""
        return text.count("replica ") == count and "step 0/" not in text
    jobs = []
    for count, seed in ((1, 1), (2, 2)):  # one after the other: Ray's router then sees the
        jobs.append(Background(lambda s=seed: httpx.post(  # first replica busy
            url + "/sdapi/v1/txt2img", json={**body, "seed": s, "force_task_id": f"task({s})"},
            timeout=300)))
        wait_for(lambda c=count: running(c), timeout=120, what=f"{count} replicas running")
    for seed in (1, 2):  # the page's poll finds its task on whichever replica runs it
        task = httpx.post(url + "/internal/progress", json={"id_task": f"task({seed})"},
                          timeout=30).json()
        assert task["active"] and task["state"]["job"] == "txt2img", task
    httpx.post(url + "/sdapi/v1/interrupt", timeout=30)
    for job in jobs:
        response = job.result(timeout=120)
        assert response.status_code == 200 and info(response)["interrupted"] is True


def test_unload_and_reload_reach_every_replica(port: int) -> None:
    import httpx
    from ray import serve

    url = f"http://127.0.0.1:{port}"
    replicas = serve.get_deployment_handle("diffusion", "diffusion")

    def loaded() -> list[bool]:
        return replicas.broadcast("replica_loaded").results()

    assert loaded() == [True, True]
    assert httpx.post(url + "/sdapi/v1/unload-checkpoint", timeout=120).json() == {}
    assert loaded() == [False, False]
    assert httpx.post(url + "/sdapi/v1/reload-checkpoint", timeout=120).json() == {}
    assert loaded() == [True, True]


def test_progress_merges_the_busy_replicas() -> None:
    from diffusion.server.ray_app import _merged_progress

    idle = {"progress": 0.0, "state": {"job": ""}, "textinfo": None}
    busy = {"progress": 0.5, "state": {"job": "txt2img"}, "textinfo": "txt2img: step 5/10"}
    assert _merged_progress([idle, idle]) == idle
    merged = _merged_progress([idle, busy, busy])
    assert merged["progress"] == 0.5
    assert merged["textinfo"] == "replica 1: txt2img: step 5/10; replica 2: txt2img: step 5/10"


def test_task_progress_comes_from_the_replica_that_has_the_task() -> None:
    from diffusion.server.ray_app import _merged_task_progress

    unknown = {"active": False, "queued": False, "completed": False, "textinfo": "Waiting..."}
    queued = {**unknown, "queued": True, "textinfo": "In queue: 1/2"}
    running = {**unknown, "active": True, "progress": 0.5}
    done = {**unknown, "completed": True}
    assert _merged_task_progress([unknown, unknown]) == unknown
    assert _merged_task_progress([unknown, queued]) == queued
    assert _merged_task_progress([done, unknown, running]) == running
    assert _merged_task_progress([unknown, done]) == done


def _sd_vae_file(path: Path) -> None:
    """A VAE for the tiny SD models, as a bare LDM-layout file (`vae-ft-mse-*` is one)."""
    from ldm_files import ldm_vae
    from safetensors.torch import save_file
    from sd_tiny import tiny_vae

    state = ldm_vae(tiny_vae(9).state_dict())
    path.parent.mkdir(parents=True)
    save_file({k.removeprefix("first_stage_model."): v.contiguous() for k, v in state.items()},
              str(path))


def _replicas(app: str) -> set[str]:
    """The names of the live replica actors of Ray Serve app `app` (each replica's is new)."""
    import ray

    return {a["name"] for a in ray.util.list_named_actors(all_namespaces=True)
            if a["name"].startswith(f"SERVE_REPLICA::{app}#")}


def test_a_replica_started_later_runs_the_switched_model_modules_and_upscalers(
        port: int, model: Path, tmp_path: Path) -> None:
    import shutil

    import httpx
    from ray import serve

    from diffusion.server.ray_app import deployment

    models, upscalers = tmp_path / "models", tmp_path / "upscalers"
    for name in ("tiny-a", "tiny-b"):
        shutil.copytree(model, models / name)
    _sd_vae_file(models / "VAE" / "sd-vae.safetensors")  # a Forge module file for them
    upscalers.mkdir()
    (upscalers / "4x-Listed.pth").write_bytes(b"")  # listed by name, loaded only when used
    settings = dict(gpus_per_replica=0, cpus_per_replica=1, model=models / "tiny-a",
                    models_dir=models, upscaler_dir=upscalers, name="switching")
    url = f"http://127.0.0.1:{port}/switching"
    try:
        serve.run(deployment(replicas=1, **settings), name="switching",
                  route_prefix="/switching")
        names = [u["name"] for u in httpx.get(url + "/sdapi/v1/upscalers", timeout=60).json()]
        assert "4x-Listed" in names  # serve --upscaler-dir reaches the replicas
        title = next(m["title"] for m in httpx.get(url + "/sdapi/v1/sd-models").json()
                     if m["model_name"] == "tiny-b")
        switched = httpx.post(url + "/sdapi/v1/options", timeout=120,
                              json={"sd_model_checkpoint": title, "CLIP_stop_at_last_layers": 2,
                                    "forge_additional_modules": ["sd-vae.safetensors"]})
        assert switched.status_code == 200, switched.text
        before = _replicas("switching")
        # Ray Serve versions every serve.run of a Python app anew: the replica is replaced by
        # one started now (scaling up to 2 here started 3: a new one, then the first replaced)
        serve.run(deployment(replicas=1, **settings), name="switching",
                  route_prefix="/switching")
        later = _replicas("switching")
        assert len(before) == len(later) == 1 and not before & later
        handle = serve.get_deployment_handle("switching", "switching")
        paths = handle.broadcast("replica_model").results()
        assert [Path(p).name for p in paths] == ["tiny-b"]
        modules = handle.broadcast("replica_modules").results()  # the VAE module too
        assert [[Path(p).name for p in m] for m in modules] == [["sd-vae.safetensors"]]
        assert httpx.get(url + "/sdapi/v1/options").json()["CLIP_stop_at_last_layers"] == 2
    finally:
        serve.delete("switching")
