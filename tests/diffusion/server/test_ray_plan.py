"""Ray Serve's replica -> GPU mapping and `--ray-autoscaling`, as docs/server.md states them,
checked without starting Ray: the plain functions (diffusion.server.ray_plan) with stand-in
adapters wherever Ray is absent, and where it is present the deployment that `serve --ray`
builds from its arguments (Ray's own Deployment object, which building does not start Ray)."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace
from typing import Any

import pytest

from diffusion.server.ray_plan import deployment_options, pin_replica_gpu, replica_count

pytestmark = pytest.mark.nodevice

AUTOSCALING = {"min_replicas": 1, "max_replicas": 8, "target_ongoing_requests": 4}


def _gpus(*indices: int) -> Any:
    """gpucore.select_adapters("all") stand-in: GPU adapters whose list indices are not their
    positions (a CPU adapter listed between them), so position and index cannot be confused."""
    return lambda: [SimpleNamespace(index=i) for i in indices]


@pytest.mark.parametrize("ray_gpu, adapter", [("0", "0"), ("1", "2"), (2, "5")])
def test_rays_gpu_i_opens_the_ith_gpu_adapter(ray_gpu: str | int, adapter: str) -> None:
    environ: dict[str, str] = {}
    pin_replica_gpu([ray_gpu], environ, _gpus(0, 2, 5))
    assert environ == {"GPUCORE_ADAPTER": adapter}


def test_gpu_mapping_leaves_what_it_should_alone() -> None:
    def never() -> Any:
        raise AssertionError("adapters listed although nothing is to be chosen")

    mine = {"GPUCORE_ADAPTER": "3"}
    pin_replica_gpu(["1"], mine, never)  # set yourself: yours wins
    assert mine == {"GPUCORE_ADAPTER": "3"}
    cpu_only: dict[str, str] = {}
    pin_replica_gpu([], cpu_only, never)  # --ray-gpus-per-replica 0
    assert cpu_only == {}
    pin_replica_gpu(["4"], cpu_only, _gpus(0, 1))  # Ray sees more GPUs than Vulkan does
    assert cpu_only == {}


def test_deployment_options() -> None:
    scaled = deployment_options(16, autoscaling=AUTOSCALING, replicas=3)
    assert scaled == {"name": "diffusion", "ray_actor_options": {"num_gpus": 1.0},
                      "max_ongoing_requests": 24, "autoscaling_config": AUTOSCALING}
    fixed = deployment_options(4, replicas=3, gpus_per_replica=0, cpus_per_replica=1)
    assert fixed == {"name": "diffusion", "ray_actor_options": {"num_gpus": 0, "num_cpus": 1},
                     "max_ongoing_requests": 12, "num_replicas": 3}
    assert deployment_options(4)["num_replicas"] == 1
    assert replica_count(None, {"GPU": 4.0, "CPU": 64.0}) == 4  # default: one per GPU
    assert replica_count(None, {"CPU": 2.0}) == 1 and replica_count(2, {"GPU": 8.0}) == 2


def test_ray_autoscaling_is_parsed_into_autoscaling_config(monkeypatch, capsys) -> None:
    """`serve --ray auto --ray-autoscaling JSON` deploys the replicas under Ray Serve's
    autoscaling_config of that JSON (Ray's cluster and Serve stood in for)."""
    pytest.importorskip("ray.serve", reason="Ray Serve is an optional extra (pip install .[ray])")
    pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
    import ray
    from ray import serve
    from server_support import free_port

    from diffusion.cli.main import main

    ran: dict[str, Any] = {}
    monkeypatch.setattr(ray, "init", lambda address=None: ran.setdefault("address", address))
    monkeypatch.setattr(ray, "cluster_resources", lambda: {"GPU": 3.0})
    monkeypatch.setattr(serve, "start", lambda **kwargs: None)
    monkeypatch.setattr(serve, "run", lambda app, **kwargs: ran.setdefault("app", app))
    monkeypatch.setattr(serve, "shutdown", lambda: None)

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt
    from diffusion.cli import serve_ray  # its wait, not every thread's time.sleep

    monkeypatch.setattr(serve_ray, "time", SimpleNamespace(sleep=interrupted))
    port = str(free_port())
    assert main(["serve", "--ray", "auto", "--ray-autoscaling", json.dumps(AUTOSCALING),
                 "--port", port]) == 0
    deployment = ran["app"]._bound_deployment
    config = deployment._deployment_config.autoscaling_config
    assert ran["address"] == "auto"
    assert (config.min_replicas, config.max_replicas, config.target_ongoing_requests) == (1, 8, 4)
    assert deployment.ray_actor_options["num_gpus"] == 1

    ran.clear()  # without it: one replica per GPU of the cluster
    assert main(["serve", "--ray", "local", "--port", port]) == 0
    deployment = ran["app"]._bound_deployment
    assert ran["address"] is None and deployment.num_replicas == 3
    assert deployment._deployment_config.autoscaling_config is None
    capsys.readouterr()

    assert main(["serve", "--ray", "auto", "--ray-autoscaling", "[1, 8]"]) == 2
    assert "give a JSON object" in capsys.readouterr().err


def test_a_replica_pins_rays_gpu(monkeypatch) -> None:
    """ray_app's replica start-up hands Ray's GPU ids to the mapping (Ray stood in for)."""
    pytest.importorskip("ray.serve", reason="Ray Serve is an optional extra (pip install .[ray])")
    pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
    import gpucore
    from diffusion.server import ray_app

    monkeypatch.setenv("GPUCORE_ADAPTER", "")  # unset, and restored after the test
    monkeypatch.setattr(ray_app.ray, "get_gpu_ids", lambda: ["1"])
    monkeypatch.setattr(gpucore, "select_adapters", lambda spec: _gpus(4, 7)())
    ray_app._pin_gpu()
    assert os.environ["GPUCORE_ADAPTER"] == "7"
