"""The web page of `python -m diffusion serve`, driven in headless Chromium against the real server
(browser_fixtures.py's webui_server): the walks that generate for real.

One walk through what a WebUI user does first: type a prompt, Ctrl+Enter, watch the progress
bar, get an image in the gallery, read its parameters back in PNG Info and send them to txt2img.
Then Extras' upscaler, the ControlNet panel, img2img's inpaint area, and the Hires. fix,
Refiner and X/Y/Z plot sections, each with a run of its own.
The server runs in a thread (uvicorn) on a tiny random model at its native 32x32 with 8 steps
(about 1.3 s a step on two cores of llvmpipe, long enough for several progress polls), so the
image is noise; the point is the page and the API between them. The page's other tests, the
server's answers stood in for: test_browser_requests.py, test_browser_settings.py.
Screenshots go to tmp_path and, with AVX_SCREENSHOTS=DIR, there too (that is how
docs/screenshot-webui.png is refreshed; then the bundled model draws, if this installation has
it).
"""

from __future__ import annotations

import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from server_support import page_ready, page_sampling, screenshot
from support import ROOT

STATIC = ROOT / "diffusion" / "server" / "api" / "static"
PROMPT = "a red circle on a blue background"
STEPS = 8  # ~1.3 s a step on CI's 2 cores: the page's 500 ms progress poll sees the bar move


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value or "" for name, value in attrs if name in ("src", "href", "action")]


def test_page_references_only_local_resources() -> None:
    parser = _Links()
    parser.feed((STATIC / "index.html").read_text(encoding="utf-8"))
    assert parser.urls, "index.html links no resources at all?"
    remote = [url for url in parser.urls if re.match(r"\s*(https?:)?//", url)]
    assert not remote, f"index.html loads from outside the server: {remote}"
    for url in parser.urls:
        if url.startswith("/static/"):
            assert (STATIC / url.removeprefix("/static/")).is_file(), f"{url} is missing"
    for script in [*STATIC.glob("*.js"), *STATIC.glob("*.css")]:
        text = script.read_text(encoding="utf-8")
        assert not re.search(r"""(["'(]|url\()\s*(https?:)?//""", text), \
            f"{script.name} fetches from outside"


def test_generate_then_read_png_info(webui_server: tuple[str, int, bool], page: Any,
                                     tmp_path: Path) -> None:
    url, size, tiny = webui_server
    page.goto(url)
    page_ready(page)
    if tiny:  # a first visit starts from the model's defaults.json
        assert page_sampling(page) == ("6", "DDIM", "5")

    page.get_by_label("Sampling steps", exact=True).fill(str(STEPS))
    page.get_by_label("Width", exact=True).fill(str(size))
    page.get_by_label("Height", exact=True).fill(str(size))
    page.get_by_label("Seed", exact=True).fill("1234")
    # <progress> reflects its value into the attribute: record the largest value ever shown.
    page.evaluate("""() => {
        const bar = document.getElementById('progress');
        window.maxProgress = 0;
        new MutationObserver(() => {
            window.maxProgress = Math.max(window.maxProgress, bar.value);
        }).observe(bar, {attributes: true});
    }""")
    prompt = page.get_by_label("Prompt", exact=True)
    prompt.fill(PROMPT)
    prompt.press("Control+Enter")

    page.get_by_role("button", name="Interrupt", exact=True).wait_for(state="visible")
    page.wait_for_function("window.maxProgress > 0")
    screenshot(page, tmp_path, "screenshot-webui-running")
    page.locator("#gallery img").first.wait_for(timeout=90_000)
    page.get_by_role("button", name="Generate", exact=True).wait_for(state="visible")
    assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()
    assert page.locator("#progress_wrap").is_hidden()
    infotext = page.locator("#infotext").inner_text()
    assert PROMPT in infotext and f"Steps: {STEPS}" in infotext and "Seed: 1234" in infotext
    if tiny:
        assert "Sampler: DDIM, Schedule type: Automatic, CFG scale: 5, " in infotext
    src = page.locator("#selected_image").get_attribute("src")
    assert src and src.startswith("data:image/png;base64,")
    screenshot(page, tmp_path, "screenshot-webui")
    prompt.fill("")  # PNG Info's "Send to txt2img" must bring it back

    page.get_by_role("button", name="Send to PNG Info", exact=True).click()
    page.wait_for_function(
        "text => document.getElementById('pnginfo_text').textContent.includes(text)", arg=PROMPT)
    table = page.locator("#pnginfo_table").inner_text()
    assert re.search(rf"Steps\s+{STEPS}", table), table
    assert re.search(rf"Size\s+{size}x{size}", table), table
    screenshot(page, tmp_path, "screenshot-webui-pnginfo")

    page.get_by_role("button", name="Send to txt2img", exact=True).click()
    tab = page.get_by_role("tab", name="txt2img", exact=True)
    assert tab.get_attribute("aria-selected") == "true"
    assert prompt.input_value() == PROMPT
    assert page.get_by_label("Seed", exact=True).input_value() == "1234"
    assert not page.errors, page.errors


