"""The WebUI's img2img scripts SD upscale and Loopback through the API, driven by the WebUI's
own client (webuiapi) over HTTP: the tile layout and blend, each tile equal to its own img2img
request, Loopback equal to chained img2img requests, and the one-line refusals."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from diffusion.server.api.scripts.loopback import loop_strength
from diffusion.server.api.scripts.sd_upscale import combine_grid, split_grid


def _picture(height: int, width: int, seed: int) -> Any:
    from PIL import Image

    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.nodevice
def test_tiles_are_placed_and_blended_as_the_webui_does() -> None:
    image = _picture(70, 100, 1)
    grid = split_grid(image, 40, 32, 16)
    # columns: ceil((100 - 16) / 24) = 4, spread by (100 - 40) / 3; rows: ceil(54 / 16) = 4
    assert [x for x, _, _ in grid[0]] == [0, 20, 40, 60]
    assert [row[0][1] for row in grid] == [0, 12, 25, 38]
    assert all(tile.size == (40, 32) for row in grid for _, _, tile in row)
    # unchanged tiles blend back to the picture
    np.testing.assert_array_equal(np.asarray(combine_grid(grid, image.size, 16)),
                                  np.asarray(image))
    # two tiles that differ: the overlap fades linearly from the left one to the right one
    left, right = _picture(32, 40, 2), _picture(32, 40, 3)
    out = np.asarray(combine_grid([[(0, 0, left), (24, 0, right)]], (64, 32), 16), np.int32)
    ramp = (np.arange(16) * 255 / 16).astype(np.uint8)[None, :, None] / 255
    want = np.asarray(right, np.int32)[:, :16] * ramp + np.asarray(left, np.int32)[:, 24:] * (
        1 - ramp)
    assert np.abs(out[:, 24:40] - want).max() <= 1
    np.testing.assert_array_equal(out[:, :24], np.asarray(left)[:, :24])
    np.testing.assert_array_equal(out[:, 40:], np.asarray(right)[:, 16:])
    # a picture smaller than a tile: one tile, black past the picture, back at its size
    small = _picture(20, 30, 4)
    (row,) = split_grid(small, 40, 32, 16)
    assert [(x, y) for x, y, _ in row] == [(-10, -12)]
    np.testing.assert_array_equal(np.asarray(row[0][2])[12:, 10:], np.asarray(small))
    assert combine_grid([row], small.size, 16).size == (30, 20)


@pytest.mark.nodevice
def test_loopback_strength_curves() -> None:
    assert loop_strength(0, 3, 0.8, 0.2, "Linear") == 0.8
    assert loop_strength(1, 3, 0.8, 0.2, "Linear") == pytest.approx(0.5)
    assert loop_strength(2, 3, 0.8, 0.2, "Linear") == pytest.approx(0.2)
    assert loop_strength(1, 3, 0.8, 0.2, "Aggressive") == pytest.approx(
        0.8 - 0.6 * math.sin(math.pi / 4))
    assert loop_strength(1, 3, 0.8, 0.2, "Lazy") == pytest.approx(
        0.8 - 0.6 * (1 - math.cos(math.pi / 4)))
    assert loop_strength(5, 1, 0.8, 0.2, "Linear") == 0.8


def _fake_generate(calls: list[Any]) -> Any:
    """A queue that answers each img2img body with a flat picture of its seed's colour."""
    import base64
    import io
    import json

    from PIL import Image

    async def generate(cell: Any) -> dict[str, Any]:
        calls.append(cell)
        buffer = io.BytesIO()
        Image.new("RGB", (cell.width, cell.height), (cell.seed % 256, 0, 0)).save(buffer, "PNG")
        info = {"infotexts": [f"p\nSeed: {cell.seed}"], "interrupted": cell.seed == 99,
                "all_prompts": ["p"], "all_negative_prompts": [""], "all_seeds": [cell.seed],
                "all_subseeds": [1]}
        return {"images": [base64.b64encode(buffer.getvalue()).decode()],
                "parameters": {}, "info": json.dumps(info)}
    return generate


