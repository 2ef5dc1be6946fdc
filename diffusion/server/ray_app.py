"""The server on a Ray cluster (Ray Serve): one replica per GPU, each the whole server
(`create_app`) on its GPU, behind Ray Serve's HTTP proxy with the same `/sdapi/v1` contract.

    python -m diffusion serve --ray auto --ray-replicas 4            # a running cluster
    serve run diffusion.server.ray_app:build model=/models/sd15 replicas=4

Ray's router spreads the requests over the replicas (each has its own FIFO queue of
`queue_size` jobs); `max_ongoing_requests` is set so that a replica takes as many as its queue
holds. Most endpoints answer from the replica the proxy picks. The ones about the running jobs
and the settings fan out to every replica (`DeploymentHandle.broadcast`), so a client reaches
the job it means through any replica: GET /sdapi/v1/progress (the first busy replica's job,
every running job named in `textinfo`), POST /internal/progress (the replica that has the
page's task), POST /sdapi/v1/interrupt and /skip (the job of the page's task, else every
running job, as the WebUI's act on the one it runs), POST /sdapi/v1/options (every replica
switches model and module files), POST /sdapi/v1/unload-checkpoint and reload-checkpoint.
Per replica: /avx/queue, a job's `saved_paths` (on that replica's machine).

A replica started later (autoscaling, or Ray restarting one) runs the model and options the
others were last switched to, not the deployment's first model: each switch is recorded in a
small named actor of the application (`_Current`, no CPU, detached so that it outlives the
replica that made it; kept with the deployment's settings, so a redeploy with other settings
starts afresh).

Vulkan does not read CUDA_VISIBLE_DEVICES: a replica given Ray's GPU i opens the i-th GPU
adapter (`GPUCORE_ADAPTER`, unless set), in the order `python -m gpucore info` lists them.
Needs `pip install avx-gpu[ray]`.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from typing import Annotated, Any

try:
    import ray
    from ray import serve
except ImportError as exc:  # optional extra: say how to get it
    raise ImportError("the Ray Serve deployment needs Ray: `pip install avx-gpu[ray]`") from exc
from fastapi import APIRouter, Body, Depends, FastAPI

from .api.routers.models import reload_checkpoint, set_options, unload_checkpoint
from .api.schemas import (
    InterruptRequest,
    ProgressResponse,
    TaskProgressRequest,
    TaskProgressResponse,
)
from .api.state import authorized
from .ray_plan import deployment_options, pin_replica_gpu
from .settings import ServerSettings

__all__ = ["DiffusionReplica", "build", "deployment"]


async def _everywhere(method: str, *args: Any) -> list[Any]:
    """`method(*args)` on every replica of this replica's deployment."""
    context = serve.get_replica_context()
    handle = serve.get_deployment_handle(context.deployment, context.app_name)
    return await handle.broadcast(method, *args).results_async()


def _merged_progress(answers: list[dict[str, Any]]) -> dict[str, Any]:
    busy = [a for a in answers if a["state"]["job"]]
    if not busy:
        return answers[0]
    texts = [f"replica {i}: {a['textinfo']}" for i, a in enumerate(answers) if a["state"]["job"]]
    return {**busy[0], "textinfo": "; ".join(texts)}


