"""The web page's requests and how it follows a run, in headless Chromium against the real server
(browser_fixtures.py's webui_server) with the answers that matter stood in for (page.route):
Ctrl+Enter from any field, Interrupt and Skip naming the run, the progress line and its ETA, two
tabs each following their own run, the live preview, the extra-networks cards, the full-size
view by keyboard, and the chosen styles.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from server_support import page_ready, page_sampling, png_with_infotext


def test_ctrl_enter_generates_from_any_field(webui_server: tuple[str, int, bool],
                                             page: Any) -> None:
    """As in the WebUI, Ctrl+Enter generates wherever the focus is on the tab, not only in the
    prompts (the request is answered here: the point is that it is sent)."""
    url, _, _ = webui_server
    page.route("**/sdapi/v1/txt2img", lambda route: route.fulfill(
        status=422, content_type="application/json", json={"detail": "answered by the test"}))
    page.goto(url)
    page_ready(page)
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
        webui_server: tuple[str, int, bool], page: Any) -> None:
    """After Interrupt the progress line keeps saying so; the next poll used to put the last
    step's numbers (and a growing ETA) back, as if the run went on. The interrupt names the
    run's id_task (so that it stops this tab's job alone). The server is stood in for."""
    url, _, _ = webui_server
    pending = _stand_in_for_a_run(page, progress=0.5, eta=3, step=1, steps=2)
    stops: list[Any] = []
    page.route("**/sdapi/v1/interrupt", lambda route: (
        stops.append(route.request.post_data_json), route.fulfill(json={})))
    page.goto(url)
    page_ready(page)
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


def test_eta_minutes_and_seconds(webui_server: tuple[str, int, bool], page: Any) -> None:
    """An ETA just under two minutes reads 2m 00s (it read 1m 60s). The server is stood in for."""
    url, _, _ = webui_server
    pending = _stand_in_for_a_run(page, progress=0.1, eta=119.5, step=1, steps=10)
    page.goto(url)
    page_ready(page)
    page.get_by_role("button", name="Generate", exact=True).click()
    page.wait_for_function("document.getElementById('progress_text').textContent.includes('ETA')")
    assert page.locator("#progress_text").inner_text() == "10% · step 1/10 · ETA 2m 00s"
    pending[0].fulfill(json={"images": [], "info": "{}"})
    page.get_by_role("button", name="Generate", exact=True).wait_for(state="visible")
    assert not page.errors, page.errors


def test_two_tabs_each_follow_their_own_run(webui_server: tuple[str, int, bool], page: Any) -> None:
    """Two tabs generating at once: each sends its own task id with its txt2img and polls
    /internal/progress with it, so each shows its own run (they both showed the server's one
    running job). The server is stood in for: the first tab's run at 20 %, the second's at
    70 %; the second tab's first two polls find its run still queued."""
    url, _, _ = webui_server
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
            page_ready(tab)
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
        other.close()  # and its context: the shared browser lives on


def test_full_size_view_by_keyboard(webui_server: tuple[str, int, bool], page: Any) -> None:
    """The selected result opens full size from the keyboard too (Enter), and Escape brings the
    focus back to it rather than to the top of the page. The server's answer is stood in for."""
    url, _, _ = webui_server
    red = ("iVBORw0KGgoAAAANSUhEUgAAAAgAAAAICAIAAABLbSncAAAAFElEQVR4nGM8ISfHgA0wYRUdtBIA0MoB"
           "FD5jqJkAAAAASUVORK5CYII=")  # an 8x8 PNG
    page.route("**/sdapi/v1/txt2img", lambda route: route.fulfill(json={
        "images": [red], "info": json.dumps({"infotexts": ["red"], "all_seeds": [7], "seed": 7})}))
    page.goto(url)
    page_ready(page)
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


def test_extra_networks_and_the_live_preview(webui_server: tuple[str, int, bool], page: Any,
                                             tmp_path: Path) -> None:
    """The extra-networks cards: a LoRA card adds <lora:NAME:1> to the prompt, an embedding
    card its name, a second click takes it out; a checkpoint card switches the model. While a
    run goes on the page shows its live preview and Skip names the run. The LoRA and embedding
    lists and the run are stood in for; the model switch is real. Restore faces comes back from
    an infotext's "Face restoration" and goes out as restore_faces, Tiling from "Tiling: True"
    as tiling."""
    url, _, tiny = webui_server
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
    page_ready(page)
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
    page_ready(page)
    assert plain.get_attribute("aria-pressed") == "true"
    assert page_sampling(page) == ("20", "Euler a", "7")  # the plain model's: it is loaded
    page.get_by_label("Search extra networks", exact=True).fill("")
    page.locator("#cards_checkpoints .card", has_text="tiny-sd").click()
    page.wait_for_function("document.getElementById('model').value.startsWith('tiny-sd')")
    page_ready(page)

    # an infotext's face restoration, and a hires fix to a size as older pictures write it (no
    # upscaler)
    picture = png_with_infotext(tmp_path / "faces.png", (
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


def test_chosen_styles_go_out_with_the_request(webui_server: tuple[str, int, bool],
                                               page: Any) -> None:
    """The Styles list beside the prompt shows the server's prompt styles (answered here) and
    the chosen ones are the request's `styles` (the server applies them: test_styles_api)."""
    url, _, _ = webui_server
    styles = [{"name": "Framed", "prompt": "a picture of {prompt}", "negative_prompt": ""},
              {"name": "Green", "prompt": "green", "negative_prompt": "blurry"}]
    page.route("**/sdapi/v1/prompt-styles", lambda route: route.fulfill(json=styles))
    page.route("**/sdapi/v1/txt2img", lambda route: route.fulfill(
        status=422, content_type="application/json", json={"detail": "answered by the test"}))
    page.goto(url)
    page_ready(page)
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
