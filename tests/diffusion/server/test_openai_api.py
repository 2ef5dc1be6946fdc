"""OpenAI's official Python client against our /v1 routes over HTTP: generations with the
bundled model (n pictures, the size asked, b64_json and url), edits with a tiny SD inpainting
model and an OpenAI-style mask (transparent = edit), /v1/models, --api-auth as Bearer keys, and
bad input answered 4xx in OpenAI's error shape."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
pytest.importorskip("uvicorn", reason="server extra (pip install .[server])")
pytest.importorskip("multipart", reason="server extra (pip install .[server])")
pytest.importorskip("diffusers", reason="tiny test models are built with diffusers")
openai = pytest.importorskip("openai", reason="OpenAI's client (extra: test)")

from PIL import Image  # noqa: E402
from server_support import CachedLoader, live_server  # noqa: E402

import gpucore  # noqa: E402
from diffusion.server import create_app  # noqa: E402

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)

KEY = "alice:s3cret"


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str, Path]]:
    """(client, base URL, outputs folder) of a server on the bundled model, held to 128 px a
    side."""
    outputs = tmp_path_factory.mktemp("openai-outputs")
    app = create_app(outputs=outputs, max_size=128)
    with live_server(app) as base:
        yield (openai.OpenAI(base_url=base + "/v1", api_key="unused", max_retries=0), base,
               outputs)
        app.state.worker.stop()


@pytest.fixture(scope="module")
def inpaint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, str]]:
    """(client with the key, base URL) of a server behind --api-auth on a tiny SD inpainting
    model (a 9-channel UNet) whose weights make the mask and the image matter, beside a tiny
    text-to-image one (tiny-sd)."""
    from sd_tiny import tiny_unet, write_pipeline

    root = tmp_path_factory.mktemp("openai-inpaint")
    model = write_pipeline(root / "models" / "tiny-inpaint",
                           unet=tiny_unet(seed=5, in_channels=9))
    write_pipeline(root / "models" / "tiny-sd")
    app = create_app(model=model, models_dir=root / "models", loader=CachedLoader(),
                     outputs=root / "outputs", api_auth=KEY)
    with live_server(app) as base:
        yield openai.OpenAI(base_url=base + "/v1", api_key=KEY, max_retries=0), base
        app.state.worker.stop()


def _picture(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_generations_b64_json(bundled: tuple[Any, str, Path]) -> None:
    client = bundled[0]
    answer = client.images.generate(prompt="a red circle", n=2, size="64x48",
                                    response_format="b64_json", extra_body={"steps": 2,
                                                                            "seed": 7})
    assert answer.created > 0 and len(answer.data) == 2
    pictures = [np.asarray(_picture(item.b64_json).convert("RGB")) for item in answer.data]
    assert all(picture.shape == (48, 64, 3) for picture in pictures)
    assert np.abs(pictures[0].astype(int) - pictures[1]).mean() > 1  # seeds 7 and 8
    again = client.images.generate(prompt="a blue square", n=1, size="64x48",
                                   extra_body={"steps": 2, "seed": 7})
    other = np.asarray(_picture(again.data[0].b64_json).convert("RGB"))
    assert np.abs(other.astype(int) - pictures[0]).mean() > 1  # the prompt matters


def test_generations_url_and_quality(bundled: tuple[Any, str, Path]) -> None:
    import httpx

    client = bundled[0]
    answer = client.images.generate(prompt="a red circle", size="40x56", quality="low",
                                    response_format="url", extra_body={"seed": 3})
    assert len(answer.data) == 1 and answer.data[0].b64_json is None
    got = httpx.get(answer.data[0].url)
    assert got.status_code == 200 and got.headers["content-type"] == "image/png"
    picture = Image.open(io.BytesIO(got.content))
    assert picture.size == (40, 56)
    assert "Steps: 10," in picture.text["parameters"]  # quality "low": 10 steps
    # nothing outside the outputs folder is served
    outputs = Path(bundled[2])
    Image.new("RGB", (8, 8)).save(outputs.parent / "secret.png")
    outside = answer.data[0].url.split("/v1/images/files/")[0] + "/v1/images/files/%2E%2E/"
    refused = httpx.get(outside + "secret.png")
    assert refused.status_code == 404 and "no picture '../secret.png'" in refused.text


def test_models(bundled: tuple[Any, str, Path]) -> None:
    client = bundled[0]
    ids = [model.id for model in client.models.list()]
    assert ids == ["shapes-128"]


def _edit_inputs(seed: int) -> tuple[Image.Image, Image.Image]:
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (37, 50, 3), dtype=np.uint8))
    alpha = np.full((37, 50), 255, np.uint8)
    alpha[5:30, 10:40] = 0  # transparent: edit here
    mask = Image.fromarray(np.dstack([np.zeros((37, 50, 3), np.uint8), alpha]), "RGBA")
    return image, mask


def _edit(client: Any, **fields: Any) -> list[np.ndarray]:
    # cfg_scale 1: one UNet pass a step (the mask and the image are under test, not guidance)
    body = {"steps": 2, "seed": 11, "cfg_scale": 1}
    answer = client.images.edit(**{"prompt": "a lighthouse", "size": "48x40",
                                   "extra_body": body, **fields})
    return [np.asarray(_picture(item.b64_json).convert("RGB")).astype(int)
            for item in answer.data]


def test_edits_inpaint(inpaint: tuple[Any, str]) -> None:
    client, _ = inpaint
    image, mask = _edit_inputs(1)
    masked = _edit(client, image=("in.png", _png(image), "image/png"),
                   mask=("mask.png", _png(mask), "image/png"), n=2)
    assert len(masked) == 2 and all(p.shape == (40, 48, 3) for p in masked)
    # the mask matters: another transparent part gives another picture
    left = np.where(np.arange(50) < 25, 0, 255).astype(np.uint8)[None].repeat(37, 0)
    other_mask = Image.fromarray(np.dstack([np.zeros((37, 50, 3), np.uint8), left]), "RGBA")
    moved = _edit(client, image=("in.png", _png(image), "image/png"),
                  mask=("mask.png", _png(other_mask), "image/png"))
    assert np.abs(moved[0] - masked[0]).mean() > 1
    # the image matters
    other = _edit(client, image=("in.png", _png(_edit_inputs(2)[0]), "image/png"),
                  mask=("mask.png", _png(mask), "image/png"))
    assert np.abs(other[0] - masked[0]).mean() > 1


def test_edits_without_mask_are_img2img(inpaint: tuple[Any, str]) -> None:
    """On the tiny text-to-image model, named by `model` as /v1/models lists it."""
    client, _ = inpaint

    def edit(color: tuple[int, int, int]) -> np.ndarray:
        image = Image.new("RGB", (50, 37), color)
        return _edit(client, image=[("in.png", _png(image), "image/png")], model="tiny-sd",
                     extra_body={"steps": 4, "seed": 11, "strength": 0.3})[0]

    red, blue = edit((230, 20, 20)), edit((20, 20, 230))
    assert red.shape == (40, 48, 3)
    assert np.abs(red - blue).mean() > 5, (red.mean((0, 1)), blue.mean((0, 1)))
    # a model that is not an inpainting one takes a mask too: the opaque part is kept
    image, mask = _edit_inputs(1)
    kept = _edit(client, image=("in.png", _png(image), "image/png"), model="tiny-sd",
                 mask=("mask.png", _png(mask), "image/png"), size="48x40")[0]
    original = np.asarray(image.resize((48, 40))).astype(int)
    opaque = np.asarray(mask.resize((48, 40)).getchannel("A")) == 255
    edited = ~np.asarray(mask.resize((48, 40), Image.Resampling.BOX).getchannel("A")).astype(
        bool)
    assert np.abs(kept - original)[opaque].mean() < np.abs(kept - original)[edited].mean()


def _refused(call: Any, status: int, says: str, param: str | None = None) -> None:
    with pytest.raises(openai.APIStatusError) as caught:
        call()
    error = caught.value
    assert error.status_code == status, error
    body = error.response.json()["error"]
    assert says in body["message"] and set(body) == {"message", "type", "param", "code"}
    assert body["type"] == "invalid_request_error" and body["param"] == param


def test_bad_input_is_openais_error(bundled: tuple[Any, str, Path], inpaint: tuple[Any, str]
                                    ) -> None:
    client = bundled[0]
    _refused(lambda: client.images.generate(prompt="a", size="256x64"), 400,
             "above this server's limit of 128 px", "size")
    _refused(lambda: client.images.generate(prompt="a", size="big"), 400,
             "is not WIDTHxHEIGHT", "size")
    _refused(lambda: client.images.generate(prompt="a", n=9), 400, "n must be between 1 and 8",
             "n")
    _refused(lambda: client.images.generate(prompt="a", quality="ultra"), 400,
             "quality must be one of", "quality")
    _refused(lambda: client.images.generate(prompt="a", model="nope"), 400,
             "not one of this server's models: shapes-128", "model")
    editor, base = inpaint
    image, mask = _edit_inputs(3)
    small = mask.resize((20, 20))
    _refused(lambda: editor.images.edit(image=("in.png", _png(image), "image/png"),
                                        mask=("m.png", _png(small), "image/png"), prompt="a"),
             400, "mask is 20x20 but image is 50x37", "mask")
    _refused(lambda: editor.images.edit(image=("in.png", b"not an image", "image/png"),
                                        prompt="a"), 400, "image is not an image", "image")
    _refused(lambda: editor.images.edit(image=("in.png", _png(image), "image/png"),
                                        mask=("m.png", _png(image), "image/png"), prompt="a"),
             400, "mask has no alpha channel", "mask")
    _refused(lambda: editor.images.edit(image=("in.png", _png(image), "image/png"),
                                        prompt="a", extra_body={"steps": "many"}),
             400, "steps: Input should be a valid integer", "steps")
    # an inpainting model cannot edit without a mask: the pipeline says so
    _refused(lambda: editor.images.edit(image=("in.png", _png(image), "image/png"),
                                        prompt="a"), 400, "give init_image and mask")
    # --api-auth: no key, or a wrong one, is OpenAI's 401
    for key in ("", "alice:wrong"):
        nobody = openai.OpenAI(base_url=base + "/v1", api_key=key or "x", max_retries=0,
                               default_headers={"Authorization": key})
        with pytest.raises(openai.AuthenticationError) as caught:
            nobody.models.list()
        assert caught.value.response.json()["error"]["code"] == "invalid_api_key"
    assert [model.id for model in editor.models.list()] == ["tiny-inpaint", "tiny-sd"]


def test_outputs_route_needs_the_key(inpaint: tuple[Any, str], tmp_path: Path) -> None:
    import httpx

    _, base = inpaint
    assert httpx.get(base + "/v1/images/files/x.png").status_code == 401
    assert httpx.get(base + "/v1/images/files/x.png",
                     headers={"Authorization": f"Bearer {KEY}"}).status_code == 404
