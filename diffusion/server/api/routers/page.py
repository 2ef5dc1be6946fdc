"""The web page at / (its files under /static are mounted by create_app)."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.exceptions import HTTPException
from fastapi.responses import FileResponse

__all__ = ["STATIC", "router"]

STATIC = Path(__file__).resolve().parent.parent / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    page = STATIC / "index.html"
    if not page.is_file():
        raise HTTPException(404, "the web page is not installed; the API is at /sdapi/v1 "
                                 "(see /docs)")
    return FileResponse(page)
