"""What the web page keeps and restores, in headless Chromium against the real server
(browser_fixtures.py's webui_server): sampling settings that follow the loaded model's
defaults.json (the WebUI's 20 / Euler a / 7 without one) and what the user set surviving a
reload, the tab and the sliders saved, PNG Info's unreadable file and its "Send to img2img" of
the inpaint settings, a number box left empty, img2img's reference pictures for an edit
model, and the sampler list of a family that runs only its own sampler.
"""

from __future__ import annotations

import base64
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest
from server_support import page_ready, page_sampling, png_with_infotext, screenshot


def test_sampling_settings_follow_the_model(webui_server: tuple[str, int, bool], page: Any) -> None:
    url, _, tiny = webui_server
    if not tiny:
        pytest.skip("AVX_SCREENSHOTS: the bundled model is served alone, no model to switch to")
    page.goto(url)
    page_ready(page)
    assert page_sampling(page) == ("6", "DDIM", "5")
    titles = page.eval_on_selector("#model", "select => [...select.options].map(o => o.value)")
    plain, = (t for t in titles if t.startswith("tiny-plain ["))
    recommending, = (t for t in titles if t.startswith("tiny-sd ["))

    def switch(title: str) -> None:
        response = page.request.post(f"{url}sdapi/v1/options",
                                     data={"sd_model_checkpoint": title})
        assert response.ok, response.text()

    page.locator("#model").select_option(plain)
    page_ready(page)
    assert page_sampling(page) == ("20", "Euler a", "7")  # no defaults.json: the page's own
    page.get_by_label("Sampling steps", exact=True).fill("9")
    page.get_by_label("Sampling steps", exact=True).press("Tab")
    page.locator("#model").select_option(recommending)
    page_ready(page)
    assert page_sampling(page) == ("6", "DDIM", "5")

    # what the user changes for a model survives a reload while that model is loaded...
    page.get_by_label("Sampling steps", exact=True).fill("9")
    page.get_by_label("Sampling steps", exact=True).press("Tab")
    page.reload()
    page_ready(page)
    assert page_sampling(page) == ("9", "DDIM", "5")
    # ...but not a switch made elsewhere (another tab, an API client): the page follows the server
    switch(plain)
    page.reload()
    page_ready(page)
    assert page_sampling(page) == ("20", "Euler a", "7")
    assert page.locator("#model").input_value() == plain
    switch(recommending)  # the server as the other browser tests expect it
    assert not page.errors, page.errors


def test_tab_survives_a_reload_after_a_setting_changed_on_it(
        webui_server: tuple[str, int, bool], page: Any) -> None:
    """A setting changed on Extras (or PNG Info) must not record txt2img as the tab to reopen."""
    url, _, _ = webui_server
    page.goto(url)
    page_ready(page)
    page.get_by_role("tab", name="Extras", exact=True).click()
    scale = page.get_by_label("Scale by", exact=True)
    scale.fill("3")
    scale.press("Tab")
    page.reload()
    page_ready(page)
    assert page.get_by_role("tab", name="Extras", exact=True).get_attribute(
        "aria-selected") == "true"
    assert scale.is_visible() and scale.input_value() == "3"
    assert not page.errors, page.errors


def test_controlnet_sliders_are_saved(webui_server: tuple[str, int, bool], page: Any) -> None:
    """Control Weight moved with its slider survives a reload, as typed into its box does."""
    url, _, _ = webui_server
    page.goto(url)
    page_ready(page)
    page.locator("#controlnet_panel summary").click()
    page.get_by_label("Control Weight slider", exact=True).fill("0.5")
    assert page.get_by_label("Control Weight", exact=True).input_value() == "0.5"
    page.reload()
    page_ready(page)
    assert page.get_by_label("Control Weight", exact=True).input_value() == "0.5"
    assert not page.errors, page.errors


def test_saved_upscaler_survives_a_slow_upscaler_list(
        webui_server: tuple[str, int, bool], page: Any) -> None:
    """The page restores the saved settings once its lists are in; the upscaler list was not
    waited for, so when it came late Extras fell back to Lanczos."""
    url, _, _ = webui_server
    page.goto(url)
    page_ready(page)
    page.get_by_role("tab", name="Extras", exact=True).click()
    page.get_by_label("Upscaler", exact=True).select_option("Nearest")
    page.route("**/sdapi/v1/upscalers", lambda route: (time.sleep(1), route.continue_()))
    page.reload()
    page_ready(page)
    page.wait_for_function("document.getElementById('extras_upscaler').options.length > 0")
    assert page.get_by_label("Upscaler", exact=True).input_value() == "Nearest"
    assert not page.errors, page.errors


def test_an_emptied_number_box_is_named_not_sent_as_zero(
        webui_server: tuple[str, int, bool], page: Any) -> None:
    """Clearing CFG Scale (or Seed, Sampling steps...) used to generate with 0 there: a silent
    CFG scale 0, a fixed seed 0. The page names the box instead and sends nothing."""
    url, _, _ = webui_server
    sent: list[str] = []
    page.on("request", lambda request: sent.append(request.url) if "txt2img" in request.url
            else None)
    page.goto(url)
    page_ready(page)
    page.get_by_label("CFG Scale", exact=True).fill("")
    page.get_by_role("button", name="Generate", exact=True).click()
    page.locator("#error").wait_for(state="visible", timeout=5_000)
    assert page.locator("#error_text").inner_text() == "CFG Scale is empty: enter a number."
    assert not sent and page.get_by_role("button", name="Generate", exact=True).is_visible()
    assert not page.errors, page.errors


