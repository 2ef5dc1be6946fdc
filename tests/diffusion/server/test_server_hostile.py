"""Hostile requests to the scripts, Extras and OpenAI routes get a 4xx naming what to change,
at once: X/Y/Z ranges and orders of millions of values (they once took the server's memory
until the kernel killed it, or failed with an empty 500), a range with a step of 0, grid
margins of a billion pixels or of the wrong type, an upscale to 134 billion pixels (killed the
server), an SD upscale of too many tiles refused before its upscale runs, non-finite
outpainting sizes, and a decompression bomb uploaded to /v1/images/edits (a 500). Values of
200 KB echoed back in a message cut short (a 200 KB detail before), a job's seed past 2**64
(its last image's, torch's per-step noise's) and a damaged ADetailer model refused before the
job is queued (by the worker, after pictures were drawn, before). A stand-in pipeline: no model, no
device; the refusals happen before anything reaches it."""

from __future__ import annotations

import base64
import io
import json
import re
import struct
import zlib
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="server extra (pip install .[server])")

from fastapi.testclient import TestClient
from PIL import Image
from server_support import StandInPipeline

from diffusion.server import create_app, images
from diffusion.server.api.routers import extras
from diffusion.server.api.scripts import sd_upscale
from diffusion.server.api.scripts.values import split_values, typed_values
from diffusion.upscalers.by_name import MAX_PIXELS, upscale

pytestmark = pytest.mark.nodevice


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    model = tmp_path_factory.mktemp("hostile") / "stand-in"
    model.mkdir()
    pipe = StandInPipeline()
    detectors = model.parent / "adetailer"
    detectors.mkdir()
    (detectors / "damaged.pt").write_bytes(np.random.default_rng(0).bytes(4096))
    app = create_app(model=model, loader=lambda path: pipe, adetailer_dir=detectors)
    with TestClient(app) as client:
        yield client, pipe


def _png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    rng = np.random.default_rng(width * height)
    Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(
        buffer, format="PNG")
    return buffer.getvalue()


def _bomb() -> bytes:
    """A 1x1 PNG whose header says 20000x20000 (Pillow refuses it on open, unread)."""
    data = bytearray(_png(1, 1))
    header = struct.pack(">II", 20000, 20000) + bytes(data[24:29])  # IHDR after its tag
    data[16:29] = header
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + header))
    return bytes(data)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


XYZ_REST = ([], 0, "", [], 0, "", [])


@pytest.mark.parametrize(("text", "kind", "says"), [
    ("1-1000000000000", "int", "makes 1,000,000,000,000 values, over this server's limit"),
    ("1-5 [1000000000]", "int", "makes 1,000,000,000 values"),
    ("1-5 [1000000000]", "float", "makes 1,000,000,000 values"),
    ("1-5 (+0.00000001)", "float", "values, over this server's limit of 100"),
    ("1-5 (+0)", "int", "'1-5 (+0)' has a step of 0; send a step such as (+1)"),
    ("0-1 (+0.0)", "float", "has a step of 0"),
    ("a, b, c, d, e, f, g, h, i, j, k, l", "order", "makes 479,001,600 values"),
])
def test_axis_values_past_the_limit_are_refused_unmade(text: str, kind: str, says: str
                                                        ) -> None:
    with pytest.raises(ValueError, match=re.escape(says)):
        typed_values(split_values(text), kind, 100)
    assert len(typed_values(split_values("1-100"), "int", 100)) == 100  # the limit itself


