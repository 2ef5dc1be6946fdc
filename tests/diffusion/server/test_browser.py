"""The web page of `python -m diffusion serve`, driven in headless Chromium against the real server.

One walk through what a WebUI user does first: type a prompt, Ctrl+Enter, watch the progress
bar, get an image in the gallery, read its parameters back in PNG Info and send them to txt2img.
A second walk switches models: steps, sampler and CFG scale follow the loaded model's
defaults.json (the WebUI's 20 / Euler a / 7 without one), and what the user set survives a reload.
The server runs in a thread (uvicorn) on a tiny random model at its native 32x32 with 15 steps
(about 8 s on two cores of llvmpipe, long enough for several progress polls), so the image is
noise; the point is the page and the API between them. Screenshots go to tmp_path and, with
AVX_SCREENSHOTS=DIR, there too (that is how docs/screenshot-webui.png is refreshed; then the
bundled model draws, if this installation has it).
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from server_support import live_server, screenshot
from support import ROOT

STATIC = ROOT / "diffusion" / "server" / "api" / "static"
PROMPT = "a red circle on a blue background"
STEPS = 8  # ~1.3 s a step on CI's 2 cores: the page's 500 ms progress poll sees the bar move
TINY_DEFAULTS = {"steps": 6, "sampler": "DDIM", "cfg_scale": 5}  # the tiny model's defaults.json


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


# ---- The browser walk-through


def _model_path(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int, Path | None]:
    """(model folder, image size, models folder): the bundled model alone for doc screenshots,
    else a tiny random one recommending TINY_DEFAULTS, beside a copy that recommends nothing."""
    if os.environ.get("AVX_SCREENSHOTS"):
        try:
            from diffusion.pipelines.load import default_model_path

            return default_model_path(), 128, None
        except FileNotFoundError:
            pass
    pytest.importorskip("diffusers",
                        reason="the tiny test model is built with diffusers (extra: reference)")
    from sd_tiny import write_pipeline

    models = tmp_path_factory.mktemp("models")
    model = write_pipeline(models / "tiny-sd")
    shutil.copytree(model, models / "tiny-plain")
    (model / "defaults.json").write_text(json.dumps(TINY_DEFAULTS), encoding="utf-8")
    return model, 32, models


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int, bool]]:
    """(base URL, image size, whether the tiny models are served) of the real server, running in
    a thread on a free port."""
    pytest.importorskip("uvicorn", reason="the server extra is not installed")
    from diffusion.server.api.app import create_app

    model, size, models = _model_path(tmp_path_factory)
    controlnets = None
    if models is not None:  # tiny ControlNets of the tiny model, for the ControlNet panel
        from control_tiny import write_controlnets

        controlnets = write_controlnets(tmp_path_factory.mktemp("ControlNet"), ("tiny_canny",))
    app = create_app(model=str(model), models_dir=models, controlnet_dir=controlnets,
                     outputs=str(tmp_path_factory.mktemp("outputs")))
    with live_server(app, start_timeout=60) as base:
        yield f"{base}/", size, models is not None


def _ready(page: Any) -> None:
    """Wait until the page has its lists and the model's sampling settings."""
    page.locator("#params[aria-busy=false]").wait_for(state="attached")
    assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()


def _sampling(page: Any) -> tuple[str, str, str]:
    return (page.get_by_label("Sampling steps", exact=True).input_value(),
            page.get_by_label("Sampling method", exact=True).input_value(),
            page.get_by_label("CFG Scale", exact=True).input_value())


def test_generate_then_read_png_info(server: tuple[str, int, bool], page: Any,
                                     tmp_path: Path) -> None:
    url, size, tiny = server
    page.goto(url)
    _ready(page)
    if tiny:  # a first visit starts from the model's defaults.json
        assert _sampling(page) == ("6", "DDIM", "5")

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


