"""The WebUI's scripts through the API (script_name / script_args), driven by the WebUI's own
client (webuiapi) over HTTP: X/Y/Z plot's grid and cells, Prompts from file or textbox, the
script lists, and the one-line refusals of a bad script or axis value."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from diffusion.server.api.scripts.prompts_file import line_settings
from diffusion.server.api.scripts.values import split_values, typed_values


@pytest.mark.nodevice
@pytest.mark.parametrize(("text", "kind", "want"), [
    ("1-5 (+2)", "int", [1, 3, 5]),
    ("1-10 [4]", "int", [1, 4, 7, 10]),
    ("3, 7-8", "int", [3, 7, 8]),
    ("10-4 (-3)", "int", [10, 7]),  # the WebUI's range(10, 4 + 1, -3)
    ("0.5-1.5 (+0.5)", "float", [0.5, 1.0, 1.5]),
    ("0-1 [3]", "float", [0.0, 0.5, 1.0]),
    ('"a, b", c', "str", ["a, b", "c"]),
])
def test_axis_values_as_the_webui_reads_them(text: str, kind: str, want: list[Any]) -> None:
    assert typed_values(split_values(text), kind) == want


@pytest.mark.nodevice
def test_an_axis_value_that_is_no_number_is_named() -> None:
    with pytest.raises(ValueError, match="'two' is not a whole number"):
        typed_values(split_values("1, two"), "int")


@pytest.mark.nodevice
def test_prompt_search_and_replace_axis() -> None:
    from diffusion.server.api.schemas import Txt2ImgRequest
    from diffusion.server.api.scripts.axes import find_axis

    axis = find_axis("txt2img", 7, "X type")
    body = Txt2ImgRequest(prompt="a red circle", negative_prompt="red blur")
    values = ["red", "green"]
    assert axis.label == "Prompt S/R" and axis.label_of("green") == "green"
    assert axis.update(body, "green", values) == {"prompt": "a green circle",
                                                  "negative_prompt": "green blur"}
    with pytest.raises(ValueError, match="did not find 'blue'"):
        axis.update(body, "x", ["blue", "x"])
    assert find_axis("img2img", "denoising", "X type").field == "denoising_strength"
    order = find_axis("txt2img", "Prompt order", "X type")
    body = Txt2ImgRequest(prompt="a red big circle, blue")
    orders = typed_values(split_values("red, circle, blue"), "order")
    assert len(orders) == 6 and order.label_of(orders[5]) == "blue, circle, red"
    assert [order.update(body, o, orders)["prompt"] for o in orders[:2]] == [
        "a red big circle, blue", "a red big blue, circle"]


@pytest.mark.nodevice
def test_an_interrupted_cell_stops_the_plot_and_blanks_the_rest() -> None:
    import asyncio
    import base64
    import io
    import json

    from PIL import Image

    from diffusion.server.api.schemas import Txt2ImgRequest
    from diffusion.server.api.scripts import run_script

    queued: list[int] = []

    async def generate(cell: Txt2ImgRequest) -> dict[str, Any]:
        queued.append(cell.steps)
        buffer = io.BytesIO()
        Image.new("RGB", (8, 6), (cell.steps * 40, 0, 0)).save(buffer, format="PNG")
        info = {"infotexts": [f"p\nSteps: {cell.steps}"], "interrupted": cell.steps == 2,
                "all_prompts": ["p"], "all_negative_prompts": [""], "all_seeds": [1],
                "all_subseeds": [1]}
        return {"images": [base64.b64encode(buffer.getvalue()).decode()],
                "parameters": {}, "info": json.dumps(info)}

    body = Txt2ImgRequest(prompt="p", seed=1, script_name="X/Y/Z plot",
                          script_args=["Steps", "1-3", [], 0, "", [], 0, "", [], False, True])
    answer = asyncio.run(run_script(body, "txt2img", generate, lambda cell: None))
    assert queued == [1, 2]  # the third cell is not queued after the interrupt
    info = json.loads(answer["info"])
    assert info["interrupted"] and info["all_seeds"] == [1, 1, None]
    grid = np.asarray(Image.open(io.BytesIO(base64.b64decode(answer["images"][0]))))
    assert grid.shape == (6, 24, 3)
    assert grid[0, 0, 0] == 40 and grid[0, 8, 0] == 80 and not grid[:, 16:].any()


@pytest.mark.nodevice
def test_a_line_of_options_as_the_webui_parses_it() -> None:
    line = '--prompt "a red circle" on blue --steps 3 --cfg_scale 2.5 --negative_prompt dark'
    assert line_settings(line) == {"prompt": "a red circle on blue", "steps": 3,
                                   "cfg_scale": 2.5, "negative_prompt": "dark"}
    assert line_settings("a plain prompt") == {"prompt": "a plain prompt"}
    # an unknown option: the whole line is the prompt, as in the WebUI
    assert line_settings("--nope 3 -- x") == {"prompt": "--nope 3 -- x"}


fastapi = pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
pytest.importorskip("uvicorn", reason="server extra (pip install .[server])")
pytest.importorskip("diffusers", reason="tiny test models are built with diffusers")
webuiapi = pytest.importorskip("webuiapi", reason="the WebUI's client (extra: test)")

from server_support import PROMPT, needs_device, rgb, tiny_webui  # noqa: E402

from diffusion.server.api.scripts.grid import grid_margins  # noqa: E402

SIZE = {"width": 32, "height": 40}


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    with tiny_webui(tmp_path_factory.mktemp("scripts"), steps=1) as client:
        yield client


def refusal(api: Any, **body: Any) -> str:
    """The 422's one-line message for a txt2img body."""
    response = api.session.post(f"{api.baseurl}/txt2img", json={"prompt": PROMPT, **SIZE,
                                                                   **body})
    assert response.status_code == 422, response.text
    return response.json()["detail"]


