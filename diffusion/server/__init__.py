"""A drop-in for the Stable Diffusion WebUI's (AUTOMATIC1111) HTTP API, `/sdapi/v1`, plus the
web page: `python -m diffusion serve`. `create_app(...)` builds the FastAPI app."""

from __future__ import annotations

from typing import Any

__all__ = ["create_app"]


def __getattr__(name: str) -> Any:
    if name == "create_app":  # imported on use: `python -m diffusion --help` needs no FastAPI
        from .api.app import create_app

        return create_app
    raise AttributeError(name)
