"""Shared pieces of the server tests: tiny model folders, apps over one loaded pipeline, PNG and
progress helpers, a real uvicorn server on a free port, and the web page's common steps."""

from __future__ import annotations

import base64
import io
import json
import os
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

import gpucore
from diffusion.pipelines.sd.stable_diffusion import (
    GenerationResult,
    SamplingDefaults,
    unet_capabilities,
)

PROMPT = "a red circle on a blue background"
NO_DEVICE = "no GPU adapter present: install mesa-vulkan-drivers (see README)"
HAS_DEVICE = bool(gpucore.devices())
needs_device = pytest.mark.skipif(not HAS_DEVICE, reason=NO_DEVICE)


class StandInPipeline:
    """What the server's worker needs of a pipeline, for tests that need no model and no
    device: generate records the request and returns one black 64x64 picture. Its
    Capabilities (the server refuses with them before it queues a request) are an SD 1.x
    model's reading any number of pictures, as the tests of the pictures' limits send."""

    native_size = 64
    defaults = SamplingDefaults()
    capabilities = replace(unet_capabilities("sd1", sdxl=False, inpainting=False, turbo=False),
                           references=None)

    def __init__(self) -> None:
        self.requests: list[Any] = []

    def generate(self, request: Any, *, observer: Any) -> GenerationResult:
        self.requests.append(request)
        observer.step(request.steps, request.steps, np.zeros((1, 4, 8, 8)))
        return GenerationResult(images=[np.zeros((64, 64, 3), np.uint8)], seeds=[request.seed],
                                settings={"prompt": request.prompt, "steps": request.steps,
                                          "sampler": "Euler", "cfg_scale": 7, "seed":
                                          request.seed, "width": 64, "height": 64})


def write_models(root: Path) -> Path:
    """`root/models` with two tiny diffusers folders, tiny-a and tiny-b (different UNets)."""
    from sd_tiny import tiny_unet, write_pipeline

    models = root / "models"
    write_pipeline(models / "tiny-a")
    write_pipeline(models / "tiny-b", unet=tiny_unet(seed=7))
    return models


class CachedLoader:
    """`loader(path)` for create_app that loads each model once and counts the calls, so
    several apps in one test module share the GPU weights."""

    def __init__(self) -> None:
        self.pipes: dict[Path, Any] = {}
        self.calls: list[Path] = []

    def __call__(self, path: Path) -> Any:
        from diffusion import load_pipeline

        self.calls.append(Path(path))
        if path not in self.pipes:
            self.pipes[path] = load_pipeline(path)
        return self.pipes[path]


def pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def noise_picture(height: int, width: int) -> Image.Image:
    """A height x width RGB picture of uniform random pixels (seed 0)."""
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (height, width, 3),
                                                             np.uint8))


def rgb(image: Image.Image) -> np.ndarray:
    """A PIL picture's RGB pixels, height x width x 3 uint8."""
    return np.asarray(image.convert("RGB"))


