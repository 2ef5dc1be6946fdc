"""Bria FIBO 2: BriaFibo2Pipeline on gpustd against diffusers' (tiny, random, float32), with
CFG against the trained null caption and against a negative prompt of its own, a JSON caption
cleaned as diffusers cleans it (an empty list and a score dropped), the prompt visibly
mattering; a caption with text to render (read with images of the text); an edit of a picture
(Qwen3-VL's vision tower and the VAE reading it) and its sizes; through the command line like
any model (the family detected from its folder, its defaults, diffusers' picture with `--rng
torch`, an edit as img2img), and what it refuses in one line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_pixels
from PIL import Image

import gpucore
from diffusion.models.bria_fibo2_text import draw_text_image
from diffusion.pipelines.contract import SamplingDefaults
from diffusion.pipelines.families import capabilities_of
from diffusion.pipelines.flow.bria_fibo2 import BriaFibo2Pipeline
from diffusion.pipelines.flow.bria_fibo2_edit import trained_size
from diffusion.pipelines.load import model_defaults

HEIGHT, WIDTH = 24, 40  # 6 x 10 patches of the tiny VAE's 2x latents, no tile's multiple
SIZE = ("--width", str(WIDTH), "--height", str(HEIGHT))
RED = json.dumps({"short_description": "a red circle on a blue square", "objects": [],
                  "aesthetic_score": 7, "lighting": {"conditions": "soft daylight"}})
HORSE = "an astronaut riding a horse"
TOL = 0.01  # mean |ours - diffusers| in [0, 1] through a PNG (its rounding)


@pytest.fixture(scope="module")
def tiny_fibo2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    from bria_fibo2_tiny import tiny_fibo2_pipeline

    root = tmp_path_factory.mktemp("tiny-fibo2")
    return root / "fibo2", tiny_fibo2_pipeline(root)


def _diffusers(reference: Any, prompt: str, steps: int = 2, **settings: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(prompt, height=HEIGHT, width=WIDTH, num_inference_steps=steps,
                           generator=torch.Generator().manual_seed(7), output_type="np",
                           **settings).images
    return np.asarray(images[0])


def test_pipeline_is_diffusers(first_device: gpucore.Device,
                               tiny_fibo2: tuple[Path, Any]) -> None:
    """The picture at guidance 5 (the null caption) and with a negative prompt; the prompt
    visibly matters."""
    folder, reference = tiny_fibo2
    pipe = BriaFibo2Pipeline.from_pretrained(folder, device=first_device)

    def ours(prompt: str, **settings: Any) -> np.ndarray:
        return pipe(prompt, height=HEIGHT, width=WIDTH, num_inference_steps=2, seed=7,
                    **settings)[0]

    guided = ours(RED)
    # measured on lavapipe: 3.1e-5 max (of pictures spread 0.2 about their mean; the
    # transformer's float32 rounding, models/test_bria_fibo2.py)
    np.testing.assert_allclose(guided, _diffusers(reference, RED), atol=2e-4)
    negative = ours(RED, negative_prompt=HORSE)
    np.testing.assert_allclose(negative, _diffusers(reference, RED, negative_prompt=HORSE),
                               atol=2e-4)
    assert np.abs(ours(HORSE) - guided).mean() > 0.01  # the prompt matters


def _picture(seed: int, width: int, height: int) -> Image.Image:
    """Smooth random colour waves (a picture with structure, not noise)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width] / 8.0
    waves = [np.sin(rng.uniform(0.5, 2) * x + rng.uniform(0.5, 2) * y + rng.uniform(0, 6))
             for _ in range(3)]
    return Image.fromarray((127.5 + 127 * np.stack(waves, -1)).astype(np.uint8))