def test_extras_tab_upscales_an_upload(webui_server: tuple[str, int, bool], page: Any,
                                       tmp_path: Path) -> None:
    """Extras: upload a picture, pick "R-ESRGAN 4x+" (a tiny random RRDBNet from an upscaler
    folder), upscale by 2, and see the network's picture with its details."""
    pytest.importorskip("torch", reason="the tiny upscaler file is written with torch.save")
    import base64
    import io

    import numpy as np
    from PIL import Image
    from upscaler_files import write_x4plus

    from diffusion.upscalers import models

    url, _, _ = webui_server
    picture = np.random.default_rng(3).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(picture).save(tmp_path / "small.png")
    write_x4plus(tmp_path / "upscalers")
    before = dict(models.MODEL_UPSCALERS)  # the server runs in this process: one registry
    try:
        models.register_upscaler_dir(tmp_path / "upscalers")
        models.MODEL_UPSCALERS["R-ESRGAN 4x+"].dtype = np.float32  # lavapipe: f32 conv kernels
        page.goto(url)
        page_ready(page)
        page.get_by_role("tab", name="Extras", exact=True).click()
        page.locator("#extras_file").set_input_files(tmp_path / "small.png")
        page.locator("#extras_image").wait_for(state="visible")
        page.get_by_label("Upscaler", exact=True).select_option("R-ESRGAN 4x+")
        page.get_by_label("Scale by", exact=True).fill("2")
        page.get_by_role("button", name="Upscale", exact=True).click()
        result = page.locator("#extras_result")
        result.wait_for(state="visible", timeout=60_000)
        screenshot(page, tmp_path, "screenshot-webui-extras")
        src = result.get_attribute("src") or ""
        assert src.startswith("data:image/png;base64,"), src[:40]
        got = np.asarray(Image.open(io.BytesIO(base64.b64decode(src.split(",", 1)[1])))
                         .convert("RGB"))
        want = models.MODEL_UPSCALERS["R-ESRGAN 4x+"].upscale(picture, 2)
        assert got.shape == (40, 48, 3) and np.array_equal(got, want)
        assert "Postprocess upscaler: R-ESRGAN 4x+" in page.locator("#extras_info").inner_text()
        assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()
        assert not page.errors, page.errors
    finally:
        models.MODEL_UPSCALERS.clear()
        models.MODEL_UPSCALERS.update(before)


