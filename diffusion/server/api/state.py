"""What every route of the server shares, and the FastAPI dependencies that hand it over.

`create_app` builds one `ServerState` and keeps it on `app.state.server`; a route takes it as
`state: State` (a dependency) instead of closing over `create_app`'s locals, so the routes
live in their own modules (diffusion.server.api.routers).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from fastapi.exceptions import HTTPException
from fastapi.security import HTTPBasic, HTTPBasicCredentials

from ...faces import FaceFolders, FaceRestorers
from ...interrogate import ClipInterrogator, DeepBooru
from ...loaders.control.catalog import ControlModelCache, ControlModelDir
from ...pipelines.sd.memory import MemoryMode
from ...text.embeddings import EmbeddingDatabase
from ...text.styles import StyleDatabase
from ..catalog.image_encoders import ImageEncoders
from ..catalog.models_dir import ModelEntry, ModelRegistry
from ..jobs.worker import QueueFull, Worker, WorkerLost
from ..previews import Previews
from .adetailer_units import ADetailerModels

__all__ = ["RETRY_AFTER_S", "ServerState", "State", "authorized", "parse_auth", "submit",
           "wait"]

RETRY_AFTER_S = 5
_BASIC = HTTPBasic(auto_error=False)


@dataclass
class ServerState:
    """The worker, the models, the WebUI options clients set, and the server's settings."""

    worker: Worker
    registry: ModelRegistry
    options: dict[str, Any]
    outputs: Path
    queue_size: int
    max_size: int
    users: dict[str, str] = field(default_factory=dict)  # --api-auth: user -> password
    cmd_flags: dict[str, Any] = field(default_factory=dict)
    embeddings: EmbeddingDatabase | None = None
    lora_dir: str | os.PathLike[str] | None = None
    styles: StyleDatabase = field(default_factory=StyleDatabase)  # --styles-file's
    # --controlnet-dir's models, and those loaded (diffusion.server.api.controlnet_units)
    controlnets: ControlModelDir = field(default_factory=lambda: ControlModelDir(None))
    control_cache: ControlModelCache = field(default_factory=ControlModelCache)
    image_encoders: ImageEncoders = field(default_factory=ImageEncoders)  # IP-Adapter units'
    # ADetailer's detection models (--adetailer-dir; diffusion.server.api.adetailer_units)
    adetailer: ADetailerModels = field(default_factory=lambda: ADetailerModels(None))
    # the model and module files /options chose: what a request without overrides runs
    model: ModelEntry | None = None
    previews: Previews = field(default_factory=Previews)  # live previews (the options' three)
    # face restoration's files and the networks read from them
    faces: FaceRestorers = field(default_factory=lambda: FaceRestorers(FaceFolders()))
    # /sdapi/v1/interrogate's DeepDanbooru (--deepdanbooru-dir)
    deepbooru: DeepBooru = field(default_factory=lambda: DeepBooru(None))
    # its CLIP interrogator (--clip-models-path, --interrogate-dir)
    clip_interrogator: ClipInterrogator = field(
        default_factory=lambda: ClipInterrogator(None, None))
    # the memory mode (--medvram, --lowvram, --max-vram) the video jobs load their models in,
    # as the loader sets it on the picture models
    memory: MemoryMode | None = None
    no_half_vae: bool = False  # --no-half-vae: the video models' VAE in float32 too


def _state(request: Request) -> ServerState:
    return request.app.state.server


State = Annotated[ServerState, Depends(_state)]


def parse_auth(api_auth: str | None) -> dict[str, str]:
    """--api-auth's USER:PASS[,USER:PASS...] as {user: password}; ValueError if malformed."""
    users: dict[str, str] = {}
    for pair in (api_auth or "").split(","):
        if pair.strip():
            user, sep, password = pair.strip().partition(":")
            if not sep or not user:
                raise ValueError(f"--api-auth wants USER:PASS[,USER:PASS...], got {pair!r}")
            users[user] = password
    return users


def authorized(state: State,
               credentials: Annotated[HTTPBasicCredentials | None, Depends(_BASIC)]) -> None:
    """The routers' dependency: 401 unless the HTTP Basic credentials are one of --api-auth's
    (compared in constant time); open when --api-auth is not set."""
    if state.users and (credentials is None or not any(
            secrets.compare_digest(credentials.username.encode(), user.encode())
            and secrets.compare_digest(credentials.password.encode(), password.encode())
            for user, password in state.users.items())):
        raise HTTPException(401, "incorrect or missing username/password (HTTP Basic, as set "
                                 "with --api-auth)", headers={"WWW-Authenticate": "Basic"})


def submit(state: ServerState, run: Any, *, exclusive_load: Any = None,
           exclusive: bool = False, task: str | None = None) -> Future:
    """Queue `run` on the worker (or, with `exclusive_load`, a switch to that model entry),
    alone on the devices where `exclusive`, known to /internal/progress by `task`; 503 with
    Retry-After when the queue is full."""
    try:
        if exclusive_load is not None:
            return state.worker.submit_load(exclusive_load)
        return state.worker.submit(run, exclusive=exclusive, task=task)
    except QueueFull:
        raise HTTPException(503, f"the queue is full ({state.queue_size} jobs waiting); retry "
                                 "in a few seconds",
                            headers={"Retry-After": str(RETRY_AFTER_S)}) from None


async def wait(future: Future, request: Request | None = None) -> Any:
    """The job's result, waiting without holding a thread; with the `request` (its body read),
    a client that goes away cancels the job while it is still in the queue (a running one
    finishes). A worker process that died running it is a 503 (retry)."""
    result = asyncio.wrap_future(future)
    gone = None if request is None else asyncio.ensure_future(_disconnect(request))
    try:
        if gone is not None:
            await asyncio.wait((result, gone), return_when=asyncio.FIRST_COMPLETED)
            if not result.done() and future.cancel():  # False once it runs: it finishes
                raise HTTPException(499, "the client went away; its job left the queue")
        return await result
    except WorkerLost as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": str(RETRY_AFTER_S)}) from None
    finally:
        if gone is not None:
            gone.cancel()


async def _disconnect(request: Request) -> None:
    """Returns when the client has gone (uvicorn says so only when it has: no response has
    been sent while a job is waited for)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
