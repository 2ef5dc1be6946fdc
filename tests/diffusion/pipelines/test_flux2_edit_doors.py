"""FLUX.2's reference pictures through the CLI and the server, as Forge Neo maps img2img onto
edit models: the init image is the first reference, `--reference` / `init_images[1:]` /
OpenAI's further `image[]` the others. Two references give diffusers' Flux2KleinPipeline
picture (image=[first, second]); swapping them changes it; the infotext counts them (a
strength refused in one line: test_flux2_pipeline, test_server_flux2)."""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
pytest.importorskip("fastapi", reason="the server extra is not installed")
import torch
from flux2_tiny import FLUX2_TINY, tiny_flux2_pipeline
from PIL import Image
from sd_tiny import randomized

import diffusion.cli.main as cli
import gpucore
from diffusion.infotext import read_infotext

if not gpucore.devices():
    pytest.skip("no GPU adapter present: install mesa-vulkan-drivers (see README)",
                allow_module_level=True)

WIDTH, HEIGHT = 48, 32  # small: the VAE's passes cost the most here
PROMPT = "put the red circle on the blue square"
TOKENS = 32  # the prompt's padded length (klein's 512 would be slow here)


def _picture(seed: int, low: int, high: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(low, high, (HEIGHT, WIDTH, 3), dtype=np.uint8))


def _diffusers(pipe: Any, images: list[Image.Image]) -> np.ndarray:
    return pipe(prompt=PROMPT, image=images, height=HEIGHT, width=WIDTH, num_inference_steps=2,
                max_sequence_length=TOKENS, generator=torch.Generator().manual_seed(5),
                output_type="np").images[0]


def _decoded(b64: str) -> np.ndarray:
    with Image.open(io.BytesIO(base64.b64decode(b64))) as image:
        return np.asarray(image.convert("RGB"), np.float32) / 255


def test_flux2_references_through_cli_and_server(
        first_device: gpucore.Device, tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from fastapi.testclient import TestClient
    from server_support import CachedLoader, info, png_b64

    from diffusion.pipelines.flow.flux2_model import Flux2Model
    from diffusion.server import create_app

    monkeypatch.setattr(Flux2Model, "max_sequence_length", TOKENS)
    # diffusers refuses references under 64 px a side (a check of its own, not the model's)
    from diffusers.pipelines.flux2.image_processor import Flux2ImageProcessor

    monkeypatch.setattr(Flux2ImageProcessor, "check_image_input",
                        staticmethod(lambda image, *args, **kwargs: image))
    import diffusers

    # larger weights and slow rotary frequencies: the references' order (their rotary time
    # 10, 20) visibly matters to the tiny model
    transformer = randomized(diffusers.Flux2Transformer2DModel(
        **{**FLUX2_TINY, "rope_theta": 20}), 6, scale=1.0)
    reference = tiny_flux2_pipeline(tmp_path, distilled=True, transformer=transformer)
    folder = tmp_path / "flux2-klein"
    # a dark picture and a bright one: their order visibly matters to the tiny model
    first, second = _picture(1, 0, 60), _picture(2, 200, 256)
    first.save(tmp_path / "first.png")
    second.save(tmp_path / "second.png")
    # the CLI: --init-image is the first reference, --reference the second
    common = ["img2img", "--model", str(folder), "--prompt", PROMPT, "--width", str(WIDTH),
              "--height", str(HEIGHT), "--steps", "2", "--seed", "5", "--dtype", "float32",
              "--init-image", str(tmp_path / "first.png")]
    assert cli.main([*common, "--reference", str(tmp_path / "second.png"), "--sampler",
                     "diffusers", "--rng", "torch", "--out", str(tmp_path / "a.png")]) == 0
    out = capsys.readouterr().out.strip()
    with Image.open(out) as image:
        ours = np.asarray(image.convert("RGB"), np.float32) / 255
    in_order, other_order = (_diffusers(reference, [first, second]),
                             _diffusers(reference, [second, first]))
    swap = np.abs(in_order - other_order).mean()
    assert swap > 0.005  # the order of the references matters
    assert np.abs(ours - in_order).mean() < swap / 3  # the PNG's rounding
    assert "Reference images: 2" in (read_infotext(out) or "")
    # the server: init_images in the other order give diffusers' picture of that order
    app = create_app(model=folder, models_dir=tmp_path, outputs=tmp_path / "outputs",
                     max_size=256, loader=CachedLoader())
    body = {"prompt": PROMPT, "init_images": [png_b64(second), png_b64(first)],
            "width": WIDTH, "height": HEIGHT, "steps": 2, "seed": 5, "cfg_scale": 1}
    with TestClient(app) as client:
        response = client.post("/sdapi/v1/img2img", json={
            **body, "sampler_name": "Euler", "override_settings": {"randn_source": "CPU"}})
        assert response.status_code == 200, response.text
        swapped = _decoded(response.json()["images"][0])
        assert np.abs(swapped - other_order).mean() < swap / 3
        assert "Reference images: 2" in info(response)["infotexts"][0]
        # OpenAI's edits: several image[] are the references (test_openai_images: in order)
        files = [("image[]", (f"{k}.png", _png(picture), "image/png"))
                 for k, picture in enumerate((second, first))]
        edited = client.post("/v1/images/edits", files=files, data={
            "prompt": PROMPT, "size": f"{WIDTH}x{HEIGHT}", "steps": "2", "seed": "5",
            "cfg_scale": "1"})
        assert edited.status_code == 200, edited.text
        assert _decoded(edited.json()["data"][0]["b64_json"]).shape == (HEIGHT, WIDTH, 3)


def _png(picture: Image.Image) -> bytes:
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()