def test_edit_is_diffusers(first_device: gpucore.Device, tiny_fibo2: tuple[Path, Any]) -> None:
    """An edit of a picture of another size and aspect (scaled and cropped to the result's),
    guided; the picture visibly matters."""
    folder, reference = tiny_fibo2
    pipe = BriaFibo2Pipeline.from_pretrained(folder, device=first_device)
    picture = _picture(3, 44, 30)
    edit = json.dumps({"short_description": "a night scene", "edit_instruction": "make it night"})
    ours = pipe(edit, image=picture, height=HEIGHT, width=WIDTH, num_inference_steps=2,
                seed=7)[0]
    expected = _diffusers(reference, edit, image=picture)
    # measured on lavapipe: 1.5e-5 max
    np.testing.assert_allclose(ours, expected, atol=2e-4)
    assert np.abs(_diffusers(reference, RED) - expected).mean() > 0.01
    with pytest.raises(ValueError, match='an "edit_instruction" key'):
        pipe(RED, image=picture, height=HEIGHT, width=WIDTH, num_inference_steps=1)


def test_text_images_are_diffusers(first_device: gpucore.Device,
                                   tiny_fibo2: tuple[Path, Any]) -> None:
    """A caption with text to render: its first step (noise above 0.9) without the text's
    image, the next ones with it, as diffusers; the image visibly matters; and an edit of a
    caption with text."""
    folder, reference = tiny_fibo2
    pipe = BriaFibo2Pipeline.from_pretrained(folder, device=first_device)
    sign = json.dumps({"short_description": "a shop sign",
                       "text_render": [{"text": "OPEN", "location": "center"}]})
    ours = pipe(sign, height=HEIGHT, width=WIDTH, num_inference_steps=3, guidance_scale=1,
                seed=7)[0]
    expected = _diffusers(reference, sign, steps=3, guidance_scale=1.0)
    # measured on lavapipe: 1.2e-5 max
    np.testing.assert_allclose(ours, expected, atol=2e-4)
    plain = _diffusers(reference, sign, steps=3, guidance_scale=1.0, render_text_images=False)
    assert np.abs(plain - expected).mean() > 0.005  # measured: 0.0098, two steps of three
    edit = json.dumps({"short_description": "a shop sign", "text_render": [{"text": "SHUT"}],
                       "edit_instruction": "change the sign"})
    picture = _picture(4, WIDTH, HEIGHT)
    ours = pipe(edit, image=picture, height=HEIGHT, width=WIDTH, num_inference_steps=2,
                guidance_scale=1, seed=7)[0]
    expected = _diffusers(reference, edit, image=picture, guidance_scale=1.0)
    np.testing.assert_allclose(ours, expected, atol=2e-4)  # measured: 1.8e-5


@pytest.mark.nodevice
def test_text_images_drawn_as_diffusers() -> None:
    """The text's images pixel for pixel as diffusers draws them (a long text in lines); a
    character the built-in font lacks (diffusers draws it in fonts given to it) refused."""
    from diffusers.pipelines.bria_fibo2.text_images import draw_text_image as reference

    for text in ("OPEN", "Hello   world 42!", "x" * 300):
        np.testing.assert_array_equal(np.asarray(draw_text_image(text)),
                                      np.asarray(reference(text)))
    with pytest.raises(ValueError, match="built-in font lacks"):
        draw_text_image("caf\u00e9")


@pytest.mark.nodevice
def test_trained_size() -> None:
    """The size an edit draws by default (and each of several pictures' crop), as diffusers'
    image processor picks it, at FIBO 2's scale and the tiny one's."""
    from diffusers.pipelines.bria_fibo2.image_processor import BriaFibo2ImageProcessor

    for multiple, area in ((16, 1024 * 1024), (4, 256 * 256)):
        processor = BriaFibo2ImageProcessor(vae_scale_factor=multiple)
        for aspect in (1.0, 0.37, 4 / 3, 16 / 9, 2.9):
            assert trained_size(aspect, multiple, area) == processor.get_image_size(aspect, area)


