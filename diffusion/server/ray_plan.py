"""What the Ray Serve application (diffusion.server.ray_app) is made of, as plain functions that
import no Ray, so they can be checked where Ray is absent: which GPU adapter a replica opens, and
the options of its Serve deployment (a fixed count of replicas or Ray's `autoscaling_config`).
"""

from __future__ import annotations

from collections.abc import Callable, MutableMapping, Sequence
from typing import Any, Protocol

__all__ = ["deployment_options", "pin_replica_gpu", "replica_count"]


class _Adapter(Protocol):
    @property
    def index(self) -> int:
        """Its index in `python -m gpucore info`'s list (GPUCORE_ADAPTER's value)."""


def pin_replica_gpu(gpu_ids: Sequence[str | int], environ: MutableMapping[str, str],
                    gpus: Callable[[], Sequence[_Adapter]]) -> None:
    """Sets `environ["GPUCORE_ADAPTER"]` for a replica that Ray gave the GPUs `gpu_ids`
    (`ray.get_gpu_ids()`): Vulkan does not read CUDA_VISIBLE_DEVICES, so Ray's GPU *i* is the
    *i*-th of `gpus()` (gpucore.select_adapters("all"): every GPU once, in `python -m gpucore
    info`'s order). Nothing changes when GPUCORE_ADAPTER is already set (yours wins), when Ray
    gave no GPU (a CPU-only replica), or when there are fewer GPU adapters than Ray's index."""
    if environ.get("GPUCORE_ADAPTER") or not gpu_ids:
        return
    every = gpus()
    wanted = int(gpu_ids[0])
    if wanted < len(every):
        environ["GPUCORE_ADAPTER"] = str(every[wanted].index)


def replica_count(requested: int | None, cluster_resources: dict[str, float]) -> int:
    """`--ray-replicas`, else one replica per GPU of the cluster (`ray.cluster_resources()`),
    at least one."""
    return requested or max(int(cluster_resources.get("GPU", 0)), 1)


def deployment_options(queue_size: int, *, replicas: int | None = None,
                       autoscaling: dict[str, Any] | None = None, gpus_per_replica: float = 1.0,
                       cpus_per_replica: float | None = None, name: str = "diffusion"
                       ) -> dict[str, Any]:
    """The keyword arguments of Ray Serve's `Deployment.options` for replicas whose queues hold
    `queue_size` jobs: `autoscaling_config` when `autoscaling` is given (--ray-autoscaling's
    JSON object, passed on as is), else `num_replicas` (`replicas`, or 1); each replica's actor
    holding `gpus_per_replica` GPUs (and `cpus_per_replica` CPUs when given)."""
    actor: dict[str, Any] = {"num_gpus": gpus_per_replica}
    if cpus_per_replica is not None:
        actor["num_cpus"] = cpus_per_replica
    options: dict[str, Any] = {"name": name, "ray_actor_options": actor,
                               # the queue, the running job, and room for progress/interrupt
                               "max_ongoing_requests": queue_size + 8}
    if autoscaling:
        options["autoscaling_config"] = autoscaling
    else:
        options["num_replicas"] = replicas or 1
    return options
