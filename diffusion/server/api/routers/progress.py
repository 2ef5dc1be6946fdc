"""The running jobs: /sdapi/v1/progress, /interrupt and /skip as the WebUI's; /avx/queue;
the WebUI page's own /internal/progress, one task's progress (its `id_task`: the
`force_task_id` the page generated with), so that two pages each follow their own job, and
/interrupt and /skip given that `id_task`, so that each stops its own."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..schemas import (
    InterruptRequest,
    ProgressResponse,
    TaskProgressRequest,
    TaskProgressResponse,
)
from ..state import State

__all__ = ["api", "avx", "internal"]

api = APIRouter()
avx = APIRouter()
internal = APIRouter(prefix="/internal")


@api.get("/progress", response_model=ProgressResponse)
async def progress(state: State, skip_current_image: bool = False) -> dict[str, Any]:
    return state.worker.progress(with_image=not skip_current_image)


@internal.post("/progress", response_model=TaskProgressResponse)
async def task_progress(state: State, body: TaskProgressRequest) -> dict[str, Any]:
    return state.worker.task_progress(body.id_task, live_preview=body.live_preview,
                                      id_live_preview=body.id_live_preview)


@api.post("/interrupt")
async def interrupt(state: State, body: InterruptRequest | None = None) -> dict[str, Any]:
    state.worker.interrupt(None if body is None else body.id_task)
    return {}  # the WebUI's answer (its /skip answers null, as this one's)


@api.post("/skip")
async def skip(state: State, body: InterruptRequest | None = None) -> None:
    state.worker.skip(None if body is None else body.id_task)


@avx.get("/queue")
async def queue_state(state: State) -> dict[str, Any]:
    worker = state.worker
    return {"pending": worker.pending(), "running": worker.running,
            "queue_size": state.queue_size, "max_size": state.max_size,
            "model": worker.model.title if worker.model else None,
            "native_size": None if worker.facts is None else worker.facts.native_size}
