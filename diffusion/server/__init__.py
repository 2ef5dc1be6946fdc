"""A drop-in for the Stable Diffusion WebUI's (AUTOMATIC1111) HTTP API, `/sdapi/v1`, plus the
web page: `python -m diffusion serve`. `create_app(settings)` builds the FastAPI app of a
`ServerSettings` (what `serve` parses).

Imports point one way: `ray_app` (the app's replicas on Ray Serve; `ray_plan`, their GPU and
deployment options, imports no Ray) -> `api` (HTTP: the app,
routers, schemas, requests -> jobs) -> `jobs` (the queue, worker threads and processes) ->
`settings` -> `catalog` (models, module files, image encoders on disk); `images` (pictures in
and out, previews, saved files) lies beneath api and jobs.
"""

from __future__ import annotations

from typing import Any

__all__ = ["ServerSettings", "create_app"]


def __getattr__(name: str) -> Any:
    # imported on use: `python -m diffusion --help` needs no FastAPI
    if name == "create_app":
        from .api.app import create_app

        return create_app
    if name == "ServerSettings":
        from .settings import ServerSettings

        return ServerSettings
    raise AttributeError(name)