def test_sampling_settings_follow_the_model(server: tuple[str, int, bool], page: Any) -> None:
    url, _, tiny = server
    if not tiny:
        pytest.skip("AVX_SCREENSHOTS: the bundled model is served alone, no model to switch to")
    page.goto(url)
    _ready(page)
    assert _sampling(page) == ("6", "DDIM", "5")
    titles = page.eval_on_selector("#model", "select => [...select.options].map(o => o.value)")
    plain, = (t for t in titles if t.startswith("tiny-plain ["))
    recommending, = (t for t in titles if t.startswith("tiny-sd ["))

    def switch(title: str) -> None:
        response = page.request.post(f"{url}sdapi/v1/options",
                                     data={"sd_model_checkpoint": title})
        assert response.ok, response.text()

    page.locator("#model").select_option(plain)
    _ready(page)
    assert _sampling(page) == ("20", "Euler a", "7")  # no defaults.json: the page's own
    page.get_by_label("Sampling steps", exact=True).fill("9")
    page.get_by_label("Sampling steps", exact=True).press("Tab")
    page.locator("#model").select_option(recommending)
    _ready(page)
    assert _sampling(page) == ("6", "DDIM", "5")

    # what the user changes for a model survives a reload while that model is loaded...
    page.get_by_label("Sampling steps", exact=True).fill("9")
    page.get_by_label("Sampling steps", exact=True).press("Tab")
    page.reload()
    _ready(page)
    assert _sampling(page) == ("9", "DDIM", "5")
    # ...but not a switch made elsewhere (another tab, an API client): the page follows the server
    switch(plain)
    page.reload()
    _ready(page)
    assert _sampling(page) == ("20", "Euler a", "7")
    assert page.locator("#model").input_value() == plain
    switch(recommending)  # the server as the module's other test expects it
    assert not page.errors, page.errors


def test_extras_tab_upscales_an_upload(server: tuple[str, int, bool], page: Any,
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

    url, _, _ = server
    picture = np.random.default_rng(3).integers(0, 256, (20, 24, 3), dtype=np.uint8)
    Image.fromarray(picture).save(tmp_path / "small.png")
    write_x4plus(tmp_path / "upscalers")
    before = dict(models.MODEL_UPSCALERS)  # the server runs in this process: one registry
    try:
        models.register_upscaler_dir(tmp_path / "upscalers")
        models.MODEL_UPSCALERS["R-ESRGAN 4x+"].dtype = np.float32  # lavapipe: f32 conv kernels
        page.goto(url)
        _ready(page)
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


def test_controlnet_panel(server: tuple[str, int, bool], page: Any, tmp_path: Path) -> None:
    """The ControlNet panel under the settings: the module's sliders as the extension names
    them (canny's resolution and thresholds; none for invert; the resolution hidden under
    Pixel Perfect), upload a picture, see the canny map the server detects at those settings,
    generate with the unit; its infotext carries it as the extension writes it. Then the
    preview's Pixel Perfect resolution, and Allow Preview."""
    url, size, tiny = server
    if not tiny:
        pytest.skip("AVX_SCREENSHOTS: the bundled model is served alone, without ControlNets")
    from control_tiny import circle
    from PIL import Image

    picture = tmp_path / "circle.png"
    Image.fromarray(circle(40, 48)).save(picture)
    page.goto(url)
    _ready(page)
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


def test_tab_survives_a_reload_after_a_setting_changed_on_it(
        server: tuple[str, int, bool], page: Any) -> None:
    """A setting changed on Extras (or PNG Info) must not record txt2img as the tab to reopen."""
    url, _, _ = server
    page.goto(url)
    _ready(page)
    page.get_by_role("tab", name="Extras", exact=True).click()
    scale = page.get_by_label("Scale by", exact=True)
    scale.fill("3")
    scale.press("Tab")
    page.reload()
    _ready(page)
    assert page.get_by_role("tab", name="Extras", exact=True).get_attribute(
        "aria-selected") == "true"
    assert scale.is_visible() and scale.input_value() == "3"
    assert not page.errors, page.errors


def test_ctrl_enter_generates_from_any_field(server: tuple[str, int, bool], page: Any) -> None:
    """As in the WebUI, Ctrl+Enter generates wherever the focus is on the tab, not only in the
    prompts (the request is answered here: the point is that it is sent)."""
    url, _, _ = server
    page.route("**/sdapi/v1/txt2img", lambda route: route.fulfill(
        status=422, content_type="application/json", json={"detail": "answered by the test"}))
    page.goto(url)
    _ready(page)
    seed = page.get_by_label("Seed", exact=True)
    seed.fill("4321")
    with page.expect_request("**/sdapi/v1/txt2img", timeout=5_000) as request:
        seed.press("Control+Enter")
    assert request.value.post_data_json["seed"] == 4321
    page.get_by_text("answered by the test").wait_for()
    assert page.get_by_role("button", name="Generate", exact=True).is_visible()


def _stand_in_for_a_run(page: Any, *, progress: float, eta: float, step: int,
                        steps: int) -> list[Any]:
    """Holds the page's txt2img requests (the list: answer them) and answers its progress polls
    (/internal/progress) with one state of a run, for the task id that txt2img was sent with
    only, so that what the page shows of its own run is tested without one."""
    pending: list[Any] = []
    page.route("**/sdapi/v1/txt2img", lambda route: pending.append(route))

    def answer(route: Any) -> None:
        tasks = [held.request.post_data_json["force_task_id"] for held in pending]
        own = route.request.post_data_json["id_task"] in tasks
        route.fulfill(json=_task_progress(own, progress=progress, eta=eta, state={
            "job_count": 1, "job_no": 0, "sampling_step": step, "sampling_steps": steps}))
    page.route("**/internal/progress", answer)
    return pending


def _task_progress(active: bool, **running: Any) -> dict[str, Any]:
    """An /internal/progress answer: the task running (`running`: progress, eta, state) or
    not known (yet)."""
    idle = {"active": False, "queued": False, "completed": False, "progress": None,
            "eta": None, "live_preview": None, "id_live_preview": -1, "textinfo": "Waiting...",
            "state": None}
    return {**idle, "active": True, "textinfo": None, **running} if active else idle


def test_interrupting_stays_on_screen_until_the_run_ends(
        server: tuple[str, int, bool], page: Any) -> None:
    """After Interrupt the progress line keeps saying so; the next poll used to put the last
    step's numbers (and a growing ETA) back, as if the run went on. The interrupt names the
    run's id_task (so that it stops this tab's job alone). The server is stood in for."""
    url, _, _ = server
    pending = _stand_in_for_a_run(page, progress=0.5, eta=3, step=1, steps=2)
    stops: list[Any] = []
    page.route("**/sdapi/v1/interrupt", lambda route: (
        stops.append(route.request.post_data_json), route.fulfill(json={})))
    page.goto(url)
    _ready(page)
    page.get_by_role("button", name="Generate", exact=True).click()
    text = page.locator("#progress_text")
    page.wait_for_function("document.getElementById('progress_text').textContent.includes('step')")
    page.get_by_role("button", name="Interrupt", exact=True).click()
    page.wait_for_timeout(1_200)  # two polls
    assert text.inner_text() == "Interrupting…"
    assert stops == [{"id_task": pending[0].request.post_data_json["force_task_id"]}]
    pending[0].fulfill(json={"images": [], "info": "{}"})
    page.get_by_role("button", name="Generate", exact=True).wait_for(state="visible")
    assert not page.errors, page.errors


def test_an_emptied_number_box_is_named_not_sent_as_zero(
        server: tuple[str, int, bool], page: Any) -> None:
    """Clearing CFG Scale (or Seed, Sampling steps...) used to generate with 0 there: a silent
    CFG scale 0, a fixed seed 0. The page names the box instead and sends nothing."""
    url, _, _ = server
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.url) if "txt2img" in request.url
            else None)
    page.goto(url)
    _ready(page)
    page.get_by_label("CFG Scale", exact=True).fill("")
    page.get_by_role("button", name="Generate", exact=True).click()
    page.locator("#error").wait_for(state="visible", timeout=5_000)
    assert page.locator("#error_text").inner_text() == "CFG Scale is empty: enter a number."
    assert not sent and page.get_by_role("button", name="Generate", exact=True).is_visible()
    assert not page.errors, page.errors


