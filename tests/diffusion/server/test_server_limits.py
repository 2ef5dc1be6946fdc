"""Requests the server cannot serve are refused at once, with a 4xx naming the limit, and
leave it as it was: a 2 MB and a 50 MB prompt (they once held the server for seconds and
minutes before a 500), a body that is not UTF-8 on every route that reads one (a bare 400
"There was an error parsing the body" before), and steps past the WebUI slider's 150 are
taken. A stand-in pipeline: no model, no device; the refusals happen before anything reaches
it."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

pytest.importorskip("fastapi", reason="server extra (pip install .[server])")

from fastapi.testclient import TestClient
from server_support import StandInPipeline

from diffusion.pipelines.request import MAX_PROMPT_CHARS
from diffusion.pipelines.sd.stable_diffusion import GenerationResult
from diffusion.server import create_app
from gpucore import MemoryLimitError

pytestmark = pytest.mark.nodevice


class StandIn(StandInPipeline):
    """The stand-in pipeline, out of device memory for the prompt "over budget"."""

    def generate(self, request: Any, *, observer: Any) -> GenerationResult:
        if request.prompt == "over budget":
            self.requests.append(request)
            raise MemoryLimitError(2 << 30, 3 << 30, "a 4096x4096 decode")
        return super().generate(request, observer=observer)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    model = tmp_path_factory.mktemp("limits") / "stand-in"
    model.mkdir()
    pipe = StandIn()
    app = create_app(model=model, loader=lambda path: pipe, max_body_bytes=64 * 2**20)
    with TestClient(app) as client:
        yield client, pipe


@pytest.mark.parametrize("size", [2 * 10**6, 50 * 10**6])
def test_a_huge_prompt_is_a_quick_422_naming_the_limit(served: Any, size: int) -> None:
    client, pipe = served
    body = json.dumps({"prompt": "x" * size, "steps": 2})
    start = time.perf_counter()
    response = client.post("/sdapi/v1/txt2img", content=body,
                           headers={"content-type": "application/json"})
    took = time.perf_counter() - start
    assert response.status_code == 422, response.text[:300]
    assert f"over the limit of {MAX_PROMPT_CHARS:,}" in response.json()["detail"]
    assert took < 2.0, f"{took:.2f} s"  # reading and parsing 50 MB of JSON: ~0.4 s alone
    assert pipe.requests == []
    assert client.get("/avx/queue").json()["pending"] == 0  # still answering, nothing queued


def test_steps_past_150_are_taken(served: Any) -> None:
    client, pipe = served
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "a", "steps": 400, "seed": 3})
    assert response.status_code == 200, response.text
    assert pipe.requests[-1].steps == 400 and pipe.requests[-1].seed == 3
    assert client.post("/sdapi/v1/txt2img", json={"prompt": "a", "steps": 1001}
                       ).status_code == 422


def test_a_picture_over_the_memory_budget_is_a_422_naming_the_need(served: Any) -> None:
    client, _ = served
    response = client.post("/sdapi/v1/txt2img", json={"prompt": "over budget", "steps": 2})
    assert response.status_code == 422, response.text
    assert "at least 3.00 GiB" in response.json()["detail"]
    assert client.post("/sdapi/v1/txt2img", json={"prompt": "fine", "steps": 2}).status_code \
        == 200


def _routes_with_a_body(client: Any) -> list[str]:
    spec = client.app.openapi()
    return [path for path, operations in spec["paths"].items()
            if "requestBody" in operations.get("post", {})]


def test_a_body_that_is_not_utf8_is_a_422_naming_the_byte_on_every_route(served: Any) -> None:
    client, pipe = served
    routes = _routes_with_a_body(client)  # each route added later is checked too
    assert {"/sdapi/v1/txt2img", "/sdapi/v1/options", "/sdapi/v1/png-info"} <= set(routes)
    latin1 = '{"prompt": "café au lait", "steps": 2}'.encode("latin-1")
    before = len(pipe.requests)
    for path in routes:
        response = client.post(path, content=latin1,
                               headers={"content-type": "application/json"})
        says = ("the body is not UTF-8: byte 0xE9 at offset 15 (after '{\"prompt\": \"caf') "
                "invalid continuation byte; send JSON encoded as UTF-8")
        body = response.json()
        if path.startswith("/v1/"):  # OpenAI's images API: its 400 and error shape
            assert response.status_code == 400, (path, response.text)
            says = "multipart/form-data" if path == "/v1/images/edits" else says
            assert says in body["error"]["message"], (path, body)
            continue
        assert response.status_code == 422, (path, response.text)
        assert body["error"] == "NotUtf8", (path, body)
        assert body["detail"] == says, (path, body)
    assert len(pipe.requests) == before  # nothing reached the pipeline
    utf8 = client.post("/sdapi/v1/txt2img", content=latin1.decode("latin-1").encode(),
                       headers={"content-type": "application/json"})
    assert utf8.status_code == 200 and pipe.requests[-1].prompt == "café au lait"