def test_an_upscale_past_the_pixel_limit_is_refused_before_it_allocates() -> None:
    with pytest.raises(ValueError, match="gives 8192x16384000, over the limit of 178,956,970"):
        upscale(np.zeros((2000, 1, 3), np.uint8), "Lanczos", 8192)
    side = int(MAX_PIXELS ** 0.5) // 8 * 8 + 8  # just over, as a square
    with pytest.raises(ValueError, match="upscale by less or a smaller picture"):
        upscale(np.zeros((side // 8, side // 8, 3), np.uint8), "Nearest", 8)


@pytest.mark.parametrize(("path", "body", "says"), [
    ("/sdapi/v1/txt2img", {"script_name": "x/y/z plot",
                           "script_args": ["Steps", "1-1000000000000", *XYZ_REST]},
     "X values (Steps): '1-1000000000000' makes 1,000,000,000,000 values"),
    ("/sdapi/v1/txt2img", {"script_name": "x/y/z plot",
                           "script_args": ["CFG Scale", "1-5 (+0)", *XYZ_REST]},
     "X values (CFG Scale): '1-5 (+0)' has a step of 0"),
    *[("/sdapi/v1/txt2img", {"script_name": "x/y/z plot",
                             "script_args": ["Steps", "1, 2", *XYZ_REST, True, False, False,
                                             False, margin]},
       "script_args[13] (Grid margins (px)) must be a whole number from 0 to 500, got ")
      for margin in (10**9, -5, "abc", [1], float("inf"))],
    ("/sdapi/v1/img2img", {"script_name": "poor man's outpainting", "init_images": [],
                           "script_args": [float("inf"), 4, "fill", ["left"]]},
     "Pixels to expand (script_args[0]) must be a whole number from 8 to 256, got inf"),
    ("/sdapi/v1/img2img", {"script_name": "outpainting mk2", "init_images": [],
                           "script_args": [None, float("nan"), 4, ["left"]]},
     "Pixels to expand (script_args[1]) must be a whole number from 8 to 256, got nan"),
    ("/sdapi/v1/img2img", {"script_name": "sd upscale", "width": -64,
                           "script_args": [None, 0, "Lanczos", 2]},
     "SD upscale's tiles are the request's width x height, each side at least 8 px; got "
     "-64x64"),
    *[("/sdapi/v1/txt2img", {"alwayson_scripts": {"ADetailer": {"args": [{
        "ad_model": "face.pt", "ad_use_inpaint_width_height": True, "ad_inpaint_width": width,
        "ad_inpaint_height": 512}]}}}, f"alwayson_scripts.ADetailer.args[0].ad_inpaint_width{says}")
      for width, says in ((100, " must be a positive multiple of 8 (the VAE works on 8x8 pixel"
                                " blocks), got 100; try 96 or 104"),
                          (4096, " 4096 is above this server's limit of 2048 px (--max-size)"))],
    ("/avx/txt2vid", {"model": "wan", "frames": 5, "width": 4096, "height": 4096},
     "4096x4096 is above this server's limit of 2048 px a side (serve --max-size)"),
    ("/sdapi/v1/extra-single-image", {"image": "PNG:1x2000", "upscaler_1": "Lanczos",
                                      "resize_mode": 1, "upscaling_resize_w": 8192,
                                      "upscaling_resize_h": 8},
     "upscaling 1x2000 by 8192 gives 8192x16384000, over the limit of 178,956,970 pixels"),
])
def test_refused_at_once_naming_the_argument(served: Any, path: str, body: dict[str, Any],
                                             says: str) -> None:
    client, pipe = served
    if body.get("image") == "PNG:1x2000":
        body = {**body, "image": _b64(_png(1, 2000))}
    if "init_images" in body:
        body = {**body, "init_images": [_b64(_png(64, 64))]}
    before = len(pipe.requests)
    response = client.post(path, content=json.dumps(  # NaN and Infinity as Python's JSON
        {"prompt": "a", "steps": 2, "width": 64, "height": 64, **body}),
        headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text[:300]
    assert says in response.json()["detail"], response.json()["detail"]
    assert len(pipe.requests) == before  # no cell, tile or direction was queued


def test_sd_upscale_counts_its_tiles_before_the_upscale(served: Any,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    client, _ = served

    def never(*args: Any) -> None:
        raise AssertionError("the upscale ran")
    monkeypatch.setattr(sd_upscale, "upscale", never)
    response = client.post("/sdapi/v1/img2img", json={
        "prompt": "a", "steps": 2, "width": 64, "height": 64, "script_name": "sd upscale",
        "init_images": [_b64(_png(200, 100))], "script_args": [None, 0, "Lanczos", 8]})
    assert response.status_code == 422, response.text[:300]
    assert response.json()["detail"].startswith(
        "SD upscale makes 325 tiles x 1 runs, over this server's limit of 100 requests")


@pytest.mark.parametrize("part", ["image", "mask"])
def test_openai_edits_decompression_bomb_is_a_400(served: Any, part: str) -> None:
    client, _ = served
    files = {"image": ("i.png", _bomb() if part == "image" else _png(16, 16), "image/png")}
    if part == "mask":
        files["mask"] = ("m.png", _bomb(), "image/png")
    response = client.post("/v1/images/edits", data={"prompt": "a"}, files=files)
    assert response.status_code == 400, response.text[:300]
    error = response.json()["error"]
    assert error["param"] == part
    assert error["message"].startswith(f"{part} is not an image this server can read (Image "
                                       "size (400000000 pixels) exceeds limit")


def _pictures(count: int) -> list[str]:
    return [_b64(_png(64, 64))] * count


@pytest.mark.parametrize(("path", "body"), [
    ("/sdapi/v1/img2img", {"init_images": _pictures(3)}),
    ("/sdapi/v1/img2img", {"init_images": _pictures(2), "mask": _pictures(1)[0]}),
    ("/sdapi/v1/txt2img", {"alwayson_scripts": {"controlnet": {"args": [
        {"enabled": True, "module": "canny", "image": picture} for picture in _pictures(3)]}}}),
    ("/sdapi/v1/extra-batch-images", {"upscaler_1": "None", "imageList": [
        {"data": picture} for picture in _pictures(3)]}),
    ("/controlnet/detect", {"controlnet_module": "canny",
                            "controlnet_input_images": _pictures(3)}),
])
def test_the_pictures_of_a_request_share_one_pixel_budget(
        served: Any, monkeypatch: pytest.MonkeyPatch, path: str, body: dict[str, Any]) -> None:
    """Each picture is under Pillow's limit, together they are over the request's (here
    two 64x64 pictures': a 50 MiB body of flat 13000x13000 PNGs decoded to 50 GB)."""
    client, pipe = served
    monkeypatch.setattr(images, "MAX_REQUEST_PIXELS", 2 * 64 * 64)
    before = len(pipe.requests)
    response = client.post(path, json={"prompt": "a", "steps": 2, **body})
    assert response.status_code == 422, response.text[:300]
    assert "(64x64) takes the request's pictures to 12,288 pixels, over this server's limit " \
           "of 8,192; send fewer or smaller pictures" in response.json()["detail"]
    assert len(pipe.requests) == before
    fewer = {**body, "init_images": body["init_images"][:2]} if "mask" not in body and \
        "init_images" in body else None
    if fewer is not None:  # at the limit: taken
        assert client.post(path, json={"prompt": "a", "steps": 2, **fewer}).status_code == 200


def test_openai_edits_pictures_share_one_pixel_budget(served: Any,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    client, _ = served
    monkeypatch.setattr(images, "MAX_REQUEST_PIXELS", 2 * 16 * 16)
    files = [("image[]", ("i.png", _png(16, 16), "image/png"))] * 3
    response = client.post("/v1/images/edits", data={"prompt": "a"}, files=files)
    assert response.status_code == 400, response.text[:300]
    assert response.json()["error"] == {
        "message": "image (16x16) takes the request's pictures to 768 pixels, over this "
                   "server's limit of 512; send fewer or smaller pictures",
        "type": "invalid_request_error", "param": "image", "code": None}


def test_an_extras_batch_holds_its_upscaled_pictures_to_one_budget(
        served: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    client, _ = served
    monkeypatch.setattr(extras, "BATCH_PIXELS", 2 * 32 * 32)
    body = {"upscaler_1": "Lanczos", "upscaling_resize": 2,
            "imageList": [{"data": picture} for picture in [_b64(_png(16, 16))] * 3]}
    response = client.post("/sdapi/v1/extra-batch-images", json=body)
    assert response.status_code == 422, response.text[:300]
    assert response.json()["detail"] == (
        "imageList[2] upscaled (32x32) takes the request's pictures to 3,072 pixels, over "
        "this server's limit of 2,048; send fewer or smaller pictures")
    body["imageList"] = body["imageList"][:2]
    assert len(client.post("/sdapi/v1/extra-batch-images", json=body).json()["images"]) == 2


LONG = "x" * 200_000
SHOWN = f"'{'x' * 60}...' (200,000 characters)"


@pytest.mark.parametrize(("path", "body", "says"), [
    ("/sdapi/v1/txt2img", {"sampler_name": LONG},
     f"unknown sampler_name {SHOWN}; valid names (ComfyUI's in parentheses): 'DPM++ 2M'"),
    ("/sdapi/v1/txt2img", {"alwayson_scripts": {"ADetailer": {"args": [{"ad_model": LONG}]}}},
     f"alwayson_scripts.ADetailer.args[0].ad_model: {SHOWN} is not in the ADetailer models "
     "folder "),
    ("/sdapi/v1/txt2img", {"alwayson_scripts": {"ADetailer": {"args": [{"ad_" + LONG: 1}]}}},
     f"alwayson_scripts.ADetailer.args[0]: unknown field 'ad_{'x' * 57}...' (200,003 "
     "characters); ADetailer's fields are ad_model, "),
    ("/sdapi/v1/txt2img", {"script_name": "x/y/z plot", "script_args": [
        "Steps", "1, 2", *XYZ_REST, True, False, False, False, int("9" * 4000)]},
     f"(Grid margins (px)) must be a whole number from 0 to 500, got {'9' * 60}... (4,000 "
     "characters)"),
    ("/v1/images/generations", {"model": LONG}, f"model {SHOWN} is not one of this server's"),
])
def test_a_long_value_is_echoed_cut_short(served: Any, path: str, body: dict[str, Any],
                                          says: str) -> None:
    client, pipe = served
    before = len(pipe.requests)
    response = client.post(path, json={"prompt": "a", "steps": 2, **body})
    assert response.status_code in (400, 422), response.text[:300]
    error = response.json()
    detail = error["error"]["message"] if path.startswith("/v1/") else error["detail"]
    assert says in detail, detail[:400]
    assert len(response.content) < 4000  # the detail and the errors beside it
    assert len(pipe.requests) == before


LAST = "seed must be -1 (random) or a whole number >= 0 (below 2**64), got 18446744073709551616"


@pytest.mark.parametrize(("source", "fields", "says"), [
    *[(source, {"seed": 2**64 - 1, "batch_size": 2}, f"{LAST} (the job's last image: seed and "
                "subseed + 1); send a smaller seed, subseed or batch")
      for source in ("GPU", "CPU")],
    ("GPU", {"subseed": 2**64 - 2, "n_iter": 3}, f"subseed{LAST[4:]} (the job's last image"),
    ("CPU", {"seed": 2**64 - 2, "override_settings": {"eta_noise_seed_delta": 2}},
     "seed + eta_noise_seed_delta is 18446744073709551616, past torch's generator's range "
     "(below 2**64); send a smaller one"),
])
def test_a_seed_past_2_64_is_refused_unqueued(served: Any, source: str, fields: dict[str, Any],
                                              says: str) -> None:
    """Seeds the worker would reach only after the job's first pictures were drawn: the last
    image's (seed + its number), a variation seed's, torch's per-step noise's (seed + ENSD)."""
    client, pipe = served
    before = len(pipe.requests)
    settings = {"randn_source": source, **fields.get("override_settings", {})}
    body = {"prompt": "a", "steps": 2, **fields, "override_settings": settings}
    response = client.post("/sdapi/v1/txt2img", json=body)
    assert response.status_code == 422, response.text[:300]
    assert response.json()["detail"].startswith(says), response.json()["detail"]
    assert len(pipe.requests) == before
    # one less: the last seed taken; numpy's generator takes seed + ENSD past 2**64
    key = "seed" if "seed" in fields else "subseed"
    fine = {**body, key: fields[key] - 1}
    if "override_settings" in fields:
        fine = {**body, "override_settings": {**settings, "randn_source": "GPU"}}
    assert client.post("/sdapi/v1/txt2img", json=fine).status_code == 200


def test_a_damaged_adetailer_model_is_refused_unqueued(served: Any) -> None:
    client, pipe = served
    before = len(pipe.requests)
    response = client.post("/sdapi/v1/txt2img", json={
        "prompt": "a", "steps": 2,
        "alwayson_scripts": {"ADetailer": {"args": [{"ad_model": "damaged.pt"}]}}})
    assert response.status_code == 422, response.text[:300]
    detail = response.json()["detail"]
    assert detail.startswith("alwayson_scripts.ADetailer.args[0].ad_model: 'damaged.pt' cannot "
                             "be read: "), detail
    assert "damaged.pt: " in detail and "Traceback" not in detail, detail
    assert len(pipe.requests) == before


def test_an_adetailer_unit_without_a_models_folder_says_how_to_give_one() -> None:
    from diffusion.server.api.adetailer_units import ADetailerModels, parse_adetailer
    from diffusion.server.api.generation import RequestError

    with pytest.raises(RequestError, match=r"^alwayson_scripts\.ADetailer\.args\[0\]\.ad_model: "
                       r"'face\.pt': this server has no ADetailer models folder; start it "
                       r"with --adetailer-dir or --models-dir \(its adetailer folder\)$"):
        parse_adetailer([{"ad_model": "face.pt"}], ADetailerModels(None), "txt2img")
