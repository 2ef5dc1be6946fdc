"""Kandinsky 5's editing model against diffusers' Kandinsky5I2IPipeline on a tiny random folder:
the prompt read with the picture by Qwen2.5-VL (vision tokens, multimodal positions, the
editing template's 54 states dropped), the picture's latents and a channel of ones beside the
noise, CFG; the picture and the prompt both visibly matter. Through the command line: the
family told from the folder, img2img's init image the picture to edit (diffusers' picture with
its own loop and noise), a WebUI sampler (the server's init_images[0] drawing the same),
inpainting, and what it refuses in one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from cli_support import cli_error, cli_ok, png_pixels
from kandinsky5_text_tiny import tiny_kandinsky5_edit_pipeline
from PIL import Image

import gpucore
from diffusion.pipelines.families import capabilities_of, family_of
from diffusion.pipelines.flow.kandinsky5 import Kandinsky5Pipeline
from diffusion.pipelines.flow.kandinsky5_edit import Kandinsky5EditPipeline

HEIGHT, WIDTH = 24, 40  # 6 x 10 patches of 2 x 2 latents (the tiny VAE's 2x)
PROMPT = "make the red circle blue and the square green"
NEGATIVE = "a blurry photo"
TOL = 1.5e-4  # mean |ours - diffusers| in [0, 1], float32: measured 4.7e-5 (4e-4 max;
# diffusers rounds its rotated q and k to bfloat16 even in float32, as for text to image); the
# other picture moves it 0.025, the other prompt more


def _picture(seed: int, low: int = 0, high: int = 256, size: tuple[int, int] = (60, 100)
             ) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(low, high, (*size, 3),
                                                                dtype=np.uint8))


@pytest.fixture(scope="module")
def tiny_edit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder, diffusers' Kandinsky5I2IPipeline of it), the reference told the tiny
    VAE's factor (it assumes 8) and given the test's size as a resolution (it snaps any
    other to its nearest trained one)."""
    root = tmp_path_factory.mktemp("tiny-kandinsky5-edit")
    reference = tiny_kandinsky5_edit_pipeline(root)
    reference.vae_scale_factor_spatial = 2
    reference.resolutions = [(WIDTH, HEIGHT)]
    return root / "kandinsky5-edit", reference


def _diffusers(reference: Any, image: Image.Image, prompt: str, **settings: Any) -> np.ndarray:
    with torch.no_grad():
        images = reference(image=image, prompt=prompt, height=HEIGHT, width=WIDTH,
                           num_inference_steps=2, generator=torch.Generator().manual_seed(7),
                           output_type="np", **settings).image
    return np.asarray(images[0])


def test_edit_equals_diffusers(first_device: gpucore.Device, tiny_edit: tuple[Path, Any]
                               ) -> None:
    """diffusers' picture with CFG against a negative prompt; the picture to edit and the
    prompt each visibly change it; a prompt and picture past max_sequence_length, and the
    folder in the text-to-image pipeline, refused in one line."""
    folder, reference = tiny_edit
    ours = Kandinsky5EditPipeline.from_pretrained(folder, device=first_device)
    picture = _picture(1)

    def edit(image: Image.Image, prompt: str, **guidance: Any) -> np.ndarray:
        return ours(prompt, image=image, height=HEIGHT, width=WIDTH, num_inference_steps=2,
                    seed=7, **guidance)[0]

    got = edit(picture, PROMPT, negative_prompt=NEGATIVE)
    expected = _diffusers(reference, picture, PROMPT, negative_prompt=NEGATIVE)
    assert got.shape == expected.shape == (HEIGHT, WIDTH, 3)
    assert np.abs(got - expected).mean() < TOL
    plain = edit(picture, PROMPT, guidance_scale=1.0)  # one pass a step: cheaper to vary
    assert np.abs(edit(_picture(2, 200), PROMPT, guidance_scale=1.0) - plain).mean() > 10 * TOL
    assert np.abs(edit(picture, "paint it all yellow", guidance_scale=1.0) - plain
                  ).mean() > 10 * TOL
    with pytest.raises(ValueError, match=r"take [0-9]+ tokens, past max_sequence_length 20"):
        ours(PROMPT, image=picture, height=HEIGHT, width=WIDTH, max_sequence_length=20)
    with pytest.raises(ValueError, match=r"editing model .*Kandinsky5EditPipeline"):
        Kandinsky5Pipeline.from_pretrained(folder, device=first_device)