def test_controlnet_sliders_are_saved(server: tuple[str, int, bool], page: Any) -> None:
    """Control Weight moved with its slider survives a reload, as typed into its box does."""
    url, _, _ = server
    page.goto(url)
    _ready(page)
    page.locator("#controlnet_panel summary").click()
    page.get_by_label("Control Weight slider", exact=True).fill("0.5")
    assert page.get_by_label("Control Weight", exact=True).input_value() == "0.5"
    page.reload()
    _ready(page)
    assert page.get_by_label("Control Weight", exact=True).input_value() == "0.5"
    assert not page.errors, page.errors


def test_png_info_of_an_unreadable_file(server: tuple[str, int, bool], page: Any) -> None:
    """A file the server cannot read is reported as such, not as an image without parameters."""
    url, _, _ = server
    page.goto(url)
    _ready(page)
    page.get_by_role("tab", name="PNG Info", exact=True).click()
    page.locator("#pnginfo_file").set_input_files(
        files=[{"name": "broken.png", "mimeType": "image/png", "buffer": b"not a png"}])
    page.locator("#error").wait_for(state="visible")
    assert "not a readable image" in page.locator("#error_text").inner_text()
    assert page.locator("#pnginfo_text").inner_text() == ""
    assert page.get_by_role("button", name="Send to txt2img", exact=True).is_disabled()
    assert not page.errors, page.errors