def single(api: Any, **fields: Any) -> np.ndarray:
    body = {"prompt": PROMPT, "seed": 3, "cfg_scale": 1, **SIZE, **fields}
    return rgb(api.txt2img(**body).image)


@needs_device
def test_the_scripts_are_listed_with_their_arguments(api: Any) -> None:
    names = api.get_scripts()
    assert names["txt2img"][:2] == ["x/y/z plot", "prompts from file or textbox"]
    assert "controlnet" in names["img2img"]
    info = api.session.get(f"{api.baseurl}/script-info").json()
    xyz = next(s for s in info if s["name"] == "x/y/z plot" and not s["is_img2img"])
    assert [a["label"] for a in xyz["args"][:3]] == ["X type", "X values", "X values"]
    # the axis types' dropdown, as the WebUI's script-info gives it (the page's X/Y/Z fields)
    assert xyz["args"][0]["choices"][:5] == ["Nothing", "Seed", "Var. seed", "Var. strength",
                                             "Steps"]


@needs_device
def test_xyz_plot_grid_and_cells_equal_single_requests(api: Any) -> None:
    # X: Steps by label, Y: Seed by its index in the txt2img dropdown (1)
    args = ["Steps", "1-2", [], 1, "3, 8", [], "Nothing", "", [], True, True]
    result = api.txt2img(prompt=PROMPT, seed=3, cfg_scale=1, **SIZE, script_name="X/Y/Z plot",
                         script_args=args)
    grid, *cells = result.images
    assert len(cells) == 4
    left, top = grid_margins((32, 40), ["Steps: 1", "Steps: 2"], ["Seed: 3", "Seed: 8"])
    assert left > 0 and top > 0
    assert grid.size == (left + 2 * 32, top + 2 * 40)
    wanted = [single(api, steps=1, seed=3), single(api, steps=2, seed=3),
              single(api, steps=1, seed=8), single(api, steps=2, seed=8)]
    assert not np.array_equal(wanted[0], wanted[1])  # the axis values matter
    assert not np.array_equal(wanted[0], wanted[2])
    pixels = rgb(grid)
    for index, (cell, want) in enumerate(zip(cells, wanted, strict=True)):
        np.testing.assert_array_equal(rgb(cell), want)
        row, column = divmod(index, 2)
        y, x = top + row * 40, left + column * 32
        np.testing.assert_array_equal(pixels[y:y + 40, x:x + 32], want)
    texts = result.info["infotexts"]
    assert len(texts) == 5 and "Script: X/Y/Z plot, X Type: Steps" in texts[0]
    assert "Y Type: Seed" in texts[0] and "Steps: 2" in texts[2]
    assert result.info["all_seeds"] == [3, 3, 8, 8]


@needs_device
def test_xyz_plot_over_checkpoints_without_lone_images(api: Any) -> None:
    args = ["Checkpoint name", "tiny-a, tiny-b", [], "Nothing", "", [], "Nothing", "", [],
            False]
    result = api.txt2img(prompt=PROMPT, seed=3, cfg_scale=1, steps=1, **SIZE,
                         script_name="x/y/z plot", script_args=args)
    assert len(result.images) == 1 and result.images[0].size == (64, 40)  # no legend
    pixels = rgb(result.images[0])
    b = single(api, steps=1, override_settings={"sd_model_checkpoint": "tiny-b"})
    a = single(api, steps=1)
    assert not np.array_equal(a, b)
    np.testing.assert_array_equal(pixels[:, :32], a)
    np.testing.assert_array_equal(pixels[:, 32:], b)


