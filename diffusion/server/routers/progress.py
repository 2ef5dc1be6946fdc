"""The running jobs: /sdapi/v1/progress, /interrupt and /skip as the WebUI's; /avx/queue."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from ..schemas import ProgressResponse
from ..state import State

__all__ = ["api", "avx"]

api = APIRouter()
avx = APIRouter()


@api.get("/progress", response_model=ProgressResponse)
async def progress(state: State, skip_current_image: bool = False) -> dict[str, Any]:
    return state.worker.progress(with_image=not skip_current_image)


@api.post("/interrupt")
async def interrupt(state: State) -> None:
    state.worker.interrupt()


@api.post("/skip")
async def skip(state: State) -> None:
    state.worker.skip()


@avx.get("/queue")
async def queue_state(state: State) -> dict[str, Any]:
    worker = state.worker
    return {"pending": worker.pending(), "running": worker.running,
            "queue_size": state.queue_size, "max_size": state.max_size,
            "model": worker.model.title if worker.model else None,
            "native_size": getattr(worker.pipe, "native_size", None)}
