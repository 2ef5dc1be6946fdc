"""The WebUI's "Poor man's outpainting" script (img2img) through the API, driven by the WebUI's
own client (webuiapi) over HTTP on a tiny SD model: the picture grows on the sides asked, the
original pixels stay where the script keeps them, one tile equals the plain inpaint request the
script makes, and a bad direction is refused naming it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from PIL import Image

from diffusion.server.api.scripts.outpaint import combine_grid, grown, split_grid


@pytest.mark.nodevice
def test_grown_picture_and_mask_as_the_webui_draws_them() -> None:
    init = Image.fromarray(np.random.default_rng(1).integers(0, 256, (24, 40, 3), np.uint8))
    picture, mask, sides = grown(init, 16, 2, ["left", "up"])
    assert picture.size == (64, 64) and sides == (24, 40, 0, 0)  # rounded up to 64
    pixels, drawn = np.asarray(picture), np.asarray(mask)
    np.testing.assert_array_equal(pixels[40:, 24:], np.asarray(init))
    assert not pixels[:40].any() and not pixels[:, :24].any()
    # the mask reaches 2 * blur into the picture on the sides asked, not on the others
    assert (drawn[:44] == 255).all() and (drawn[:, :28] == 255).all()
    assert not drawn[44:, 28:].any()


@pytest.mark.nodevice
def test_split_and_combine_grid_give_the_picture_back() -> None:
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (72, 88, 3), np.uint8))
    grid = split_grid(image, 48, 40, 16)
    assert [len(row[2]) for row in grid.tiles] == [3, 3, 3]
    assert all(tile[2].size == (48, 40) for row in grid.tiles for tile in row[2])
    # equal tiles blend into themselves: the seams are where the ramps cross, so only
    # rounding of the ramp may move a pixel by one
    back = np.asarray(combine_grid(grid)).astype(int)
    assert np.abs(back - np.asarray(image)).max() <= 1


fastapi = pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
pytest.importorskip("uvicorn", reason="server extra (pip install .[server])")
pytest.importorskip("diffusers", reason="tiny test models are built with diffusers")
webuiapi = pytest.importorskip("webuiapi", reason="the WebUI's client (extra: test)")

from server_support import PROMPT, needs_device, rgb, tiny_webui  # noqa: E402

TITLE = "Poor man's outpainting"


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with tiny_webui(tmp_path_factory.mktemp("outpaint"), steps=2) as client:
        yield client


def picture() -> Image.Image:
    return Image.fromarray(np.random.default_rng(4).integers(0, 256, (24, 40, 3), np.uint8))


@needs_device
def test_it_is_listed_under_img2img_only(api: Any) -> None:
    names = api.get_scripts()
    assert "poor man's outpainting" in names["img2img"]
    assert "poor man's outpainting" not in names["txt2img"]
    info = api.session.get(f"{api.baseurl}/script-info").json()
    entry = next(s for s in info if s["name"] == "poor man's outpainting")
    assert entry["is_img2img"] and [a["label"] for a in entry["args"]] == [
        "Pixels to expand", "Mask blur", "Masked content", "Outpainting direction"]


@needs_device
def test_one_tile_is_the_inpaint_request_the_script_makes(api: Any) -> None:
    init = picture()
    settings = {"prompt": PROMPT, "seed": 5, "cfg_scale": 1, "width": 64, "height": 64}
    result = api.img2img(images=[init], **settings, script_name=TITLE,
                         script_args=[16, 2, 0, ["left", "up"]])
    assert len(result.images) == 1 and result.images[0].size == (64, 64)
    out = rgb(result.images[0])
    # independent of the script: the grown picture and its mask drawn here with numpy
    grown_picture = np.zeros((64, 64, 3), np.uint8)
    grown_picture[40:, 24:] = np.asarray(init)
    mask = np.full((64, 64), 255, np.uint8)
    mask[44:, 28:] = 0
    want = rgb(api.img2img(images=[Image.fromarray(grown_picture)],
                           mask_image=Image.fromarray(mask), **settings, mask_blur=4,
                           inpainting_fill=0, inpaint_full_res=False).image)
    np.testing.assert_array_equal(out, want)
    # the border is drawn, the original kept away from the mask's blurred edge
    assert out[:40].std() > 1 and out[:, :24].std() > 1
    np.testing.assert_array_equal(out[56:, 40:], np.asarray(init)[16:, 16:])
    assert "Script: Poor man's outpainting" in result.info["infotexts"][0]


@needs_device
def test_tiles_grow_the_sides_asked_and_keep_the_original(api: Any) -> None:
    init = picture()
    result = api.img2img(images=[init], prompt=PROMPT, seed=5, cfg_scale=1, width=48,
                         height=48, script_name=TITLE, script_args=[16, 2, "fill", ["right"]])
    out = rgb(result.images[0])
    # 40 + 16 -> 64 wide (24 added on the right); the height is rounded up to 64 too, with
    # neither up nor down asked, so the picture sits at the top, as the WebUI pastes it
    assert out.shape == (64, 64, 3)
    assert out[:, 40:].std() > 1  # the right side is drawn
    np.testing.assert_array_equal(out[:24, :24], np.asarray(init)[:, :24])


@needs_device
@pytest.mark.parametrize(("args", "says"), [
    ([16, 2, 0, ["left", "sideways"]], "script_args[3] (Outpainting direction): 'sideways' is "
                                       "not a direction"),
    ([300, 2, 0, ["left"]], "script_args: Pixels to expand (script_args[0]) must be a whole "
                            "number from 8 to 256"),
    ([16, 2, 0, []], "script_args[3] (Outpainting direction) is empty"),
])
def test_bad_arguments_are_refused_naming_them(api: Any, args: list[Any], says: str) -> None:
    from server_support import png_b64

    body = {"prompt": PROMPT, "init_images": [png_b64(picture())], "width": 64, "height": 64,
            "script_name": TITLE, "script_args": args}
    response = api.session.post(f"{api.baseurl}/img2img", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(says)
    response = api.session.post(f"{api.baseurl}/txt2img", json={
        "prompt": PROMPT, "script_name": TITLE, "script_args": [16, 2, 0, ["left"]]})
    assert response.status_code == 422
    assert "is an img2img script" in response.json()["detail"]


@pytest.mark.nodevice
def test_mk2_colour_matching_is_histogram_matching() -> None:
    """Each value goes to the template's value at the same quantile (scikit-image's
    match_histograms for floats, which the WebUI calls), here by ranks and interpolation."""
    from diffusion.server.api.scripts.outpaint_mk2 import _matched_cdf

    def matched(source: np.ndarray, template: np.ndarray) -> np.ndarray:
        quantile = np.searchsorted(np.sort(source), source, side="right") / source.size
        steps = np.arange(1, template.size + 1) / template.size
        return np.interp(quantile, steps, np.sort(template))

    rng = np.random.default_rng(6)
    source, template = rng.random((300, 3)) ** 2, rng.random((170, 3))
    for c in range(3):
        got = _matched_cdf(source[:, c], template[:, c])
        np.testing.assert_allclose(got, matched(source[:, c], template[:, c]), rtol=0,
                                   atol=1e-12)
        assert not np.allclose(got, source[:, c], atol=0.05)  # the colours did move


@pytest.mark.nodevice
def test_mk2_noise_keeps_the_picture_and_takes_its_colours() -> None:
    from diffusion.server.api.scripts.outpaint_mk2 import matched_noise

    rng = np.random.default_rng(7)
    image = np.zeros((40, 56, 3))
    image[:, 16:] = rng.random((40, 40, 3)) * np.array([0.9, 0.3, 0.1])  # a reddish picture
    mask = np.zeros_like(image)
    mask[:, :20] = 1.0  # the new strip on the left, reaching 4 px into the picture
    out = matched_noise(image, mask, 1.0, 0.05)
    np.testing.assert_array_equal(out[:, 20:], image[:, 20:])
    strip, kept = out[:, :20], image[:, 20:]
    assert strip.std() > 0.01  # noise, not a flat fill
    # each channel's values follow the picture's: the reddish balance carries over
    np.testing.assert_allclose(strip.reshape(-1, 3).mean(0), kept.reshape(-1, 3).mean(0),
                               atol=0.03)
    # the fixed generator: the same picture gives the same noise
    np.testing.assert_array_equal(out, matched_noise(image, mask, 1.0, 0.05))
    assert not np.array_equal(out, matched_noise(image, mask, 2.0, 0.05))  # noise_q matters


@needs_device
def test_mk2_grows_left_and_equals_the_inpaint_request_it_makes(api: Any) -> None:
    from diffusion.server.api.scripts.outpaint_mk2 import matched_noise

    init = picture()
    settings = {"prompt": PROMPT, "seed": 5, "cfg_scale": 1, "width": 64, "height": 64}
    result = api.img2img(images=[init], **settings, script_name="Outpainting mk2",
                         script_args=["", 16, 1, ["left"], 1.0, 0.05])
    out = rgb(result.images[0])
    assert out.shape == (24, 64, 3)  # 40 + 16 rounded up to 64 wide, all of it on the left
    # the request the script makes: the picture at x = 24 of a 64x64 canvas, the rest noise
    canvas = np.zeros((64, 64, 3), np.uint8)
    canvas[:24, 24:] = np.asarray(init)
    mask = np.full((64, 64, 3), 255, np.uint8)
    mask[:25, 25:] = 0  # from mask blur (1) px inside the picture; below it all new
    noised = matched_noise(canvas / 255.0, mask / 255.0, 1.0, 0.05)
    noised_picture = np.clip(noised * 255.0, 0.0, 255.0).astype(np.uint8)
    want = rgb(api.img2img(images=[Image.fromarray(noised_picture)],
                           mask_image=Image.fromarray(mask), **settings, mask_blur=4,
                           inpainting_fill=1, inpaint_full_res=False).image)
    np.testing.assert_array_equal(out, want[:24])
    assert out[:, :20].std() > 1  # the new strip is drawn
    np.testing.assert_array_equal(out[:12, 36:], np.asarray(init)[:12, 12:])
    assert "Script: Outpainting mk2" in result.info["infotexts"][0]


@needs_device
def test_mk2_bad_direction_is_refused_naming_it(api: Any) -> None:
    from server_support import png_b64

    body = {"prompt": PROMPT, "init_images": [png_b64(picture())], "script_name":
            "Outpainting mk2", "script_args": ["", 16, 1, ["north"]]}
    response = api.session.post(f"{api.baseurl}/img2img", json=body)
    assert response.status_code == 422, response.text
    assert response.json()["detail"].startswith(
        "script_args[3] (Outpainting direction): 'north' is not a direction")
    assert "outpainting mk2" in api.get_scripts()["img2img"]