def test_png_info_of_an_unreadable_file(webui_server: tuple[str, int, bool], page: Any) -> None:
    """A file the server cannot read is reported as such, not as an image without parameters."""
    url, _, _ = webui_server
    page.goto(url)
    page_ready(page)
    page.get_by_role("tab", name="PNG Info", exact=True).click()
    page.locator("#pnginfo_file").set_input_files(
        files=[{"name": "broken.png", "mimeType": "image/png", "buffer": b"not a png"}])
    page.locator("#error").wait_for(state="visible")
    assert "not a readable image" in page.locator("#error_text").inner_text()
    assert page.locator("#pnginfo_text").inner_text() == ""
    assert page.get_by_role("button", name="Send to txt2img", exact=True).is_disabled()
    assert not page.errors, page.errors


def test_png_info_sends_the_inpaint_settings_to_img2img(
        webui_server: tuple[str, int, bool], page: Any, tmp_path: Path) -> None:
    """PNG Info's "Send to img2img" restores Mask blur, Mask mode (our "Inpaint not masked"),
    Masked content, Inpaint area and its padding from the infotext, under the WebUI's keys; an
    infotext without them resets them to the WebUI parser's defaults (Inpaint masked,
    original, Whole picture, 32: the server's png-info gives them), Mask blur staying as it
    was; the PNG Info table shows only what the infotext says, not those defaults."""
    url, _, _ = webui_server
    inpainted = png_with_infotext(tmp_path / "inpainted.png", (
        "a lighthouse\nNegative prompt: fog\nSteps: 12, Sampler: Euler, CFG scale: 6, Seed: 77, "
        "Size: 48x40, Denoising strength: 0.6, Mask blur: 12, Mask mode: Inpaint not masked, "
        "Inpaint area: Only masked, Masked area padding: 48, Masked content: latent noise"))
    plain = png_with_infotext(tmp_path / "plain.png", (
        "a harbour\nSteps: 9, Sampler: Euler, CFG scale: 5, Seed: 78, Size: 48x40, "
        "Denoising strength: 0.5"))
    page.goto(url)
    page_ready(page)

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
    page_ready(page)
    assert inpaint_controls() == ("12", "12", True, "2", "masked", "48")

    send_to_img2img(plain, "a harbour")
    assert inpaint_controls() == ("12", "12", False, "1", "whole", "32")  # 1: original
    table = page.locator("#pnginfo_table").text_content()
    assert "Denoising strength" in table and "Mask mode" not in table, table
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


def test_reference_pictures_for_an_edit_model(webui_server: tuple[str, int, bool], page: Any,
                                              tmp_path: Path) -> None:
    """img2img's "Reference pictures": hidden for an SD model (GET /avx/defaults' references:
    0); for an edit model (the answer stood in for: one that reads 3 pictures, the init image the
    first) the pictures dropped, less the ones removed, go out after the init image in order as
    init_images[1:], and one more than it reads is refused with a line saying so."""
    url, _, _ = webui_server
    init = _png((20, 120, 220), (24, 16))
    red, green, blue = (_png(color, (8 + k, 8)) for k, color in enumerate(
        ((255, 0, 0), (0, 255, 0), (0, 0, 255))))
    (tmp_path / "init.png").write_bytes(init)
    page.goto(url)
    page_ready(page)
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
    page_ready(page)
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


def test_sampler_list_of_a_family_with_its_own(webui_server: tuple[str, int, bool],
                                               page: Any) -> None:
    """A switch to a model whose family runs only its own sampler (stood in for: /sdapi/v1/
    samplers then lists "diffusers" alone, /avx/defaults recommends it, as for Sana Sprint)
    refills the sampler dropdown with that list; the page selects it and sends it."""
    url, _, _ = webui_server
    page.goto(url)
    page_ready(page)
    options = "select => [...select.options].map(o => o.value)"
    assert "Euler" in page.eval_on_selector("#sampler", options)
    page.route("**/sdapi/v1/samplers", lambda route: route.fulfill(
        json=[{"name": "diffusers", "aliases": [], "options": {}}]))

    def own_sampler(route: Any) -> None:
        response = route.fetch()
        route.fulfill(response=response, json={**response.json(), "sampler": "diffusers"})
    page.route("**/avx/defaults", own_sampler)
    page.route("**/sdapi/v1/options", lambda route: route.fulfill(json=None)
               if route.request.method == "POST" else route.continue_())  # no real switch
    bodies: list[dict[str, Any]] = []
    answer = {"images": [base64.b64encode(_png((9, 9, 9), (8, 8))).decode()],
              "info": json.dumps({"infotexts": ["x"]})}
    page.route("**/sdapi/v1/txt2img", lambda route: (
        bodies.append(route.request.post_data_json), route.fulfill(json=answer)))
    titles = page.eval_on_selector("#model", options)
    page.locator("#model").select_option(titles[-1])
    page.wait_for_function("document.querySelector('#sampler').options.length === 1")
    page_ready(page)
    assert page.locator("#sampler").input_value() == "diffusers"
    page.get_by_role("button", name="Generate", exact=True).click()
    page.locator("#gallery img").first.wait_for()
    assert bodies[-1]["sampler_name"] == "diffusers"
    assert not page.errors, page.errors