def test_controlnet_panel(webui_server: tuple[str, int, bool], page: Any, tmp_path: Path) -> None:
    """The ControlNet panel under the settings: the module's sliders as the extension names
    them (canny's resolution and thresholds; none for invert; the resolution hidden under
    Pixel Perfect), upload a picture, see the canny map the server detects at those settings,
    generate with the unit; its infotext carries it as the extension writes it. Then the
    preview's Pixel Perfect resolution, and Allow Preview."""
    url, size, tiny = webui_server
    if not tiny:
        pytest.skip("AVX_SCREENSHOTS: the bundled model is served alone, without ControlNets")
    from control_tiny import circle
    from PIL import Image

    picture = tmp_path / "circle.png"
    Image.fromarray(circle(40, 48)).save(picture)
    page.goto(url)
    page_ready(page)
    page.get_by_label("Sampling steps", exact=True).fill("2")
    page.get_by_label("Width", exact=True).fill(str(size))
    page.get_by_label("Height", exact=True).fill(str(size))
    page.locator("#controlnet_panel summary").click()
    page.get_by_label("Preprocessor", exact=True).select_option("invert")
    for name in ("cn_processor_res", "cn_threshold_a", "cn_threshold_b"):
        assert page.locator(f"#{name}_field").is_hidden(), name
    page.get_by_label("Preprocessor", exact=True).select_option("canny")
    low, high = page.get_by_label("Low Threshold", exact=True), page.get_by_label(
        "High Threshold", exact=True)
    resolution = page.get_by_label("Resolution", exact=True)
    assert (low.input_value(), high.input_value(), resolution.input_value()) == (
        "100", "200", "512")
    page.get_by_label("Pixel Perfect", exact=True).check()
    assert resolution.is_hidden() and low.is_visible()
    page.get_by_label("Pixel Perfect", exact=True).uncheck()
    resolution.fill("256")
    low.fill("50")
    high.fill("120")
    models = page.eval_on_selector("#cn_model", "s => [...s.options].map(o => o.value)")
    assert len(models) == 1 and models[0].startswith("tiny_canny [")
    page.locator("#cn_file").set_input_files(str(picture))
    page.locator("#cn_preview").wait_for(state="visible")
    preview = page.locator("#cn_preview").get_attribute("src")
    assert preview and preview.startswith("data:image/png;base64,")
    shown = page.eval_on_selector("#cn_preview", "img => [img.naturalWidth, img.naturalHeight]")
    assert shown == [307, 256]  # canny at the processor resolution given (the short side)
    assert page.get_by_label("Enable", exact=True).is_checked()
    page.get_by_label("Control Weight", exact=True).fill("0.7")
    page.get_by_label("Ending Control Step", exact=True).fill("0.5")
    screenshot(page, tmp_path, "screenshot-webui-controlnet")
    page.get_by_label("Prompt", exact=True).fill(PROMPT)
    page.get_by_role("button", name="Generate", exact=True).click()
    page.locator("#gallery img").first.wait_for(timeout=90_000)
    assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()
    infotext = page.locator("#infotext").inner_text()
    assert (f'ControlNet 0: "Module: canny, Model: {models[0]}, Weight: 0.7, Resize Mode: Crop '
            'and Resize, Processor Res: 256, Threshold A: 50.0, Threshold B: 120.0, Guidance '
            'Start: 0.0, Guidance End: 0.5, Pixel Perfect: False, Control Mode: Balanced"'
            ) in infotext, infotext

    # Pixel Perfect previews at the resolution the size gives (the short side 40 scaled by
    # max(80 / 40, 96 / 48) under Crop and Resize); Allow Preview off hides the map and stops
    # detecting as the unit changes; the Preview button turns it back on and detects once
    detects: list[str] = []
    page.on("request", lambda r: detects.append(r.url) if "/controlnet/detect" in r.url else None)
    page.get_by_label("Width", exact=True).fill("96")
    page.get_by_label("Height", exact=True).fill("80")
    page.get_by_label("Pixel Perfect", exact=True).check()
    page.wait_for_function("document.getElementById('cn_preview').naturalWidth === 96")
    assert page.eval_on_selector("#cn_preview", "img => img.naturalHeight") == 80
    page.get_by_label("Allow Preview", exact=True).uncheck()
    assert page.locator("#cn_preview_hint").is_hidden()  # the map's column is gone
    detects.clear()
    low.fill("60")
    low.dispatch_event("change")
    page.get_by_role("button", name="Preview", exact=True).click()
    page.locator("#cn_preview").wait_for(state="visible")
    assert page.get_by_label("Allow Preview", exact=True).is_checked() and len(detects) == 1
    assert not page.errors, page.errors


