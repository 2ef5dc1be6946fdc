"""Errors as the WebUI API reports them ({error, detail, body, errors}), the request-body size
limit (HTTP 413), and bodies that are not UTF-8 (422 naming the byte)."""

from __future__ import annotations

import json
import re
import reprlib
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from gpucore import MemoryLimitError

from ..images import ImageError
from .generation import RequestError

__all__ = ["BodyLimit", "NotUtf8", "add_error_handlers", "error_body", "openai_error_body",
           "utf8_text"]


def error_body(error: str, detail: str, *, errors: str | None = None) -> dict[str, Any]:
    """The WebUI API's error shape: {error, detail, body, errors}; `detail` says what to do."""
    return {"error": error, "detail": detail, "body": "", "errors": detail if errors is None
            else errors}


class NotUtf8(ValueError):
    """A request body that is not UTF-8 (JSON must be, RFC 8259 section 8.1); the message
    names the first bad byte, where it is and what comes before it."""

    def __init__(self, error: UnicodeDecodeError) -> None:
        body = bytes(error.object)
        before = body[max(error.start - 24, 0):error.start].decode("utf-8", "replace")
        super().__init__(
            f"the body is not UTF-8: byte 0x{body[error.start]:02X} at offset {error.start} "
            f"(after {before!r}) {error.reason}; send JSON encoded as UTF-8")


def utf8_text(body: bytes) -> str:
    """`body` decoded as UTF-8; NotUtf8 (a 422 saying where) when it is not."""
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NotUtf8(exc) from None


class BodyLimit:
    """ASGI middleware: a request body over `max_bytes` gets 413 before it is parsed, by its
    Content-Length or, for a chunked body, once the bytes read pass the limit."""

    def __init__(self, app: Any, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._refuse(send, scope.get("path", ""))
            return
        if length is None and scope.get("method") in ("POST", "PUT", "PATCH"):
            chunks, total, more = [], 0, True
            while more:
                message = await receive()
                if message["type"] != "http.request":
                    break
                chunks.append(message.get("body", b""))
                total += len(chunks[-1])
                more = message.get("more_body", False)
                if total > self.max_bytes:
                    await self._refuse(send, scope.get("path", ""))
                    return
            body = b"".join(chunks)
            sent = False

            async def replay() -> dict[str, Any]:
                nonlocal sent
                if sent:
                    return await receive()
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            await self.app(scope, replay, send)
            return
        await self.app(scope, receive, send)

    async def _refuse(self, send: Any, path: str) -> None:
        mib = self.max_bytes / 2**20
        detail = f"request body is over this server's limit of {mib:g} MiB; send smaller images"
        payload = json.dumps(openai_error_body(detail, 413) if path.startswith("/v1/")
                             else error_body("PayloadTooLarge", detail)).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})


# the validation errors as a 422 shows them: each one's input (a wrong field may hold a 50 MiB
# picture, or be the whole body) cut short
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = 120


def openai_error_body(message: str, status: int, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error shape ({"error": {message, type, param, code}}), for the /v1 routes."""
    kind = "server_error" if status >= 500 else "invalid_request_error"
    code = {401: "invalid_api_key", 413: "request_too_large"}.get(status)
    return {"error": {"message": message, "type": kind, "param": param, "code": code}}


# a message's values are echoed cut short: one quoted as repr quotes it, or a run without
# spaces (a number, a dict key in a field's place), over LONG characters (longer than a
# name or path usually is) shows its first SHOWN and its length; a message over
# MAX_DETAIL (a value echoed unquoted, as a list) its first MAX_DETAIL. Else a 200 KB
# sampler_name came back as a 200 KB detail.
LONG, SHOWN, MAX_DETAIL = 200, 60, 10_000
_VALUE = re.compile(r"""(?<!\w)(['"])((?:\\.|(?!\1)[^\\])*)\1(?!\w)|\S{""" + f"{LONG + 1},}}")


def _cut(match: re.Match[str]) -> str:
    quote, inside = match.group(1, 2)
    if quote is None:
        value = match.group()
        return f"{value[:SHOWN]}... ({len(value):,} characters)"
    if len(inside) <= LONG:
        return match.group()
    return f"{quote}{inside[:SHOWN]}...{quote} ({len(inside):,} characters)"


def shorten(detail: str) -> str:
    """`detail` with its long values cut short (LONG, SHOWN, MAX_DETAIL above), e.g.
    "unknown sampler_name 'xxx...' (200,000 characters)"; short messages unchanged."""
    detail = _VALUE.sub(_cut, detail)
    if len(detail) > MAX_DETAIL:
        detail = f"{detail[:MAX_DETAIL]}... ({len(detail):,} characters)"
    return detail


def _answer(request: Request, status: int, error: str, detail: str, *,
            errors: str | None = None, param: str | None = None,
            headers: Mapping[str, str] | None = None) -> JSONResponse:
    """The error in the shape of the API asked: OpenAI's on /v1 (a 422 there is OpenAI's 400),
    the WebUI's elsewhere; its values cut short (shorten)."""
    detail, param = shorten(detail), None if param is None else shorten(param)
    errors = None if errors is None else shorten(errors)
    if request.url.path.startswith("/v1/"):
        status = 400 if status == 422 else status
        return JSONResponse(openai_error_body(detail, status, param), status_code=status,
                            headers=headers)
    return JSONResponse(error_body(error, detail, errors=errors), status_code=status,
                        headers=headers)


def add_error_handlers(app: FastAPI) -> None:
    """Bad input -> 422 saying what to change (a picture over --max-vram's budget too); no
    traceback ever reaches a client."""
    @app.exception_handler(RequestError)
    @app.exception_handler(ImageError)
    @app.exception_handler(NotUtf8)
    async def bad_request(request: Request, exc: ValueError) -> JSONResponse:
        return _answer(request, 422, type(exc).__name__, str(exc),
                       param=getattr(exc, "param", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        problems, params = [], []
        for error in exc.errors():
            if error.get("type") == "json_invalid":  # FastAPI's loc is ("body", position)
                why = (error.get("ctx") or {}).get("error") or error.get("msg", "")
                at = [part for part in error.get("loc", ()) if isinstance(part, int)]
                why += f" at character {at[0]}" if at else ""
                problems.append(f"the body is not valid JSON ({why}); send a JSON object")
                continue
            where = ".".join(str(part) for part in error.get("loc", ()) if part != "body")
            params.append(where)
            problems.append(f"{where or 'body'}: {error.get('msg', 'invalid')}")
        return _answer(request, 422, "RequestValidationError", "; ".join(problems),
                       errors=_SHORT.repr(exc.errors()[:5]),
                       param=params[0] if params else None)

    # Starlette's class: FastAPI raises it too (an unknown path, a body it cannot read)
    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        if isinstance(exc.__cause__, UnicodeDecodeError):  # FastAPI's bare "error parsing"
            return await bad_request(request, NotUtf8(exc.__cause__))
        return _answer(request, exc.status_code, "HTTPException", str(exc.detail),
                       headers=exc.headers)

    @app.exception_handler(MemoryLimitError)
    @app.exception_handler(ValueError)
    async def value_error(request: Request, exc: Exception) -> JSONResponse:
        # the picture needs more than --max-vram allows (a smaller one fits); what the
        # pipeline refuses (e.g. an inpainting model asked for txt2img)
        return _answer(request, 422, type(exc).__name__, str(exc))

    @app.exception_handler(Exception)
    async def failure(request: Request, exc: Exception) -> JSONResponse:
        return _answer(request, 500, type(exc).__name__, f"the server failed: {exc}")
