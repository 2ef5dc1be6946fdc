"""Fixtures of the browser tests (tests/diffusion/server/test_browser*.py; a plugin of
tests/conftest.py): one headless Chromium and one server of tiny models for each run of
consecutive tests that take them, a fresh page a test.

A run of consecutive tests rather than the session: Playwright's sync API marks its event loop
as running in the main thread for as long as it lives, so that every later test's
asyncio.run() there refused to start ("cannot be called from a running event loop"); and the
server holds a loaded pipeline. Rather than a module: the page's tests are split by subject
over several files, which would each launch Chromium (a second of CPU) and build and load the
tiny models again (~20 s of CI's 2 cores)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
TINY_DEFAULTS = {"steps": 6, "sampler": "DDIM", "cfg_scale": 5}  # the tiny model's defaults.json

_open: dict[str, tuple[Any, ExitStack]] = {}  # a shared fixture's name: (its value, its closing)


def _shared(name: str, enter: Callable[[ExitStack], Any]) -> Any:
    """The value of the shared fixture `name`: `enter(stack)`'s, made at the first test of a
    run of tests that take it and closed (the stack) after the last one."""
    if name not in _open:
        stack = ExitStack()
        try:
            _open[name] = enter(stack), stack
        except BaseException:  # a skip too: what was entered closes now
            stack.close()
            raise
    return _open[name][0]


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    """After the test's own teardown (its page closed): each shared fixture it took that the
    next test does not take closes."""
    try:
        return (yield)
    finally:
        taken, next_takes = (getattr(i, "fixturenames", ()) for i in (item, nextitem))
        for name in [n for n in _open if n in taken and n not in next_takes]:
            _open.pop(name)[1].close()


def pytest_sessionfinish() -> None:
    """What a run stopped early (-x, Ctrl+C) left open closes."""
    while _open:
        _open.popitem()[1][1].close()


@pytest.fixture()
def browser() -> Any:
    """Chromium, shared by a run of consecutive tests (a launch is seconds of CPU on CI's 2
    cores); each test gets a fresh context (its own storage, as a browser of its own had)."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (Debian package chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="Playwright is not installed")

    def launch(stack: ExitStack) -> Any:
        playwright = stack.enter_context(sync_api.sync_playwright())
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        stack.callback(chromium.close)
        return chromium

    return _shared("browser", launch)


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    """A 1280 x 900 page in a context of its own, actions waiting up to 30 s; the page's
    JavaScript errors collect in `page.errors`."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(30_000)
    page.errors = []
    page.on("pageerror", lambda error: page.errors.append(str(error)))
    yield page
    context.close()


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


@pytest.fixture()
def webui_server(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, int, bool]:
    """(base URL, image size, whether the tiny models are served) of the real server, running in
    a thread on a free port, shared by a run of consecutive tests: the tiny SD model (and a copy
    without defaults.json, "tiny-plain") and a tiny canny ControlNet for the page's panel."""
    pytest.importorskip("uvicorn", reason="the server extra is not installed")
    from server_support import live_server

    from diffusion.server.api.app import create_app

    def start(stack: ExitStack) -> tuple[str, int, bool]:
        model, size, models = _model_path(tmp_path_factory)
        controlnets = None
        if models is not None:
            from control_tiny import write_controlnets

            controlnets = write_controlnets(tmp_path_factory.mktemp("ControlNet"),
                                            ("tiny_canny",))
        app = create_app(model=str(model), models_dir=models, controlnet_dir=controlnets,
                         outputs=str(tmp_path_factory.mktemp("outputs")))
        base = stack.enter_context(live_server(app, start_timeout=60))
        return f"{base}/", size, models is not None

    return _shared("webui_server", start)