@pytest.mark.nodevice
def test_seeds_strengths_and_init_images_across_runs() -> None:
    import asyncio

    from diffusion.server.api.schemas import Img2ImgRequest
    from diffusion.server.api.scripts import run_script
    from diffusion.server.images import encode_png

    init = encode_png(np.asarray(_picture(40, 32, 8)))
    calls: list[Any] = []
    body = Img2ImgRequest(init_images=[init], width=32, height=40, seed=10, n_iter=2,
                          denoising_strength=0.9, script_name="Loopback",
                          script_args=[3, 0.1, "Linear"])
    answer = asyncio.run(run_script(body, "img2img", _fake_generate(calls), lambda _: None))
    assert [c.seed for c in calls] == [10, 11, 12, 13, 14, 15]
    assert [c.denoising_strength for c in calls] == pytest.approx([0.9, 0.5, 0.1] * 2)
    assert calls[3].init_images == [init] and calls[1].init_images != [init]
    assert len(answer["images"]) == 3  # two runs' last pictures, side by side first
    # SD upscale with batch_size 2: batches of seeds s, s + 1 then s + 1, s + 2 (the WebUI's)
    calls.clear()
    body = Img2ImgRequest(init_images=[init], width=16, height=16, seed=20, batch_size=2,
                          script_name="SD upscale", script_args=[None, 0, "None", 2])
    answer = asyncio.run(run_script(body, "img2img", _fake_generate(calls), lambda _: None))
    assert [c.seed for c in calls] == [20, 21, 21, 22, 22, 23]  # 2 x 3 tiles, 32x40
    assert json.loads(answer["info"])["width"] == 32


fastapi = pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
pytest.importorskip("uvicorn", reason="server extra (pip install .[server])")
pytest.importorskip("diffusers", reason="tiny test models are built with diffusers")
webuiapi = pytest.importorskip("webuiapi", reason="the WebUI's client (extra: test)")

from server_support import PROMPT, needs_device, rgb, tiny_webui  # noqa: E402

from diffusion.upscalers.by_name import upscale  # noqa: E402

SIZE = {"width": 32, "height": 40}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with tiny_webui(tmp_path_factory.mktemp("img2img-scripts"), steps=4) as client:
        yield client


def refusal(api: Any, kind: str, **body: Any) -> str:
    """The 422's one-line message for an img2img (or txt2img) body."""
    from webuiapi import raw_b64_img

    fields = {"prompt": PROMPT, **SIZE, **body}
    if kind == "img2img":
        fields["init_images"] = [raw_b64_img(_picture(40, 32, 5))]
    response = api.session.post(f"{api.baseurl}/{kind}", json=fields)
    assert response.status_code == 422, response.text
    return response.json()["detail"]


@needs_device
def test_sd_upscale_tiles_are_img2img_of_the_upscaled_tiles(api: Any) -> None:
    picture = _picture(32, 28, 6)
    # 2 steps at strength 0.6: one denoising step a tile (the client's 4 took two), each tile
    # still compared with its own request bit for bit; 2 x 2 tiles (the blend's placement is
    # test_tiles_are_placed_and_blended_as_the_webui_does's): seven img2img passes, not twelve
    settings = {"prompt": PROMPT, "seed": 11, "cfg_scale": 1, "denoising_strength": 0.6,
                "steps": 2, **SIZE}
    # upscaler 1: "Lanczos" in /sdapi/v1/upscalers; 28x32 x 2 = 56x64 in 2 x 2 tiles
    result = api.img2img(images=[picture], **settings, script_name="SD upscale",
                         script_args=[None, 8, 1, 2.0])
    assert len(result.images) == 1 and result.images[0].size == (56, 64)
    out = rgb(result.images[0])
    big = upscale(np.asarray(picture), "Lanczos", 2.0)
    # tiles at x 0, 24 and y 0, 24; each one's own pixels lie past the overlaps; tile k of
    # one run has the seed + k, row by row (the second tile of the first row: k 1, not 2)
    for x, y, own, k in [(0, 0, np.s_[0:24, 0:24], 0), (24, 0, np.s_[0:24, 32:56], 1),
                         (24, 24, np.s_[32:64, 32:56], 3)]:
        from PIL import Image

        tile = Image.fromarray(big[y:y + 40, x:x + 32])
        want = rgb(api.img2img(images=[tile], **{**settings, "seed": 11 + k}).image)
        assert not np.array_equal(want, np.asarray(tile))  # the img2img pass matters
        rows, cols = own
        np.testing.assert_array_equal(out[own], want[rows.start - y:rows.stop - y,
                                                     cols.start - x:cols.stop - x])
    assert "SD upscale overlap: 8, SD upscale upscaler: Lanczos" in result.info["infotexts"][0]


