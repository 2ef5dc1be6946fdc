"""OpenAI's images API: POST /v1/images/generations and /v1/images/edits, GET /v1/models, and
the pictures `response_format: "url"` points at (GET /v1/images/files/...).

The requests become the WebUI's txt2img / img2img bodies (diffusion.server.api.openai_images)
and run through generate.run_generation: the same queue, workers, limits and checks. With
--api-auth, a client's API key is one of its USER:PASS pairs, sent as OpenAI clients send keys
(`Authorization: Bearer USER:PASS`); HTTP Basic works too. Errors have OpenAI's shape
({"error": {message, type, param, code}}, diffusion.server.api.limits).
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.exceptions import HTTPException
from fastapi.responses import FileResponse
from fastapi.security import HTTPBasic, HTTPBasicCredentials
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from ...images import PixelBudget
from ..openai_images import (
    ImagesRequest,
    OpenAIError,
    edit_body,
    generation_body,
    image_from_bytes,
)
from ..state import ServerState, State
from .generate import run_generation

__all__ = ["router"]

_BASIC = HTTPBasic(auto_error=False)


def bearer_authorized(state: State, request: Request,
                      basic: Annotated[HTTPBasicCredentials | None, Depends(_BASIC)]) -> None:
    """401 unless the request carries one of --api-auth's USER:PASS pairs as its Bearer key
    (or as HTTP Basic credentials); open when --api-auth is not set."""
    if not state.users:
        return
    scheme, _, key = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer":
        user, _, password = key.strip().partition(":")
    elif basic is not None:
        user, password = basic.username, basic.password
    else:
        user = password = ""
    if not any(secrets.compare_digest(user.encode(), name.encode())
               and secrets.compare_digest(password.encode(), word.encode())
               for name, word in state.users.items()):
        raise HTTPException(401, "incorrect or missing API key: send one of --api-auth's "
                                 "USER:PASS pairs as the key (Authorization: Bearer USER:PASS)",
                            headers={"WWW-Authenticate": "Bearer"})


router = APIRouter(prefix="/v1", dependencies=[Depends(bearer_authorized)])


def _answer(state: ServerState, request: Request, result: dict[str, Any],
            response_format: str | None) -> dict[str, Any]:
    """OpenAI's {created, data: [{b64_json} | {url}]} of a WebUI answer."""
    if response_format != "url":
        return {"created": int(time.time()),
                "data": [{"b64_json": image} for image in result["images"] or []]}
    import json

    outputs = state.outputs.resolve()
    saved = json.loads(result["info"])["saved_paths"]
    base = str(request.url_for("image_file", path="x"))[:-1]
    return {"created": int(time.time()), "data": [
        {"url": base + Path(path).resolve().relative_to(outputs).as_posix()}
        for path in saved]}


@router.post("/images/generations")
async def generations(body: ImagesRequest, state: State, request: Request) -> dict[str, Any]:
    webui = generation_body(body, state.registry, state.max_size)
    result = await run_generation(state, webui, "txt2img", client=request)
    return _answer(state, request, result, body.response_format)


async def _read_upload(value: Any, param: str) -> bytes:
    if not isinstance(value, UploadFile):
        raise OpenAIError(f"{param} must be an uploaded file (multipart/form-data), not a "
                          "text field", param)
    return await value.read()


@router.post("/images/edits", openapi_extra={"requestBody": {"required": True, "content": {
    "multipart/form-data": {"schema": ImagesRequest.model_json_schema()}}}})
async def edits(state: State, request: Request) -> dict[str, Any]:
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise OpenAIError("send the edit as multipart/form-data: the image file as `image` "
                          "(or `image[]`), the prompt and the other fields as form fields",
                          "image")
    form = await request.form()
    images = form.getlist("image") + form.getlist("image[]")
    if not images:
        raise OpenAIError("send the image to edit (`image`, or several as `image[]` for an "
                          "edit model's reference pictures)", "image")
    fields = {key: value for key, value in form.multi_items()
              if key not in ("image", "image[]", "mask") and isinstance(value, str)}
    try:
        body = ImagesRequest.model_validate(fields)
    except ValidationError as exc:  # the field and what it wants
        first = exc.errors()[0]
        param = ".".join(str(part) for part in first["loc"]) or None
        raise OpenAIError(f"{param or 'form'}: {first['msg']}", param) from None
    budget = PixelBudget()  # the pictures and the mask together
    pictures = [image_from_bytes(await _read_upload(upload, "image"), "image", budget)
                for upload in images]
    mask = None
    if "mask" in form:
        mask = image_from_bytes(await _read_upload(form["mask"], "mask"), "mask", budget)
    webui = edit_body(body, pictures, mask, state.registry, state.max_size)
    result = await run_generation(state, webui, "img2img", client=request)
    return _answer(state, request, result, body.response_format)


@router.get("/images/files/{path:path}", name="image_file")
async def image_file(path: str, state: State) -> FileResponse:
    """A picture a `url` answer named: a PNG in the outputs folder, nothing outside it."""
    outputs = state.outputs.resolve()
    file = (outputs / path).resolve()
    if not file.is_relative_to(outputs) or file.suffix != ".png" or not file.is_file():
        raise HTTPException(404, f"no picture {path!r} in this server's outputs")
    return FileResponse(file, media_type="image/png")


@router.get("/models")
async def models(state: State) -> dict[str, Any]:
    """The server's models as OpenAI lists models; an `id` is what `model` takes."""
    return {"object": "list", "data": [
        {"id": entry.name, "object": "model", "created": 0, "owned_by": "avx-gpu"}
        for entry in state.registry.entries]}