def test_full_size_view_by_keyboard(server: tuple[str, int, bool], page: Any) -> None:
    """The selected result opens full size from the keyboard too (Enter), and Escape brings the
    focus back to it rather than to the top of the page. The server's answer is stood in for."""
    url, _, _ = server
    red = ("iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFElEQVR4nGM8ISfHgA0wYRUdtBIA0MoB"
           "FD5jqJkAAAAASUVORK5CYII=")  # an 8x8 PNG
    page.route("**/sdapi/v1/txt2img", lambda route: route.fulfill(json={
        "images": [red], "info": json.dumps({"infotexts": ["red"], "all_seeds": [7], "seed": 7})}))
    page.goto(url)
    _ready(page)
    page.get_by_role("button", name="Generate", exact=True).click()
    selected = page.locator("#selected_image")
    selected.wait_for(state="visible")
    selected.focus()
    page.keyboard.press("Enter")
    page.get_by_role("dialog", name="Full-size image").wait_for(state="visible", timeout=5_000)
    page.keyboard.press("Escape")
    assert page.locator("#lightbox").is_hidden()
    assert page.evaluate("document.activeElement.id") == "selected_image"
    assert not page.errors, page.errors


def test_saved_upscaler_survives_a_slow_upscaler_list(
        server: tuple[str, int, bool], page: Any) -> None:
    """The page restores the saved settings once its lists are in; the upscaler list was not
    waited for, so when it came late Extras fell back to Lanczos."""
    url, _, _ = server
    page.goto(url)
    _ready(page)
    page.get_by_role("tab", name="Extras", exact=True).click()
    page.get_by_label("Upscaler", exact=True).select_option("Nearest")
    page.route("**/sdapi/v1/upscalers", lambda route: (time.sleep(1), route.continue_()))
    page.reload()
    _ready(page)
    page.wait_for_function("document.getElementById('extras_upscaler').options.length > 0")
    assert page.get_by_label("Upscaler", exact=True).input_value() == "Nearest"
    assert not page.errors, page.errors


def test_eta_minutes_and_seconds(server: tuple[str, int, bool], page: Any) -> None:
    """An ETA just under two minutes reads 2m 00s (it read 1m 60s). The server is stood in for."""
    url, _, _ = server
    pending = _stand_in_for_a_run(page, progress=0.1, eta=119.5, step=1, steps=10)
    page.goto(url)
    _ready(page)
    page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_function("document.getElementById('progress_text').textContent.includes('ETA')")
    assert page.locator("#progress_text").inner_text() == "10% · step 1/10 · ETA 2m 00s"
    pending[0].fulfill(json={"images": [], "info": "{}"})
    page.get_by_role("button", name="Generate", exact=True).wait_for(state="visible")
    assert not page.errors, page.errors


def test_inpaint_area_only_masked(server: tuple[str, int, bool], page: Any,
                                  tmp_path: Path) -> None:
    """img2img with a painted mask sends the WebUI's Inpaint area: "Whole picture" by default
    (the WebUI page's default, not its API's), "Only masked" with its padding when chosen; the
    result then keeps the uploaded picture's size and says so in its infotext. Masked content
    likewise: "original" by default, "fill" when chosen, written after the mask blur."""
    from PIL import Image

    url, size, _ = server
    Image.new("RGB", (48, 40), (20, 120, 220)).save(tmp_path / "init.png")
    bodies: list[dict[str, Any]] = []
    page.on("request", lambda request: bodies.append(request.post_data_json)
            if request.url.endswith("/sdapi/v1/img2img") else None)
    page.goto(url)
    _ready(page)
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