def screenshot(page: Any, tmp_path: Path, name: str) -> None:
    """A Playwright page's screenshot to tmp_path/NAME.png and, with AVX_SCREENSHOTS=DIR, a
    copy there (how the docs' screenshots are refreshed)."""
    path = tmp_path / f"{name}.png"
    page.screenshot(path=path)
    if os.environ.get("AVX_SCREENSHOTS"):
        target = Path(os.environ["AVX_SCREENSHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, target / path.name)


def page_ready(page: Any) -> None:
    """Wait until the web page has its lists and the model's sampling settings, and shows no
    error."""
    page.locator("#params[aria-busy=false]").wait_for(state="attached")
    assert page.locator("#error").is_hidden(), page.locator("#error").inner_text()


def page_sampling(page: Any) -> tuple[str, str, str]:
    """The web page's (Sampling steps, Sampling method, CFG Scale) as shown."""
    return (page.get_by_label("Sampling steps", exact=True).input_value(),
            page.get_by_label("Sampling method", exact=True).input_value(),
            page.get_by_label("CFG Scale", exact=True).input_value())


def png_with_infotext(path: Path, infotext: str) -> Path:
    """A 48 x 40 picture at `path` whose PNG text chunk "parameters" is `infotext`, as the
    WebUI writes one."""
    from PIL.PngImagePlugin import PngInfo

    text = PngInfo()
    text.add_text("parameters", infotext)
    Image.new("RGB", (48, 40), (30, 90, 160)).save(path, pnginfo=text)
    return path


def png_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def info(response: Any) -> dict[str, Any]:
    return json.loads(response.json()["info"])


def wait_for(check: Callable[[], bool], timeout: float = 60.0, what: str = "") -> None:
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what or check}")
        time.sleep(0.02)


def wait_for_step(get: Callable[[str], Any], step: int = 2, job_no: int = 0) -> dict[str, Any]:
    """Poll /sdapi/v1/progress until the running job reaches `step` of image `job_no`."""
    seen: dict[str, Any] = {}

    def reached() -> bool:
        seen.update(get("/sdapi/v1/progress").json())
        state = seen["state"]
        return state["job_no"] == job_no and state["sampling_step"] >= step
    wait_for(reached, what=f"step {step} of image {job_no}")
    return seen


class Background:
    """A request run on a thread; `.result()` joins and returns the response."""

    def __init__(self, call: Callable[[], Any]) -> None:
        self._out: dict[str, Any] = {}
        self._thread = threading.Thread(target=self._run, args=(call,), daemon=True)
        self._thread.start()

    def _run(self, call: Callable[[], Any]) -> None:
        try:
            self._out["value"] = call()
        except BaseException as exc:  # re-raised in result()
            self._out["error"] = exc

    def result(self, timeout: float = 120.0) -> Any:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), "request did not finish"
        if "error" in self._out:
            raise self._out["error"]
        return self._out["value"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def live_server(app: Any, start_timeout: float = 30) -> Iterator[str]:
    """Run `app` under uvicorn on 127.0.0.1 in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=start_timeout, what="uvicorn to start")
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


@contextmanager
def serving(root: Path, model: str) -> Iterator[Any]:
    """A TestClient of the server on `root / model`, `root` its models folder, pictures up to
    256 pixels a side, each pipeline loaded once."""
    from fastapi.testclient import TestClient

    from diffusion.server import create_app

    app = create_app(model=root / model, models_dir=root, outputs=root / "outputs",
                     max_size=256, loader=CachedLoader())
    with TestClient(app) as client:
        yield client


@contextmanager
def tiny_webui(root: Path, *, steps: int) -> Iterator[Any]:
    """webuiapi's client (Euler a, `steps`) on a live server over `write_models(root)`'s tiny
    models, tiny-a loaded; the server's worker stopped after. Skips the test without a GPU
    adapter."""
    if not HAS_DEVICE:
        pytest.skip(NO_DEVICE)
    import webuiapi

    from diffusion.server import create_app

    models = write_models(root)
    app = create_app(model=models / "tiny-a", models_dir=models, outputs=root / "outputs",
                     loader=CachedLoader())
    with live_server(app) as base:
        host, port = base.removeprefix("http://").split(":")
        yield webuiapi.WebUIApi(host=host, port=int(port), sampler="Euler a", steps=steps)
        app.state.worker.stop()


def write_vae_file(path: Path, seed: int, **config: Any) -> Any:
    """A tiny VAE (diffusers') saved as a bare LDM-layout file, as `ae.safetensors` is."""
    import diffusers
    from ldm_files import ldm_vae
    from safetensors.torch import save_file
    from sd_tiny import VAE_TINY, randomized

    vae = randomized(diffusers.AutoencoderKL(**{**VAE_TINY, **config}), seed)
    state = ldm_vae(vae.state_dict())
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k.removeprefix("first_stage_model."): v.contiguous() for k, v in state.items()},
              str(path))
    return vae


def write_taesd(folder: Path) -> None:
    """A tiny random TAESD decoder in madebyollin's layout, as the WebUI's VAE-approx has it."""
    import diffusers
    import torch
    from safetensors.torch import save_file

    torch.manual_seed(0)
    tiny = diffusers.AutoencoderTiny(latent_channels=4, encoder_block_out_channels=(8, 8),
                                     decoder_block_out_channels=(8, 8, 8, 8),
                                     num_encoder_blocks=(1, 1), num_decoder_blocks=(1, 1, 1, 1))
    state = {}
    for key, value in tiny.state_dict().items():
        if key.startswith("decoder.layers."):
            index, _, rest = key[len("decoder.layers."):].partition(".")
            state[f"{int(index) + 1}.{rest}"] = value.contiguous()
    folder.mkdir(parents=True, exist_ok=True)
    save_file(state, str(folder / "taesd_decoder.safetensors"))


def write_upscaler(path: Path) -> None:
    """A tiny random Real-ESRGAN compact model (SRVGGNetCompact: 4 features, 4x) as its release
    holds it, under "params"; named realesr-animevideov3.pth it is "R-ESRGAN AnimeVideo"."""
    import torch

    gen = torch.Generator().manual_seed(0)
    shapes = {"body.0.weight": (4, 3, 3, 3), "body.0.bias": (4,), "body.1.weight": (4,),
              "body.2.weight": (4, 4, 3, 3), "body.2.bias": (4,), "body.3.weight": (4,),
              "body.4.weight": (48, 4, 3, 3), "body.4.bias": (48,)}  # 3 channels x 4²
    state = {key: torch.randn(shape, generator=gen) * 0.3 for key, shape in shapes.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params": state}, path)


def write_t5_file(path: Path, seed: int) -> None:
    """A tiny T5 encoder (transformers') saved as a bare file, as `t5xxl_fp16.safetensors` is."""
    from flow_tiny import tiny_t5
    from safetensors.torch import save_file

    state = {k: v.contiguous() for k, v in tiny_t5(seed).state_dict().items()
             if k != "encoder.embed_tokens.weight"}
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(state, str(path))


def refused_both_ways(client: Any, setting: str, value: Any, says: str,
                      body: dict[str, Any]) -> Any:
    """`setting` = `value` sent in POST /sdapi/v1/options and in a txt2img `body`'s
    override_settings: both answered 422 with `says` in the detail; the txt2img's response."""
    response = client.post("/sdapi/v1/options", json={setting: value})
    assert response.status_code == 422 and says in response.json()["detail"], response.text
    response = client.post("/sdapi/v1/txt2img", json={
        **body, "override_settings": {setting: value}})
    assert response.status_code == 422 and says in response.json()["detail"], response.text
    return response