@needs_device
def test_loopback_equals_chained_img2img_requests(api: Any) -> None:
    picture = _picture(40, 32, 7)
    settings = {"prompt": PROMPT, "cfg_scale": 1, **SIZE}
    # two loops (four img2img passes here, not six): the chain and the curve's two ends; its
    # middle values are test_loopback_strength_curves's, three loops' seeds and strengths
    # test_seeds_strengths_and_init_images_across_runs's
    result = api.img2img(images=[picture], seed=5, denoising_strength=0.8, **settings,
                         script_name="Loopback", script_args=[2, 0.3, "Linear", "None"])
    grid, *loops = result.images
    assert len(loops) == 2 and grid.size == (64, 40)
    image = picture
    for loop, strength in enumerate((0.8, 0.3)):
        image = api.img2img(images=[image], seed=5 + loop, denoising_strength=strength,
                            **settings).image
        np.testing.assert_array_equal(rgb(loops[loop]), rgb(image))
        np.testing.assert_array_equal(rgb(grid)[:, 32 * loop:32 * loop + 32], rgb(image))
    assert not np.array_equal(rgb(loops[0]), rgb(loops[1]))  # each loop changes it
    assert result.info["all_seeds"] == [5, 6]
    assert "Final denoising strength: 0.3, Denoising curve: Linear" in (
        result.info["infotexts"][0])


@needs_device
@pytest.mark.parametrize(("kind", "script", "args", "says"), [
    ("img2img", "Loopback", [2, 0.5, "Linear", "BLIP"],
     "script_args[3] (Append interrogated prompt at each iteration) 'BLIP' is not supported"),
    ("img2img", "Loopback", [2, 0.5, "Steep"], "script_args[2] (Denoising strength curve) "
                                               "must be one of Aggressive, Linear, Lazy"),
    ("img2img", "Loopback", [0], "script_args[0] (Loops) must be a whole number"),
    ("img2img", "SD upscale", [None, 8, "Nope"], "script_args[2] (Upscaler) 'Nope' is not "
                                                 "one of this server's upscalers: None"),
    ("img2img", "SD upscale", [None, 8, 99], "script_args[2] (Upscaler) 99 is not an index"),
    ("img2img", "SD upscale", [None, 32], "script_args[1] (Tile overlap) must be"),
    ("txt2img", "SD upscale", [], "script_name 'SD upscale' is an img2img script: send it "
                                  "to /sdapi/v1/img2img"),
])
def test_bad_script_args_are_refused_naming_them(api: Any, kind: str, script: str,
                                                 args: list[Any], says: str) -> None:
    assert refusal(api, kind, script_name=script, script_args=args).startswith(says)


@needs_device
def test_the_img2img_scripts_are_listed_on_img2img_only(api: Any) -> None:
    names = api.get_scripts()
    assert "sd upscale" in names["img2img"] and "loopback" in names["img2img"]
    assert "sd upscale" not in names["txt2img"]
    info = api.session.get(f"{api.baseurl}/script-info").json()
    loop = next(s for s in info if s["name"] == "loopback")
    assert loop["is_img2img"] and [a["value"] for a in loop["args"]] == [4, 0.5, "Linear",
                                                                          "None"]
