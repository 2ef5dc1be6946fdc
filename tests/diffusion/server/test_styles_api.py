"""Prompt styles through the WebUI's own client (webuiapi) over HTTP: serve --styles-file's
styles listed by /sdapi/v1/prompt-styles, a request's `styles` drawn as the WebUI draws them
(the same picture as the expanded prompt sent as is, which the infotext carries), an unknown
style refused naming the known ones, and PNG info finding the styles in a picture's prompts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("fastapi", reason="server extra (pip install .[server])")
pytest.importorskip("uvicorn", reason="server extra (pip install .[server])")
pytest.importorskip("diffusers", reason="tiny test models are built with diffusers")
webuiapi = pytest.importorskip("webuiapi", reason="the WebUI's client (extra: test)")

from server_support import CachedLoader, live_server  # noqa: E402

import gpucore  # noqa: E402
from diffusion.server import create_app  # noqa: E402
from diffusion.server.api.app import styles_files  # noqa: E402
from diffusion.server.settings import ServerSettings  # noqa: E402

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)

STYLES = ("name,prompt,negative_prompt\n"
          'Framed,"a picture of {prompt}, framed",blurry\n'
          "Green,green background,\n")


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from sd_tiny import write_pipeline

    root = tmp_path_factory.mktemp("styles")
    model = write_pipeline(root / "tiny")
    (root / "styles.csv").write_text(STYLES, encoding="utf-8-sig")
    app = create_app(model=model, loader=CachedLoader(), outputs=root / "outputs",
                     styles_files=[root / "*.csv"])
    with live_server(app) as base:
        host, port = base.removeprefix("http://").split(":")
        yield webuiapi.WebUIApi(host=host, port=int(port), sampler="Euler a", steps=1)
        app.state.worker.stop()


def test_prompt_styles_listed(api: Any) -> None:
    assert api.get_prompt_styles() == [
        {"name": "Framed", "prompt": "a picture of {prompt}, framed",
         "negative_prompt": "blurry"},
        {"name": "Green", "prompt": "green background", "negative_prompt": ""}]


def test_styles_applied_as_the_webui_applies_them(api: Any) -> None:
    common = dict(seed=4, width=24, height=16, cfg_scale=7)
    styled = api.txt2img(prompt="a red circle", negative_prompt="ugly",
                         styles=["Framed", "Green"], **common)
    expanded = "a picture of a red circle, framed, green background"
    assert styled.info["infotexts"][0].startswith(f"{expanded}\nNegative prompt: ugly, blurry\n")
    assert styled.info["all_prompts"] == [expanded]
    assert styled.info["prompt"] == "a red circle" and styled.info["styles"] == [
        "Framed", "Green"]
    direct = api.txt2img(prompt=expanded, negative_prompt="ugly, blurry", **common)
    plain = api.txt2img(prompt="a red circle", negative_prompt="ugly", **common)
    np.testing.assert_array_equal(np.asarray(styled.image), np.asarray(direct.image))
    assert np.abs(np.asarray(styled.image, float) - np.asarray(plain.image, float)).max() > 8
    # PNG info takes the styles out of the prompts again (the WebUI's "Apply if any")
    parameters = api.png_info(styled.image).parameters
    assert (parameters["Prompt"], parameters["Negative prompt"], parameters["Styles array"]) == (
        "a red circle", "ugly", ["Framed", "Green"])
    assert "Styles array" not in api.png_info(plain.image).parameters


def test_prompts_from_file_lines_name_styles(api: Any) -> None:
    # the script's --styles (the WebUI's: comma-separated names) replace the request's
    result = api.txt2img(prompt="", seed=4, width=24, height=16, styles=["Green"],
                         script_name="Prompts from file or textbox",
                         script_args=[False, False, '--prompt "a red circle" --styles Framed'])
    assert result.info["all_prompts"] == ["a picture of a red circle, framed"]
    assert result.info["infotexts"][0].startswith(
        "a picture of a red circle, framed\nNegative prompt: blurry\n")


def test_xyz_plot_styles_axis_cells_equal_requests_with_those_styles(api: Any) -> None:
    # each value's comma-separated names are added to the request's styles (raw text lines:
    # one value may name several)
    common = dict(prompt="a red circle", seed=4, width=24, height=16, cfg_scale=7)
    result = api.txt2img(**common, styles=["Green"], script_name="X/Y/Z plot",
                         script_args=["Styles", "Framed\nFramed, Green", [], "Nothing", "", [],
                                      "Nothing", "", [], True, True, False, False, 0, False,
                                      True])
    grid, *cells = result.images
    assert len(cells) == 2 and grid.size[1] > 16  # the X labels above the cells
    assert "X Type: Styles" in result.info["infotexts"][0]
    wanted = [api.txt2img(**common, styles=styles).image
              for styles in (["Green", "Framed"], ["Green", "Framed", "Green"])]
    assert not np.array_equal(np.asarray(wanted[0]), np.asarray(wanted[1]))
    for cell, want in zip(cells, wanted, strict=True):
        np.testing.assert_array_equal(np.asarray(cell), np.asarray(want))
    assert result.info["all_prompts"] == [
        "a picture of a red circle, green background, framed",
        "a picture of a red circle, green background, framed, green background"]


def test_unknown_style_is_refused(api: Any) -> None:
    with pytest.raises(RuntimeError, match=r"no style named .*Oil.*styles are: .*Framed.*Green"):
        api.txt2img(prompt="a", width=32, height=32, styles=["Oil"])


def test_default_styles_file_beside_models_dir(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    settings = ServerSettings(models_dir=tmp_path / "models")
    assert styles_files(settings) == ()
    (tmp_path / "styles.csv").write_text(STYLES)
    assert styles_files(settings) == ((tmp_path / "styles.csv").resolve(),)
    assert styles_files(ServerSettings(models_dir=tmp_path / "models",
                                       styles_files=("x.csv",))) == ("x.csv",)