def test_inpaint_area_only_masked(webui_server: tuple[str, int, bool], page: Any,
                                  tmp_path: Path) -> None:
    """img2img with a painted mask sends the WebUI's Inpaint area: "Whole picture" by default
    (the WebUI page's default, not its API's), "Only masked" with its padding when chosen; the
    result then keeps the uploaded picture's size and says so in its infotext. Masked content
    likewise: "original" by default, "fill" when chosen, written after the mask blur."""
    from PIL import Image

    url, size, _ = webui_server
    Image.new("RGB", (48, 40), (20, 120, 220)).save(tmp_path / "init.png")
    bodies: list[dict[str, Any]] = []
    page.on("request", lambda request: bodies.append(request.post_data_json)
            if request.url.endswith("/sdapi/v1/img2img") else None)
    page.goto(url)
    page_ready(page)
    page.get_by_role("tab", name="img2img", exact=True).click()
    assert page.get_by_label("Inpaint area", exact=True).input_value() == "whole"
    assert page.get_by_label("Masked content", exact=True).input_value() == "1"  # original
    page.locator("#init_file").set_input_files(tmp_path / "init.png")
    canvas = page.locator("#mask_canvas")
    canvas.wait_for(state="visible")
    canvas.click(position={"x": 10, "y": 10})  # a brush dab: the mask
    page.get_by_label("Sampling steps", exact=True).fill(str(STEPS))
    for side in ("Width", "Height"):
        page.get_by_label(side, exact=True).fill(str(size))
    page.get_by_label("Inpaint area", exact=True).select_option("Only masked")
    page.get_by_label("Only masked padding, pixels", exact=True).fill("8")
    page.get_by_label("Masked content", exact=True).select_option("fill")
    page.get_by_role("button", name="Generate", exact=True).click()
    page.locator("#gallery img").first.wait_for(timeout=90_000)
    page.get_by_role("button", name="Generate", exact=True).wait_for(state="visible")
    assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()
    body = bodies[-1]
    assert body["mask"] and body["inpaint_full_res"] is True
    assert body["inpaint_full_res_padding"] == 8 and body["inpainting_fill"] == 0
    assert "Mask blur: 4, Inpaint area: Only masked, Masked area padding: 8, Masked content: " \
        "fill" in page.locator("#infotext").inner_text()
    shown = page.eval_on_selector("#selected_image", "img => [img.naturalWidth, img.naturalHeight]")
    assert shown == [48, 40]
    assert not page.errors, page.errors


def _generated(page: Any) -> None:
    """Wait for the run's pictures (or the error that says why there are none)."""
    page.wait_for_function("document.querySelector('#gallery img') || "
                           "!document.getElementById('error').hidden", timeout=90_000)
    assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()
    page.get_by_role("button", name="Generate", exact=True).wait_for(state="visible")


def _send_back_to_txt2img(page: Any, text: str) -> None:
    """The selected picture through PNG Info back into txt2img."""
    page.get_by_role("button", name="Send to PNG Info", exact=True).click()
    page.wait_for_function("text => document.getElementById('pnginfo_text').textContent"
                           ".includes(text)", arg=text)
    page.get_by_role("button", name="Send to txt2img", exact=True).click()