def test_edit_from_the_cli(first_device: gpucore.Device, tiny_edit: tuple[Path, Any],
                           tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """img2img's init image is the picture to edit: diffusers' picture (through a PNG) with
    `--sampler diffusers --rng torch`; a WebUI sampler whose picture follows the init image,
    the server's and --lowvram's the same; the hires fix, whose second pass reads it too;
    inpainting keeps the unmasked pixels; txt2img, a strength without a mask and a second
    picture are refused in one line."""
    folder, reference = tiny_edit
    assert family_of(folder)[1] == "kandinsky-5-edit"
    capabilities = capabilities_of(folder)
    assert capabilities is not None and capabilities.references == 1
    init, other = tmp_path / "init.png", tmp_path / "other.png"
    _picture(1, size=(HEIGHT, WIDTH)).save(init)
    _picture(2, 200, size=(HEIGHT, WIDTH)).save(other)
    common = ("--model", str(folder), "--width", str(WIDTH), "--height", str(HEIGHT),
              "--steps", "2", "--seed", "7", "--dtype", "float32", "--prompt", PROMPT,
              "--negative-prompt", NEGATIVE)
    diffusers_run = (*common, "--sampler", "diffusers", "--rng", "torch")
    out, err = cli_ok(capsys, "img2img", *diffusers_run, "--init-image", str(init),
                      "--out", str(tmp_path / "a.png"))
    assert "kandinsky-5-edit" in err
    expected = _diffusers(reference, Image.open(init).convert("RGB"), PROMPT,
                          negative_prompt=NEGATIVE)
    assert np.abs(png_pixels(out) - expected).mean() < 0.01  # the PNG's rounding
    euler = [png_pixels(cli_ok(capsys, "img2img", *common, "--sampler", "Euler", "--rng",
                               "torch", "--init-image", str(name), "--out",
                               str(tmp_path / f"euler-{name.name}"))[0])
             for name in (init, other)]
    assert euler[0].shape == (HEIGHT, WIDTH, 3)
    assert np.abs(euler[0] - euler[1]).mean() > 0.01
    _server_matches(folder, init, euler[0])
    lowvram = cli_ok(capsys, "img2img", *common, "--sampler", "Euler", "--rng", "torch",
                     "--init-image", str(init), "--lowvram", "--out", str(tmp_path / "low.png"))
    assert np.abs(png_pixels(lowvram[0]) - euler[0]).max() == 0  # the vision tower moves too
    hires = [png_pixels(cli_ok(capsys, "img2img", *common, "--sampler", "Euler",
                               "--init-image", str(name), "--hr-scale", "2", "--hr-steps", "2",
                               "--out", str(tmp_path / f"hires-{name.name}"))[0])
             for name in (init, other)]  # the second pass reads the picture too
    assert hires[0].shape == (2 * HEIGHT, 2 * WIDTH, 3)
    assert np.abs(hires[0] - hires[1]).mean() > 0.01
    mask = np.zeros((HEIGHT, WIDTH), np.uint8)
    mask[:, :16] = 255  # repaint the left 16 columns; the mask's blur reaches ~12 past them
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out, _ = cli_ok(capsys, "inpaint", *common, "--sampler", "Euler", "--init-image", str(init),
                    "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "c.png"))
    painted, original = png_pixels(out), png_pixels(str(init))
    assert np.abs(painted[:, 32:] - original[:, 32:]).max() == 0
    assert np.abs(painted[:, :8] - original[:, :8]).mean() > 0.01
    for argv, says in ((("txt2img", *diffusers_run), "edits a picture"),
                       (("img2img", *diffusers_run, "--init-image", str(init), "--strength",
                         "0.5"), "denoising strength 0.5"),
                       (("img2img", *diffusers_run, "--init-image", str(init), "--reference",
                         str(other)), "read at most 1")):
        assert says in cli_error(capsys, *argv, "--out", str(tmp_path / "x.png"))
    assert not (tmp_path / "x.png").exists()


def _server_matches(folder: Path, init: Path, expected: np.ndarray) -> None:
    """The server's img2img with the picture to edit as init_images[0] (Euler, the CPU noise
    source) draws the command line's picture of the same settings."""
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    import base64
    import io

    from fastapi.testclient import TestClient
    from server_support import CachedLoader, png_b64

    from diffusion.server import create_app

    app = create_app(model=folder, models_dir=folder.parent, outputs=folder.parent / "out",
                     max_size=256, loader=CachedLoader())
    body = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "init_images": [
        png_b64(Image.open(init))], "width": WIDTH, "height": HEIGHT, "steps": 2, "seed": 7,
        "cfg_scale": 3.5, "sampler_name": "Euler", "override_settings": {"randn_source": "CPU"}}
    with TestClient(app) as client:
        response = client.post("/sdapi/v1/img2img", json=body)
    assert response.status_code == 200, response.text
    data = base64.b64decode(response.json()["images"][0])
    with Image.open(io.BytesIO(data)) as image:
        assert np.abs(np.asarray(image.convert("RGB"), np.float32) / 255 - expected).max() == 0
