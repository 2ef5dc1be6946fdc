"""Qwen-Image-Layered against diffusers' QwenImageLayeredPipeline on a tiny random folder (the
layered transformer: the RGBA timestep row, frames 0.. and the picture at -1; a 4-channel
VAE): the RGBA layers, the input picture visibly mattering; `python -m diffusion layers`
writing them as RGBA PNGs; and the server's POST /avx/layers answering them as base64 PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from PIL import Image

import diffusion.cli.main as cli
import gpucore
from diffusion.pipelines.families import family_of
from diffusion.pipelines.flow.qwen_image_layered import QwenImageLayeredPipeline

AREA = 64 * 96  # the picture's pixels (diffusers' 640 x 640 would be slow here)
TOL = 1e-5  # of mean abs pixel in [0, 1]; measured 8e-7 (float32 throughout)
PROMPT = "a red circle over a green square on a white wall, " * 3
NEGATIVE = "a blurry photo, " * 3


def _picture(seed: int, low: int = 0, high: int = 256) -> Image.Image:
    """A random RGBA picture whose alpha runs from clear to opaque."""
    rng = np.random.default_rng(seed)
    rgba = rng.integers(low, high, (60, 100, 4), dtype=np.uint8)
    rgba[..., 3] = rng.integers(0, 256, (60, 100), dtype=np.uint8)
    return Image.fromarray(rgba, "RGBA")


@pytest.fixture(scope="module")
def tiny_layered(tiny_qwenimage_layered: tuple[Path, Any]) -> tuple[Path, Any]:
    """A QwenImageLayeredPipeline folder of tiny random parts (no processor: only diffusers'
    captioning reads it; flow_fixtures), and diffusers' pipeline, its picture resized to AREA
    pixels."""
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_layered as module

    dimensions = module.calculate_dimensions
    patch = pytest.MonkeyPatch()
    patch.setattr(module, "calculate_dimensions", lambda _, ratio: dimensions(AREA, ratio))
    try:
        yield tiny_qwenimage_layered
    finally:
        patch.undo()


@pytest.fixture(scope="module")
def expected(tiny_layered: tuple[Path, Any]) -> np.ndarray:
    """diffusers' 2 layers of `_picture(1)` (true CFG, not normalized: its default), 2
    steps."""
    return tiny_layered[1](
        _picture(1), PROMPT, negative_prompt=NEGATIVE, true_cfg_scale=4.0, layers=2,
        resolution=640, num_inference_steps=2,
        generator=torch.Generator().manual_seed(7), output_type="np").images[0]


def test_layers_equal_diffusers(first_device: gpucore.Device, tiny_layered: tuple[Path, Any],
                                expected: np.ndarray) -> None:
    folder, _ = tiny_layered
    assert family_of(folder)[1] == "qwen-image-layered"
    ours = QwenImageLayeredPipeline.from_pretrained(folder, device=first_device)
    ours.areas = {640: AREA}
    picture = _picture(1)
    got = ours(picture, PROMPT, layers=2, negative_prompt=NEGATIVE, true_cfg_scale=4.0,
               num_inference_steps=2, seed=7)
    assert got.shape == expected.shape == (2, 64, 96, 4)
    assert np.abs(got - expected).mean() < TOL
    # the picture visibly matters (measured 2e-3; without CFG: one pass a step)
    plain = dict(layers=1, num_inference_steps=2, seed=7)
    other = ours(_picture(2, 200), PROMPT, **plain)
    assert np.abs(other - ours(picture, PROMPT, **plain)).mean() > 100 * TOL
    with pytest.raises(ValueError, match="needs one prompt"):
        ours(picture, " ", layers=2)


def test_layers_from_the_cli(first_device: gpucore.Device, tiny_layered: tuple[Path, Any],
                             expected: np.ndarray, tmp_path: Path,
                             capsys: pytest.CaptureFixture[str],
                             monkeypatch: pytest.MonkeyPatch) -> None:
    """`layers` writes one RGBA PNG a layer into --out: diffusers' layers (through the PNGs'
    rounding); a Qwen-Image folder or no prompt is refused in one line, and so is the
    folder for txt2img."""
    folder, _ = tiny_layered
    monkeypatch.setattr(QwenImageLayeredPipeline, "areas", {640: AREA})
    source = tmp_path / "in.png"
    _picture(1).save(source)
    out = tmp_path / "layers"
    common = ["layers", "--model", str(folder), "--image", str(source), "--steps", "2",
              "--seed", "7", "--dtype", "float32", "--negative-prompt", NEGATIVE]
    assert cli.main([*common, "--prompt", PROMPT, "--layers", "2", "--out", str(out)]) == 0
    written = capsys.readouterr()[0].split()
    assert [Path(p).name for p in written] == ["in-layer1.png", "in-layer2.png"]
    assert sorted(p.name for p in out.iterdir()) == [Path(p).name for p in written]
    for path, layer in zip(written, expected, strict=True):
        with Image.open(path) as image:
            assert image.mode == "RGBA"
            ours = np.asarray(image, np.float32) / 255
        assert np.abs(ours - layer).mean() < 0.01  # the PNG's rounding
    for argv in ([*common, "--out", str(tmp_path / "b")],
                 ["txt2img", "--model", str(folder), "--prompt", PROMPT]):
        assert cli.main(argv) == 2
        err = capsys.readouterr()[1]
        errors = [line for line in err.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "Traceback" not in err
        assert "--prompt" in errors[0] or "`python -m diffusion layers" in errors[0]


def test_layers_from_the_server(first_device: gpucore.Device, tiny_layered: tuple[Path, Any],
                                expected: np.ndarray, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    """POST /avx/layers with the folder of the models directory by name: diffusers' layers as
    base64 RGBA PNGs (through their rounding), the seed said; a folder that is not
    Qwen-Image-Layered, an empty prompt, a layer count out of range, a picture that is not
    one and a server in a memory mode are 422s in one line each, before the queue."""
    import base64
    import io
    import shutil

    pytest.importorskip("fastapi", reason="the server extra is not installed")
    from fastapi.testclient import TestClient
    from server_support import StandInPipeline

    from diffusion.pipelines.sd.memory import MemoryMode
    from diffusion.server import create_app

    monkeypatch.setattr(QwenImageLayeredPipeline, "areas", {640: AREA})
    models = tmp_path / "models"
    (models / "stand-in").mkdir(parents=True)  # the picture model: none loads
    shutil.copytree(tiny_layered[0], models / "layered")
    buffer = io.BytesIO()
    _picture(1).save(buffer, format="PNG")
    body = {"model": "layered", "image": base64.b64encode(buffer.getvalue()).decode("ascii"),
            "prompt": PROMPT, "negative_prompt": NEGATIVE, "layers": 2, "steps": 2, "seed": 7}
    pipe = StandInPipeline()
    app = create_app(model=models / "stand-in", models_dir=models,
                     outputs=tmp_path / "outputs", loader=lambda path: pipe)
    with TestClient(app) as client:
        response = client.post("/avx/layers", json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert (answer["seed"], answer["width"], answer["height"]) == (7, 96, 64)
        assert len(answer["images"]) == 2
        for text, layer in zip(answer["images"], expected, strict=True):
            with Image.open(io.BytesIO(base64.b64decode(text))) as image:
                assert image.mode == "RGBA"
                ours = np.asarray(image, np.float32) / 255
            assert np.abs(ours - layer).mean() < 0.003  # the PNG's rounding
        for change, says in (({"model": "stand-in"}, "is not a Qwen-Image-Layered folder"),
                             ({"prompt": " "}, "prompt is empty"),
                             ({"layers": 65}, "less than or equal to 64"),
                             ({"image": "bm90IGEgcGljdHVyZQ=="}, "not a readable image")):
            refused = client.post("/avx/layers", json={**body, **change})
            assert refused.status_code == 422 and says in refused.text, refused.text
        # a server in a memory mode: the pipeline would load whole
        monkeypatch.setattr(app.state.server, "memory", MemoryMode.parse(lowvram=True))
        refused = client.post("/avx/layers", json=body)
        assert refused.status_code == 422 and "runs in --lowvram" in refused.text
    app.state.worker.stop()