def _merged_task_progress(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """The answer of the replica that has the task: running it, else queueing it, else having
    finished it (a task is on one replica only)."""
    for key in ("active", "queued", "completed"):
        for answer in answers:
            if answer[key]:
                return answer
    return answers[0]


def _cluster_routes() -> APIRouter:
    api = APIRouter(prefix="/sdapi/v1", dependencies=[Depends(authorized)])
    internal = APIRouter(prefix="/internal", dependencies=[Depends(authorized)])

    @api.get("/progress", response_model=ProgressResponse)
    async def progress(skip_current_image: bool = False) -> dict[str, Any]:
        return _merged_progress(await _everywhere("replica_progress", not skip_current_image))

    @api.post("/interrupt")
    async def interrupt(body: InterruptRequest | None = None) -> dict[str, Any]:
        await _everywhere("replica_interrupt", body and body.id_task)
        return {}  # the WebUI's answer

    @api.post("/skip")
    async def skip(body: InterruptRequest | None = None) -> None:
        await _everywhere("replica_skip", body and body.id_task)

    @api.post("/options")
    async def options(body: Annotated[dict[str, Any], Body()]) -> None:
        await _everywhere("replica_options", body)

    @api.post("/unload-checkpoint")
    async def unload_checkpoint() -> dict[str, Any]:
        await _everywhere("replica_unload")
        return {}

    @api.post("/reload-checkpoint")
    async def reload_checkpoint() -> dict[str, Any]:
        await _everywhere("replica_reload")
        return {}

    @internal.post("/progress", response_model=TaskProgressResponse)
    async def task_progress(body: TaskProgressRequest) -> dict[str, Any]:
        return _merged_task_progress(await _everywhere(
            "replica_task_progress", body.id_task, body.live_preview, body.id_live_preview))

    both = APIRouter()
    both.include_router(api)
    both.include_router(internal)
    return both


def _first(app: FastAPI, router: APIRouter) -> None:
    """`router`'s routes ahead of the app's own (Starlette takes the first route that
    matches), so they answer for the replica's progress/interrupt/skip/options."""
    count = len(app.router.routes)
    app.include_router(router)
    added = app.router.routes[count:]
    del app.router.routes[count:]
    app.router.routes[0:0] = added


def _pin_gpu() -> None:
    from gpucore import select_adapters

    pin_replica_gpu(ray.get_gpu_ids(), os.environ, lambda: select_adapters("all"))


@ray.remote(num_cpus=0)
class _Current:
    """What the deployment's replicas were last switched to, for those started later."""

    def __init__(self) -> None:
        self.value: dict[str, Any] | None = None

    def get(self) -> dict[str, Any] | None:
        return self.value

    def put(self, value: dict[str, Any]) -> None:
        self.value = value


def _current() -> Any:
    """This replica's application's _Current actor (made by the first to ask)."""
    context = serve.get_replica_context()
    # @ray.remote makes _Current an ActorClass, which Ray's annotations leave a plain class
    return _Current.options(  # type: ignore[attr-defined]
        name=f"diffusion-current:{context.app_name}:{context.deployment}",
        get_if_exists=True, lifetime="detached").remote()


@serve.ingress()
class DiffusionReplica:
    """One replica: the server of `create_app(settings)` on this replica's GPU, with the
    upscalers of `settings.upscaler_dir` registered (serve --upscaler-dir)."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.key = repr(settings)  # which deployment's switches (_Current) apply here
        self.server: FastAPI | None = None  # `app` is Ray's (ASGIAppReplicaWrapper)

    def __serve_build_asgi_app__(self) -> FastAPI:
        from .api.app import create_app

        _pin_gpu()
        settings = self.settings
        if settings.upscaler_dir:  # names for hires fix and the Extras API
            from ..upscalers.models import register_upscaler_dir

            register_upscaler_dir(settings.upscaler_dir)
        current = ray.get(_current().get.remote())
        switched = current is not None and current["settings"] == self.key  # the others did
        if switched:  # the model, module files (Forge's) and VAE the others were switched to
            settings = replace(
                settings, model=current["model"],
                text_encoders=current["options"].get("forge_additional_modules", []),
                sd_vae=current["options"].get("sd_vae", "Automatic"))
        self.server = app = create_app(settings)
        if switched:
            app.state.server.options.update(current["options"])
        _first(app, _cluster_routes())
        return app

    @property
    def _app(self) -> FastAPI:
        """The app __serve_build_asgi_app__ built (Ray builds it before any call)."""
        if self.server is None:
            raise RuntimeError("this replica's app is not built yet")
        return self.server

    # what the cluster-wide routes call on every replica
    def replica_progress(self, with_image: bool) -> dict[str, Any]:
        return self._app.state.worker.progress(with_image=with_image)

    def replica_task_progress(self, task: str | None, live_preview: bool,
                              id_live_preview: int) -> dict[str, Any]:
        return self._app.state.worker.task_progress(task, live_preview=live_preview,
                                                      id_live_preview=id_live_preview)

    def replica_interrupt(self, task: str | None) -> None:
        self._app.state.worker.interrupt(task)

    def replica_skip(self, task: str | None) -> None:
        self._app.state.worker.skip(task)

    async def replica_options(self, body: dict[str, Any]) -> None:
        state = self._app.state.server
        await set_options(state, body)
        chosen = state.model or state.worker.model  # not a request's override
        await _current().put.remote({"settings": self.key, "options": dict(state.options),
                                     "model": str(chosen.path)})

    async def replica_unload(self) -> None:
        await unload_checkpoint(self._app.state.server)

    async def replica_reload(self) -> None:
        await reload_checkpoint(self._app.state.server)

    def replica_loaded(self) -> bool:
        """Whether this replica's model is on its GPU (not unloaded)."""
        return not any(slot.unloaded for slot in self._app.state.worker.slots)

    def replica_model(self) -> str:
        """The path of the model this replica runs."""
        return str(self._app.state.worker.model.path)

    def replica_modules(self) -> list[str]:
        """The paths of the module files (Forge's, then sd_vae's) this replica's model runs
        with."""
        return [str(path) for path in self._app.state.worker.model.files]


def deployment(settings: ServerSettings | None = None, /, *, replicas: int | None = None,
               autoscaling: dict[str, Any] | None = None, gpus_per_replica: float = 1.0,
               cpus_per_replica: float | None = None, name: str = "diffusion",
               **fields: Any) -> Any:
    """The Ray Serve application: `replicas` copies of the server of `settings` (or of
    ServerSettings(**fields); with both, `fields` replace those settings), or Ray's
    `autoscaling_config` (e.g. {"min_replicas": 1, "max_replicas": 8,
    "target_ongoing_requests": 4}), each holding `gpus_per_replica` GPUs (0: CPU only, for tests
    on software adapters)."""
    settings = replace(settings or ServerSettings(), **fields)
    options = deployment_options(settings.queue_size, replicas=replicas,
                                 autoscaling=autoscaling, gpus_per_replica=gpus_per_replica,
                                 cpus_per_replica=cpus_per_replica, name=name)
    # serve.deployment(cls) returns a Deployment; its overloads type it as a decorator
    deployment = serve.deployment(DiffusionReplica)
    return deployment.options(**options).bind(settings)  # type: ignore[attr-defined]


def build(args: dict[str, Any]) -> Any:
    """`serve run diffusion.server.ray_app:build key=value ...`: replicas, autoscaling (JSON),
    gpus_per_replica, and the ServerSettings by name (model, models_dir, queue_size,
    max_size, outputs, api_auth, dtype, ...)."""
    args = dict(args)
    numbers = {"replicas": int, "gpus_per_replica": float, "queue_size": int, "max_size": int}
    chosen: dict[str, Any] = {k: numbers[k](v) if k in numbers else v for k, v in args.items()}
    if isinstance(chosen.get("autoscaling"), str):  # on the command line: JSON
        chosen["autoscaling"] = json.loads(chosen["autoscaling"])
    return deployment(**chosen)
