"""ADetailer's own route: `/adetailer/v1/ad_model`, the detection models its units may name
(`serve --adetailer-dir DIR`, default the models folder's `adetailer`); the units of txt2img /
img2img are read by diffusion.server.api.adetailer_units."""

from __future__ import annotations

from fastapi import APIRouter

from ..state import State

__all__ = ["router"]

router = APIRouter(prefix="/adetailer/v1")


@router.get("/ad_model")
def ad_model(state: State) -> dict[str, list[str]]:
    """The model names a unit's ad_model may take (the folder's .pt files)."""
    return {"ad_model": state.adetailer.names()}
