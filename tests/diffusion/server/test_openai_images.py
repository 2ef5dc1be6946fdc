"""OpenAI's images requests -> the WebUI bodies they run as (host logic, no device): sizes,
quality -> steps, n, model names, and OpenAI's mask (alpha 0 = edit) as the WebUI's."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="server extra (pip install .[server])")

from PIL import Image

from diffusion.server.api.openai_images import (
    QUALITY_STEPS,
    ImagesRequest,
    OpenAIError,
    edit_body,
    generation_body,
    openai_mask,
)
from diffusion.server.images import decode_image

pytestmark = pytest.mark.nodevice


class _Registry:
    """The one ModelRegistry method the mapping uses, over two names."""

    def __init__(self) -> None:
        from types import SimpleNamespace

        self.entries = [SimpleNamespace(name=name, title=f"{name} [0123456789]")
                        for name in ("tiny-a", "tiny-b")]

    def find(self, name: str) -> Any:
        return next((entry for entry in self.entries if entry.name == name), None)


def _body(**fields: Any) -> Any:
    registry: Any = _Registry()
    return generation_body(ImagesRequest(prompt="a fox", **fields), registry, 256)


def test_generation_fields() -> None:
    body = _body(n=3, size="120x72", quality="high", response_format="url", seed=4)
    assert (body.batch_size, body.width, body.height, body.steps, body.seed) == (3, 120, 72,
                                                                                  30, 4)
    assert body.save_images and body.prompt == "a fox"
    assert "cfg_scale" not in body.model_fields_set  # the family's own CFG applies
    plain = _body()
    assert (plain.width, plain.height, plain.steps, plain.save_images) == (
        None, None, QUALITY_STEPS["auto"], False)
    assert _body(quality="low", steps=3).steps == 3  # ours wins over quality
    assert _body(model="tiny-b").override_settings == {
        "sd_model_checkpoint": "tiny-b [0123456789]"}
    assert _body(model="dall-e-3").override_settings is None


@pytest.mark.parametrize(("fields", "param", "says"), [
    ({"size": "300x64"}, "size", "above this server's limit of 256 px"),
    ({"size": "64 by 64"}, "size", "is not WIDTHxHEIGHT"),
    ({"size": "4x64"}, "size", "too small"),
    ({"n": 0}, "n", "n must be between 1 and 8"),
    ({"n": 9}, "n", "n must be between 1 and 8"),
    ({"quality": "best"}, "quality", "quality must be one of low"),
    ({"response_format": "jpeg"}, "response_format", "'b64_json' or 'url'"),
    ({"model": "tiny-c"}, "model", "not one of this server's models: tiny-a, tiny-b"),
])
def test_generation_refusals(fields: dict[str, Any], param: str, says: str) -> None:
    with pytest.raises(OpenAIError, match=says) as caught:
        _body(**fields)
    assert caught.value.param == param


def test_openai_mask_is_the_webuis_inverse_by_alpha() -> None:
    rng = np.random.default_rng(0)
    alpha = rng.choice(np.array([0, 1, 128, 255], np.uint8), (13, 21))
    mask = Image.fromarray(np.dstack([rng.integers(0, 256, (13, 21, 3), dtype=np.uint8),
                                      alpha]), "RGBA")
    image = Image.new("RGB", (21, 13))
    webui = np.asarray(openai_mask(mask, image))
    np.testing.assert_array_equal(webui, np.where(alpha == 0, 255, 0))  # only alpha 0 edits
    with pytest.raises(OpenAIError, match="mask is 21x13 but image is 20x13") as caught:
        openai_mask(mask, Image.new("RGB", (20, 13)))
    assert caught.value.param == "mask"
    with pytest.raises(OpenAIError, match="no alpha channel"):
        openai_mask(mask.convert("RGB"), image)


def test_edit_body() -> None:
    image = Image.new("RGB", (21, 13), (200, 10, 10))
    mask = Image.new("RGBA", (21, 13), (0, 0, 0, 0))
    request = ImagesRequest(prompt="a boat", size="64x48")
    registry: Any = _Registry()
    inpaint = edit_body(request, image, mask, registry, 256)
    assert inpaint.denoising_strength == 1.0 and inpaint.inpaint_full_res is False
    assert inpaint.mask_blur == 0 and inpaint.inpainting_fill == 1
    assert np.asarray(decode_image(inpaint.mask, "mask")).min() == 255  # all transparent
    assert np.asarray(decode_image(inpaint.init_images[0], "image"))[0, 0].tolist() == [
        200, 10, 10]
    plain = edit_body(request, image, None, registry, 256)
    assert plain.mask is None and plain.denoising_strength == 0.75
    assert (plain.width, plain.height) == (64, 48)
    # several image[]: an edit model's references, as init_images in order
    other = Image.new("RGB", (30, 20), (10, 200, 10))
    several = edit_body(request, [image, other], None, registry, 256)
    assert [decode_image(picture, "image").size for picture in several.init_images] == [
        (21, 13), (30, 20)]