def test_two_tabs_each_follow_their_own_run(server: tuple[str, int, bool], page: Any) -> None:
    """Two tabs generating at once: each sends its own task id with its txt2img and polls
    /internal/progress with it, so each shows its own run (they both showed the server's one
    running job). The server is stood in for: the first tab's run at 20 %, the second's at
    70 %; the second tab's first two polls find its run still queued."""
    url, _, _ = server
    prompts: dict[str, str] = {}  # task id -> the prompt it was sent with
    held: list[Any] = []
    polls: dict[str, int] = {}

    def generation(route: Any) -> None:
        body = route.request.post_data_json
        prompts[body["force_task_id"]] = body["prompt"]
        held.append(route)

    def progress(route: Any) -> None:
        task = route.request.post_data_json["id_task"]
        polls[task] = polls.get(task, 0) + 1
        if prompts.get(task) == "second" and polls[task] <= 2:
            route.fulfill(json={**_task_progress(False), "queued": True,
                                "textinfo": "In queue: 1/1"})
            return
        fraction = {"first": 0.2, "second": 0.7}.get(prompts.get(task, ""))
        route.fulfill(json=_task_progress(fraction is not None, progress=fraction, eta=4,
                                          state={"job_count": 1, "job_no": 0,
                                                 "sampling_step": round(fraction * 10)
                                                 if fraction else 0, "sampling_steps": 10}))

    other = page.context.browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        other.errors = []
        other.on("pageerror", lambda error: other.errors.append(str(error)))
        for tab in (page, other):
            tab.route("**/sdapi/v1/txt2img", generation)
            tab.route("**/internal/progress", progress)
        for tab, prompt in ((page, "first"), (other, "second")):
            tab.goto(url)
            _ready(tab)
            tab.get_by_label("Prompt", exact=True).fill(prompt)
            tab.get_by_role("button", name="Generate", exact=True).click()
        other.wait_for_function(
            "document.getElementById('progress_text').textContent === 'In queue: 1/1'")
        for tab, shown in ((page, "20% · step 2/10 · ETA 4s"), (other, "70% · step 7/10 · ETA 4s")):
            tab.wait_for_function("text => document.getElementById('progress_text').textContent "
                                  "=== text", arg=shown)
        tasks = list(prompts)
        assert len(tasks) == 2 and tasks[0] != tasks[1] and all(
            re.fullmatch(r"task\([0-9a-f]{16}\)", task) for task in tasks)
        for route in held:
            route.fulfill(json={"images": [], "info": "{}"})
        for tab in (page, other):
            tab.get_by_role("button", name="Generate", exact=True).wait_for(state="visible")
        assert not page.errors and not other.errors, (page.errors, other.errors)
    finally:
        other.close()  # and its context: the module's browser lives on


def _png_with_infotext(path: Path, infotext: str) -> Path:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    text = PngInfo()
    text.add_text("parameters", infotext)
    Image.new("RGB", (48, 40), (30, 90, 160)).save(path, pnginfo=text)
    return path


def test_png_info_sends_the_inpaint_settings_to_img2img(
        server: tuple[str, int, bool], page: Any, tmp_path: Path) -> None:
    """PNG Info's "Send to img2img" restores Mask blur, Mask mode (our "Inpaint not masked"),
    Masked content, Inpaint area and its padding from the infotext, under the WebUI's keys; an
    infotext without them resets them to the WebUI parser's defaults (Inpaint masked,
    original, Whole picture, 32: the server's png-info gives them), Mask blur staying as it
    was; the PNG Info table shows only what the infotext says, not those defaults."""
    url, _, _ = server
    inpainted = _png_with_infotext(tmp_path / "inpainted.png", (
        "a lighthouse\nNegative prompt: fog\nSteps: 12, Sampler: Euler, CFG scale: 6, Seed: 77, "
        "Size: 48x40, Denoising strength: 0.6, Mask blur: 12, Mask mode: Inpaint not masked, "
        "Inpaint area: Only masked, Masked area padding: 48, Masked content: latent noise"))
    plain = _png_with_infotext(tmp_path / "plain.png", (
        "a harbour\nSteps: 9, Sampler: Euler, CFG scale: 5, Seed: 78, Size: 48x40, "
        "Denoising strength: 0.5"))
    page.goto(url)
    _ready(page)

    def send_to_img2img(picture: Path, prompt: str) -> None:
        page.get_by_role("tab", name="PNG Info", exact=True).click()
        page.locator("#pnginfo_file").set_input_files(picture)
        page.wait_for_function("text => document.getElementById('pnginfo_text').textContent"
                               ".includes(text)", arg=prompt)
        page.get_by_role("button", name="Send to img2img", exact=True).click()
        assert page.get_by_role("tab", name="img2img", exact=True).get_attribute(
            "aria-selected") == "true"
        assert page.get_by_label("Prompt", exact=True).input_value() == prompt

    def inpaint_controls() -> tuple[str, str, bool, str, str, str]:
        return (page.get_by_label("Mask blur", exact=True).input_value(),
                page.get_by_label("Mask blur slider", exact=True).input_value(),
                page.get_by_label("Inpaint not masked", exact=True).is_checked(),
                page.get_by_label("Masked content", exact=True).input_value(),
                page.get_by_label("Inpaint area", exact=True).input_value(),
                page.get_by_label("Only masked padding, pixels", exact=True).input_value())

    send_to_img2img(inpainted, "a lighthouse")
    assert inpaint_controls() == ("12", "12", True, "2", "masked", "48")  # 2: latent noise
    assert page.get_by_label("Denoising strength", exact=True).input_value() == "0.6"
    page.locator("#init_canvas").wait_for(state="visible")  # the picture came along
    page.get_by_label("Masked content", exact=True).scroll_into_view_if_needed()
    screenshot(page, tmp_path, "screenshot-webui-pnginfo-inpaint")
    page.reload()  # restored settings are saved like typed ones
    _ready(page)
    assert inpaint_controls() == ("12", "12", True, "2", "masked", "48")

    send_to_img2img(plain, "a harbour")
    assert inpaint_controls() == ("12", "12", False, "1", "whole", "32")  # 1: original
    table = page.locator("#pnginfo_table").text_content()
    assert "Denoising strength" in table and "Mask mode" not in table, table
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


