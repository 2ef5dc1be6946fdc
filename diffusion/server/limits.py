"""The WebUI's error body, and the request-body size limit (HTTP 413)."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["BodyLimit", "error_body"]


def error_body(error: str, detail: str, *, errors: str | None = None) -> dict[str, Any]:
    """The WebUI API's error shape: {error, detail, body, errors}; `detail` says what to do."""
    return {"error": error, "detail": detail, "body": "", "errors": detail if errors is None
            else errors}


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
            await self._refuse(send)
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
                    await self._refuse(send)
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

    async def _refuse(self, send: Any) -> None:
        mib = self.max_bytes / 2**20
        payload = json.dumps(error_body(
            "PayloadTooLarge", f"request body is over this server's limit of {mib:g} MiB; "
            "send smaller images")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode())]})
        await send({"type": "http.response.body", "body": payload})