def test_hires_refiner_and_xyz_plot_round_trip(webui_server: tuple[str, int, bool], page: Any,
                                               tmp_path: Path) -> None:
    """The Hires. fix and Refiner sections and the Script dropdown's X/Y/Z plot (its fields from
    /sdapi/v1/script-info): the request carries them as the WebUI's page sends them, the
    infotext says them, and PNG Info's "Send to txt2img" sets every control back (and turns
    off what the infotext does not have). Two runs: the X/Y/Z plot with the hires fix, then
    the refiner."""
    url, size, tiny = webui_server
    if not tiny:
        pytest.skip("AVX_SCREENSHOTS: the bundled model is served alone, no refiner for it")
    bodies: list[dict[str, Any]] = []
    page.on("request", lambda request: bodies.append(request.post_data_json)
            if request.url.endswith("/sdapi/v1/txt2img") else None)
    page.goto(url)
    page_ready(page)
    refiner = page.eval_on_selector(
        "#refiner_checkpoint", "s => [...s.options].map(o => o.value)")
    refiner, = (title for title in refiner if title.startswith("tiny-plain ["))
    label = page.get_by_label
    label("Sampling steps", exact=True).fill("2")
    label("Width", exact=True).fill(str(size))
    label("Height", exact=True).fill(str(size))
    label("Seed", exact=True).fill("5")
    page.locator("#hires_panel summary").click()
    label("Enable hires. fix", exact=True).check()
    label("Hires upscaler", exact=True).select_option("Latent (nearest)")
    label("Hires steps", exact=True).fill("2")
    label("Hires denoising strength slider", exact=True).fill("0.45")
    label("Upscale by", exact=True).fill("1.5")
    label("Script", exact=True).select_option("X/Y/Z plot")
    label("X type", exact=True).select_option("CFG Scale")
    label("X values", exact=True).fill("4, 6")
    page.get_by_role("button", name="Generate", exact=True).click()
    _generated(page)
    body = bodies[-1]
    assert {k: body[k] for k in ("enable_hr", "hr_upscaler", "hr_scale", "hr_second_pass_steps",
                                 "hr_resize_x", "denoising_strength", "script_name")} == {
        "enable_hr": True, "hr_upscaler": "Latent (nearest)", "hr_scale": 1.5,
        "hr_second_pass_steps": 2, "hr_resize_x": 0, "denoising_strength": 0.45,
        "script_name": "x/y/z plot"}
    assert "refiner_checkpoint" not in body
    assert body["script_args"][:5] == ["CFG Scale", "4, 6", [], "Nothing", ""]
    assert page.locator("#gallery img").count() == 1  # the grid alone (no Include Sub Images)
    width = page.eval_on_selector("#selected_image", "img => img.naturalWidth")
    assert width >= 2 * int(size * 1.5), width  # two hires cells side by side
    infotext = page.locator("#infotext").inner_text()
    for said in ("Denoising strength: 0.45", "Hires upscale: 1.5", "Hires steps: 2",
                 "Hires upscaler: Latent (nearest)",
                 'Script: X/Y/Z plot, X Type: CFG Scale, X Values: "4, 6"'):
        assert said in infotext, (said, infotext)
    screenshot(page, tmp_path, "screenshot-webui-sections")
    label("Enable hires. fix", exact=True).uncheck()  # off, then back from the grid's infotext
    label("Hires steps", exact=True).fill("0")
    label("Script", exact=True).select_option("None")
    _send_back_to_txt2img(page, "X/Y/Z plot")
    assert label("Enable hires. fix", exact=True).is_checked()
    assert [label(name, exact=True).input_value() for name in (
        "Hires upscaler", "Hires steps", "Hires denoising strength",
        "Hires denoising strength slider", "Upscale by", "Resize width to", "Script", "X type",
        "X values")] == ["Latent (nearest)", "2", "0.45", "0.45", "1.5", "0", "x/y/z plot",
                         "CFG Scale", "4, 6"]

    label("Enable hires. fix", exact=True).uncheck()
    label("Script", exact=True).select_option("None")
    page.locator("#refiner_panel summary").click()
    label("Enable refiner", exact=True).check()
    label("Refiner checkpoint", exact=True).select_option(refiner)
    label("Switch at", exact=True).fill("0.5")
    page.get_by_role("button", name="Generate", exact=True).click()
    _generated(page)
    assert (bodies[-1]["refiner_checkpoint"], bodies[-1]["refiner_switch_at"]) == (refiner, 0.5)
    assert "enable_hr" not in bodies[-1] and "script_name" not in bodies[-1]
    assert "Refiner: tiny-plain, Refiner switch at: 0.5" in page.locator("#infotext").inner_text()
    label("Enable refiner", exact=True).uncheck()
    label("Switch at", exact=True).fill("0.8")
    label("Enable hires. fix", exact=True).check()  # the infotext has none: turned off
    _send_back_to_txt2img(page, "Refiner switch at")
    assert label("Enable refiner", exact=True).is_checked()
    assert not label("Enable hires. fix", exact=True).is_checked()
    assert (label("Refiner checkpoint", exact=True).input_value(),
            label("Switch at", exact=True).input_value(),
            label("Script", exact=True).input_value()) == (refiner, "0.5", "")
    assert not page.errors, page.errors