def test_hires_refiner_and_xyz_plot_round_trip(server: tuple[str, int, bool], page: Any,
                                               tmp_path: Path) -> None:
    """The Hires. fix and Refiner sections and the Script dropdown's X/Y/Z plot (its fields from
    /sdapi/v1/script-info): the request carries them as the WebUI's page sends them, the
    infotext says them, and PNG Info's "Send to txt2img" sets every control back (and turns
    off what the infotext does not have). Two runs: the X/Y/Z plot with the hires fix, then
    the refiner."""
    url, size, tiny = server
    if not tiny:
        pytest.skip("AVX_SCREENSHOTS: the bundled model is served alone, no refiner for it")
    bodies: list[dict[str, Any]] = []
    page.on("request", lambda request: bodies.append(request.post_data_json)
            if request.url.endswith("/sdapi/v1/txt2img") else None)
    page.goto(url)
    _ready(page)
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


def test_extra_networks_and_the_live_preview(server: tuple[str, int, bool], page: Any,
                                             tmp_path: Path) -> None:
    """The extra-networks cards: a LoRA card adds <lora:NAME:1> to the prompt, an embedding
    card its name, a second click takes it out; a checkpoint card switches the model. While a
    run goes on the page shows its live preview and Skip names the run. The LoRA and embedding
    lists and the run are stood in for; the model switch is real. Restore faces comes back from
    an infotext's "Face restoration" and goes out as restore_faces, Tiling from "Tiling: True"
    as tiling."""
    url, _, tiny = server
    if not tiny:
        pytest.skip("AVX_SCREENSHOTS: the bundled model is served alone, no model to switch to")
    import base64
    import io

    from PIL import Image

    page.route("**/sdapi/v1/loras", lambda route: route.fulfill(json=[
        {"name": "paper_cut", "alias": "papercut", "path": "/l/paper_cut.safetensors",
         "metadata": {}}]))
    page.route("**/sdapi/v1/embeddings", lambda route: route.fulfill(json={
        "loaded": {"bad-hands": {"step": None, "sd_checkpoint": None,
                                 "sd_checkpoint_name": None, "shape": 768, "vectors": 2}},
        "skipped": {}}))
    buffer = io.BytesIO()
    Image.new("RGB", (24, 16), (200, 40, 40)).save(buffer, format="PNG")
    preview = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    pending: list[Any] = []
    skips: list[Any] = []
    page.route("**/sdapi/v1/txt2img", lambda route: pending.append(route))
    page.route("**/sdapi/v1/skip", lambda route: (
        skips.append(route.request.post_data_json), route.fulfill(json={})))
    page.route("**/internal/progress", lambda route: route.fulfill(json=_task_progress(
        True, progress=0.5, eta=2, live_preview=preview, id_live_preview=3,
        state={"job_count": 1, "job_no": 0, "sampling_step": 3, "sampling_steps": 6})))
    page.goto(url)
    _ready(page)
    prompt = page.get_by_label("Prompt", exact=True)
    prompt.fill("a fox")
    page.locator("#networks_panel summary").click()
    cards = page.locator("#networks_panel .card")
    page.locator("#cards_loras .card", has_text="paper_cut").click()
    assert prompt.input_value() == "a fox <lora:paper_cut:1>"
    page.locator("#cards_embeddings .card", has_text="bad-hands").click()
    assert prompt.input_value() == "a fox <lora:paper_cut:1> bad-hands"
    page.locator("#cards_loras .card", has_text="paper_cut").click()
    assert prompt.input_value() == "a fox bad-hands"
    page.get_by_label("Search extra networks", exact=True).fill("plain")
    assert [card.inner_text() for card in cards.all() if card.is_visible()] \
        and all("plain" in card.inner_text() for card in cards.all() if card.is_visible())
    plain = page.locator("#cards_checkpoints .card", has_text="tiny-plain")
    assert plain.get_attribute("aria-pressed") == "false"
    plain.click()
    page.wait_for_function("document.getElementById('model').value.startsWith('tiny-plain')")
    _ready(page)
    assert plain.get_attribute("aria-pressed") == "true"
    assert _sampling(page) == ("20", "Euler a", "7")  # the plain model's: it is loaded
    page.get_by_label("Search extra networks", exact=True).fill("")
    page.locator("#cards_checkpoints .card", has_text="tiny-sd").click()
    page.wait_for_function("document.getElementById('model').value.startsWith('tiny-sd')")
    _ready(page)

    # an infotext's face restoration, and a hires fix to a size as older pictures write it (no
    # upscaler)
    picture = _png_with_infotext(tmp_path / "faces.png", (
        "a face\nSteps: 9, Sampler: Euler, CFG scale: 5, Seed: 78, Size: 48x40, "
        "Denoising strength: 0.5, Face restoration: CodeFormer, Tiling: True, "
        "Hires resize: 64x48"))
    page.get_by_role("tab", name="PNG Info", exact=True).click()
    page.locator("#pnginfo_file").set_input_files(picture)
    page.wait_for_function("document.getElementById('pnginfo_text').textContent"
                           ".includes('a face')")
    page.get_by_role("button", name="Send to txt2img", exact=True).click()
    assert page.get_by_label("Restore faces", exact=True).is_checked()
    assert page.get_by_label("Tiling", exact=True).is_checked()
    assert page.get_by_label("Enable hires. fix", exact=True).is_checked()

    page.get_by_role("button", name="Generate", exact=True).click()
    page.locator("#preview").wait_for(state="visible")
    assert page.locator("#preview").get_attribute("src") == preview
    page.get_by_role("button", name="Skip", exact=True).click()
    page.wait_for_timeout(300)  # for the request to go out
    sent = pending[0].request.post_data_json
    assert skips == [{"id_task": sent["force_task_id"]}]
    assert (sent["prompt"], sent["restore_faces"], sent["enable_hr"], sent["hr_upscaler"],
            sent["hr_scale"], sent["hr_resize_x"], sent["hr_resize_y"],
            sent["denoising_strength"]) == ("a face", True, True, "Latent", 2, 64, 48, 0.5)
    assert sent["tiling"] is True
    pending[0].fulfill(json={"images": [], "info": "{}"})
    page.get_by_role("button", name="Generate", exact=True).wait_for(state="visible")
    assert page.locator("#preview").is_hidden()
    assert page.locator("#error").is_visible()  # "no images": what the stand-in answered

    # img2img's scripts, their fields from script-info: SD upscale's upscaler from the server's
    page.get_by_role("tab", name="img2img", exact=True).click()
    script = page.get_by_label("Script", exact=True)
    assert "SD upscale" in script.inner_text() and page.locator("#hires_panel").is_hidden()
    script.select_option("SD upscale")
    assert page.get_by_label("Upscaler", exact=True).locator("option", has_text="Lanczos").count()
    assert page.get_by_label("Tile overlap", exact=True).input_value() == "64"
    assert not page.errors, page.errors