@needs_device
def test_xyz_plot_on_img2img_by_the_img2img_dropdown_index(api: Any) -> None:
    from PIL import Image

    picture = Image.fromarray(np.random.default_rng(4).integers(0, 256, (40, 32, 3),
                                                                dtype=np.uint8))
    # 3 steps: int(strength * steps) of them (0.999 at most), 1 and 2, where 4 ran 2 and 3
    # (at 2 steps both strengths run the same one step: the same picture)
    settings = {"images": [picture], "prompt": PROMPT, "seed": 3, "cfg_scale": 1, "steps": 3,
                **SIZE}
    # 22: "Denoising" in img2img's list (its own Sampler and Image CFG Scale shift it)
    result = api.img2img(**settings, script_name="X/Y/Z plot",
                         script_args=[22, "0.5, 1", [], 0, "", [], 0, "", [], True, True])
    assert len(result.images) == 3 and result.info["infotexts"][0].count("X Type: Denoising")
    for cell, strength in zip(result.images[1:], (0.5, 1.0), strict=True):
        want = rgb(api.img2img(**settings, denoising_strength=strength).image)
        np.testing.assert_array_equal(rgb(cell), want)
    assert not np.array_equal(rgb(result.images[1]), rgb(result.images[2]))


@needs_device
def test_xyz_plot_z_grids_side_by_side_with_sub_grids(api: Any) -> None:
    args = ["Steps", "1, 2", [], "Nothing", "", [], "CFG Scale", "3, 6", [], False, False,
            True]
    result = api.txt2img(prompt=PROMPT, seed=3, **SIZE, script_name="X/Y/Z plot",
                         script_args=args)
    whole, *subs = result.images
    assert whole.size == (128, 40) and [s.size for s in subs] == [(64, 40), (64, 40)]
    pixels = rgb(whole)
    first, last = single(api, steps=1, cfg_scale=3), single(api, steps=2, cfg_scale=6)
    np.testing.assert_array_equal(pixels[:, :32], first)
    np.testing.assert_array_equal(pixels[:, 96:], last)
    np.testing.assert_array_equal(rgb(subs[1]), pixels[:, 64:])
    assert "Z Type: CFG Scale, Z Values: \"3, 6\"" in result.info["infotexts"][0]


@needs_device
@pytest.mark.parametrize(("args", "says"), [
    (["Steps", "1, two"], "X values (Steps): 'two' is not a whole number"),
    (["Nothing", "", [], "Sampler", "Euler, Nope"], "Y values (Sampler) 'Nope': unknown "
                                                    "sampler_name"),
    (["Styles", "a, b"], "X values (Styles) 'a': styles: no style named 'a'"),
    (["Face restore", "a"], "X type 'Face restore' is not supported"),
    (["Prompt order", "red, square"], "X values (Prompt order) ('red', 'square'): Prompt "
                                      "order: 'square' is not in the prompt"),
    (["CFG Scale", "1", [], 99], "Y type 99 is not an axis type"),
    (["Seed", "1-11", [], "Steps", "1-10"], "the X/Y/Z plot has 11 x 10 x 1 cells, over this "
                                            "server's limit of 100"),
])
def test_a_bad_axis_is_refused_naming_it(api: Any, args: list[Any], says: str) -> None:
    assert refusal(api, script_name="X/Y/Z plot", script_args=args).startswith(says)


@needs_device
def test_an_unknown_script_is_refused_naming_the_list(api: Any) -> None:
    assert refusal(api, script_name="Loopbackz") == (
        "script_name 'Loopbackz' is not one of this server's scripts: X/Y/Z plot, Prompts "
        "from file or textbox (see /sdapi/v1/scripts)")


@needs_device
def test_prompts_from_textbox_each_line_equals_its_request(api: Any) -> None:
    lines = "a blue square\n\n--prompt \"a green\" triangle --steps 2 --seed 9 --cfg_scale 6\n"
    result = api.txt2img(prompt=PROMPT, seed=3, cfg_scale=1, steps=1, **SIZE,
                         script_name="Prompts from file or textbox",
                         script_args=[False, False, lines])
    assert len(result.images) == 2
    first = single(api, prompt="a blue square", steps=1)
    second = single(api, prompt="a green triangle", steps=2, seed=9, cfg_scale=6)
    assert not np.array_equal(first, single(api, steps=1))  # the line's prompt matters
    np.testing.assert_array_equal(rgb(result.images[0]), first)
    np.testing.assert_array_equal(rgb(result.images[1]), second)
    assert result.info["all_prompts"] == ["a blue square", "a green triangle"]
    assert result.info["all_seeds"] == [3, 9]


@needs_device
def test_prompts_from_textbox_iterating_seeds_and_a_bad_line(api: Any) -> None:
    result = api.txt2img(prompt="", seed=4, steps=1, **SIZE,
                         script_name="prompts from file or textbox",
                         script_args=[True, False, "start", "one\ntwo"])
    assert result.info["all_seeds"] == [4, 5]
    says = refusal(api, script_name="Prompts from file or textbox",
                   script_args=[False, False, "one\n--prompt x --sampler_name Nope"])
    assert says.startswith("List of prompt inputs, line 2 ('--prompt x --sampler_name Nope'): "
                           "unknown sampler_name")