def _common(folder: Path, *more: str) -> tuple[str, ...]:
    return ("txt2img", "--model", str(folder), *SIZE, "--steps", "2", "--rng", "torch",
            "--seed", "7", "--dtype", "float32", *more)


def test_fibo2_from_the_cli(first_device: gpucore.Device, tiny_fibo2: tuple[Path, Any],
                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The family and its defaults (30 steps at CFG 5, its own loop) from the folder;
    diffusers' picture at CFG 1, and its edit as img2img; a WebUI sampler, a caption's text in
    characters the built-in font lacks and an edit's strength refused in one line."""
    folder, reference = tiny_fibo2
    capabilities = capabilities_of(folder)
    assert capabilities is not None and capabilities.family == "bria-fibo2"
    defaults = model_defaults(folder)[0]
    assert (defaults.steps, defaults.sampler, defaults.cfg_scale) == (30, "diffusers", 5.0)
    assert isinstance(defaults, SamplingDefaults)
    out, _ = cli_ok(capsys, *_common(folder, "--prompt", RED, "--cfg-scale", "1",
                                       "--out", str(tmp_path / "a.png")))
    assert np.abs(png_pixels(out) - _diffusers(reference, RED, guidance_scale=1.0)).mean() < TOL
    error = cli_error(capsys, *_common(folder, "--prompt", RED, "--sampler", "Euler",
                                       "--out", str(tmp_path / "x.png")))
    assert "Bria FIBO 2" in error and "\n" not in error.strip()
    text = json.dumps({"short_description": "a sign", "text_render": [{"text": "\u65e5\u672c"}]})
    error = cli_error(capsys, *_common(folder, "--prompt", text, "--cfg-scale", "1",
                                       "--out", str(tmp_path / "x.png")))
    assert "built-in font lacks" in error and "\n" not in error.strip()
    assert not (tmp_path / "x.png").exists()
    # an edit: the init image at the request's size (the crop then changes nothing)
    picture = _picture(5, WIDTH, HEIGHT)
    picture.save(tmp_path / "in.png")
    out, _ = cli_ok(capsys, "img2img", *_common(folder, "--prompt", "make it night",
                                                  "--cfg-scale", "1", "--init-image",
                                                  str(tmp_path / "in.png"),
                                                  "--out", str(tmp_path / "b.png"))[1:])
    expected = _diffusers(reference, "make it night", image=picture, guidance_scale=1.0)
    assert np.abs(png_pixels(out) - expected).mean() < TOL
    error = cli_error(capsys, "img2img", *_common(folder, "--prompt", "make it night",
                                                  "--init-image", str(tmp_path / "in.png"),
                                                  "--strength", "0.5",
                                                  "--out", str(tmp_path / "x.png"))[1:])
    assert "strength" in error and "\n" not in error.strip()


def test_folder_refusals(first_device: gpucore.Device, tiny_fibo2: tuple[Path, Any],
                         tmp_path: Path) -> None:
    """A folder without its tokenizer, or whose text encoder is not Qwen3-VL, refused in one
    line naming what to give."""
    import shutil

    from diffusion.loaders.errors import WeightsError

    folder, _ = tiny_fibo2
    broken = tmp_path / "no-tokenizer"
    shutil.copytree(folder, broken)
    (broken / "processor" / "tokenizer.json").unlink()
    with pytest.raises(WeightsError, match=r"tokenizer\.json: required file is missing"):
        BriaFibo2Pipeline.from_pretrained(broken, device=first_device)
    other = tmp_path / "not-qwen3-vl"
    shutil.copytree(folder, other)
    config = json.loads((other / "text_encoder" / "config.json").read_text())
    config["text_config"]["model_type"] = "qwen2_vl_text"
    (other / "text_encoder" / "config.json").write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="Bria FIBO 2's is Qwen3-VL's"):
        BriaFibo2Pipeline.from_pretrained(other, device=first_device)