def _png(color: tuple[int, int, int], size: tuple[int, int]) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", size, color).save(out, format="PNG")
    return out.getvalue()


def _drop_files(page: Any, selector: str, files: list[bytes]) -> None:
    """Drop PNG files on `selector` as the browser does for files dragged from the desktop."""
    transfer = page.evaluate_handle("""(files) => {
        const transfer = new DataTransfer();
        for (const [index, data] of files.entries()) {
          const bytes = Uint8Array.from(atob(data), (c) => c.charCodeAt(0));
          transfer.items.add(new File([bytes], `picture${index}.png`, { type: "image/png" }));
        }
        return transfer;
      }""", [base64.b64encode(data).decode() for data in files])
    page.dispatch_event(selector, "drop", {"dataTransfer": transfer})


def test_reference_pictures_for_an_edit_model(server: tuple[str, int, bool], page: Any,
                                              tmp_path: Path) -> None:
    """img2img's "Reference pictures": hidden for an SD model (GET /avx/defaults' references:
    0); for an edit model (the answer stood in for: one that reads 3 pictures, the init image the
    first) the pictures dropped, less the ones removed, go out after the init image in order as
    init_images[1:], and one more than it reads is refused with a line saying so."""
    url, _, _ = server
    init = _png((20, 120, 220), (24, 16))
    red, green, blue = (_png(color, (8 + k, 8)) for k, color in enumerate(
        ((255, 0, 0), (0, 255, 0), (0, 0, 255))))
    (tmp_path / "init.png").write_bytes(init)
    page.goto(url)
    _ready(page)
    page.get_by_role("tab", name="img2img", exact=True).click()
    assert page.get_by_label("Denoising strength", exact=True).is_visible()
    assert page.locator("#references_field").is_hidden()  # the SD model reads one picture

    def edit_model(route: Any) -> None:
        response = route.fetch()
        route.fulfill(response=response, json={**response.json(), "references": 3})
    page.route("**/avx/defaults", edit_model)
    bodies: list[dict[str, Any]] = []
    answer = {"images": [base64.b64encode(red).decode()], "info": json.dumps({"infotexts": ["x"]})}
    page.route("**/sdapi/v1/img2img", lambda route: (
        bodies.append(route.request.post_data_json), route.fulfill(json=answer)))
    page.reload()
    _ready(page)
    zone = page.locator("#references_drop")
    assert page.get_by_text("Up to 2 pictures after the init image").is_visible()
    page.locator("#init_file").set_input_files(tmp_path / "init.png")
    _drop_files(page, "#references_drop", [red, green, blue])
    page.get_by_text("the first 2 pictures dropped were added").wait_for()
    shown = page.locator("#references_list img")
    page.wait_for_function("document.querySelectorAll('#references_list img').length === 2")
    assert zone.is_visible() and shown.nth(1).get_attribute("alt") == "Reference picture 2"
    page.get_by_role("button", name="Remove reference picture 1", exact=True).click()
    _drop_files(page, "#references_drop", [blue])
    page.wait_for_function("document.querySelectorAll('#references_list img').length === 2")
    page.get_by_role("button", name="Generate", exact=True).click()
    page.locator("#gallery img").first.wait_for()
    assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()
    assert bodies[-1]["init_images"] == [base64.b64encode(data).decode()
                                         for data in (init, green, blue)]
    assert not page.errors, page.errors


def test_chosen_styles_go_out_with_the_request(server: tuple[str, int, bool],
                                               page: Any) -> None:
    """The Styles list beside the prompt shows the server's prompt styles (answered here) and
    the chosen ones are the request's `styles` (the server applies them: test_styles_api)."""
    url, _, _ = server
    styles = [{"name": "Framed", "prompt": "a picture of {prompt}", "negative_prompt": ""},
              {"name": "Green", "prompt": "green", "negative_prompt": "blurry"}]
    page.route("**/sdapi/v1/prompt-styles", lambda route: route.fulfill(json=styles))
    page.route("**/sdapi/v1/txt2img", lambda route: route.fulfill(
        status=422, content_type="application/json", json={"detail": "answered by the test"}))
    page.goto(url)
    _ready(page)
    generate = page.get_by_role("button", name="Generate", exact=True)
    with page.expect_request("**/sdapi/v1/txt2img", timeout=5_000) as request:
        generate.click()
    assert "styles" not in request.value.post_data_json
    page.get_by_label("Styles", exact=True).select_option(["Framed", "Green"])
    with page.expect_request("**/sdapi/v1/txt2img", timeout=5_000) as request:
        generate.click()
    assert request.value.post_data_json["styles"] == ["Framed", "Green"]
    # PNG Info's "Send to txt2img" chooses the styles the server found in a picture's prompts
    page.route("**/sdapi/v1/png-info", lambda route: route.fulfill(json={
        "info": "a cat\nSteps: 3", "items": {},
        "parameters": {"Prompt": "a cat", "Steps": "3", "Styles array": ["Green"]}}))
    page.get_by_role("tab", name="PNG Info", exact=True).click()
    page.locator("#pnginfo_file").set_input_files(files=[{
        "name": "x.png", "mimeType": "image/png", "buffer": _ONE_PIXEL_PNG}])
    page.get_by_role("button", name="Send to txt2img", exact=True).click()
    assert page.evaluate("[...document.getElementById('styles').selectedOptions]"
                         ".map((o) => o.value)") == ["Green"]
    assert page.get_by_label("Prompt", exact=True).input_value() == "a cat"
    assert not page.errors, page.errors


_ONE_PIXEL_PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000001e221bc330000000049454e44ae426082")
