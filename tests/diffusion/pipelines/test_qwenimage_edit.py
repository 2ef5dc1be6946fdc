"""Qwen-Image-Edit against diffusers' QwenImageEditPipeline on a tiny random folder: the
reference picture's latents beside the noise, the instruction read with the picture by
Qwen2.5-VL (vision tokens, multimodal positions), true CFG; the picture and the prompt both
visibly matter. With a mask, QwenImageEditInpaintPipeline's inpainting."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from PIL import Image
from qwenedit_tiny import read_at_area, tiny_qwenimage_edit_pipeline

import diffusion.cli.main as cli
import diffusion.pipelines.flow.qwen_image_edit as edit_module
import gpucore
from diffusion.pipelines.families import family_of
from diffusion.pipelines.flow.qwen_image_edit import QwenImageEditPipeline

AREA = 64 * 96  # the reference's pixels (diffusers' 1024 x 1024 would be slow here)
TOL = 1e-3  # of mean abs pixel in [0, 1]; typically ~1e-6 (float32 throughout)
PROMPT = "make the red circle blue and the square green, " * 4
NEGATIVE = "a blurry photo, " * 4


def _picture(seed: int, low: int = 0, high: int = 256) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(low, high, (60, 100, 3),
                                                                dtype=np.uint8))


@pytest.fixture(scope="module")
def tiny_edit(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """The folder and diffusers' pipeline of it, its reference read at AREA pixels
    (qwenedit_tiny.read_at_area)."""
    root = tmp_path_factory.mktemp("tiny-qwen-edit")
    pipe = tiny_qwenimage_edit_pipeline(root)
    with read_at_area(pipe, AREA):
        yield root / "qwen-edit", pipe


def _diffusers(pipe: Any, image: Image.Image, prompt: str) -> np.ndarray:
    return pipe(image=image, prompt=prompt, negative_prompt=NEGATIVE, true_cfg_scale=4.0,
                num_inference_steps=2, generator=torch.Generator().manual_seed(7),
                output_type="np").images[0]


def test_edit_equals_diffusers(first_device: gpucore.Device, tiny_edit: tuple[Path, Any]
                               ) -> None:
    folder, reference = tiny_edit
    ours = QwenImageEditPipeline.from_pretrained(folder, device=first_device)
    ours.reference_area = AREA
    picture = _picture(1, 0, 60)

    def edit(image: Image.Image, prompt: str, **guidance: Any) -> np.ndarray:
        return ours(prompt, image=image, num_inference_steps=2, seed=7, **guidance)[0]

    expected = _diffusers(reference, picture, PROMPT)
    got = edit(picture, PROMPT, negative_prompt=NEGATIVE, true_cfg_scale=4.0)
    assert got.shape == expected.shape == (64, 96, 3)
    assert np.abs(got - expected).mean() < TOL
    # the reference picture (without CFG: one pass a step) and the instruction both
    # visibly matter
    assert np.abs(edit(_picture(2, 200), PROMPT) - edit(picture, PROMPT)).mean() > 10 * TOL
    other = edit(picture, "paint it all yellow, " * 4, negative_prompt=NEGATIVE,
                 true_cfg_scale=4.0)
    assert np.abs(other - got).mean() > 10 * TOL


def test_edit_from_the_cli(first_device: gpucore.Device, tiny_edit: tuple[Path, Any],
                           tmp_path: Path, capsys: pytest.CaptureFixture[str],
                           monkeypatch: pytest.MonkeyPatch) -> None:
    """img2img's init image is the picture to edit, the prompt the instruction: diffusers'
    picture (through a PNG); txt2img and a strength without a mask are refused in one
    line."""
    folder, reference = tiny_edit
    assert family_of(folder)[1] == "qwen-image-edit"
    monkeypatch.setattr(edit_module, "REFERENCE_AREA", AREA)
    init = tmp_path / "init.png"
    _picture(1, 0, 60).save(init)
    common = ("--model", str(folder), "--width", "96", "--height", "64", "--steps", "2",
              "--sampler", "diffusers", "--rng", "torch", "--seed", "7", "--dtype", "float32",
              "--cfg-scale", "4", "--negative-prompt", NEGATIVE, "--prompt", PROMPT)
    assert cli.main(["img2img", *common, "--init-image", str(init),
                     "--out", str(tmp_path / "a.png")]) == 0
    out, err = capsys.readouterr()
    assert "qwen-image-edit" in err
    with Image.open(out.strip()) as image:
        ours = np.asarray(image.convert("RGB"), np.float32) / 255
    expected = _diffusers(reference, Image.open(init).convert("RGB"), PROMPT)
    assert np.abs(ours - expected).mean() < 0.01  # the PNG's rounding
    for argv in (["txt2img", *common], ["img2img", *common, "--init-image", str(init),
                                        "--strength", "0.5"]):
        assert cli.main([*argv, "--out", str(tmp_path / "b.png")]) != 0
        err = capsys.readouterr()[1]
        assert "Qwen-Image-Edit" in err and "Traceback" not in err


def test_edit_through_the_server(first_device: gpucore.Device, tiny_edit: tuple[Path, Any],
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """img2img's init_images[0] is the picture to edit: Euler over the Simple schedule at 2
    steps with the CPU noise source draws diffusers' picture; with a mask it inpaints (the
    original laid back outside it, as the WebUI)."""
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    import base64
    import io

    from fastapi.testclient import TestClient
    from server_support import CachedLoader, png_b64

    from diffusion.server import create_app

    folder, reference = tiny_edit
    monkeypatch.setattr(edit_module, "REFERENCE_AREA", AREA)
    picture = _picture(3, 0, 60)
    app = create_app(model=folder, models_dir=folder.parent, outputs=folder.parent / "out",
                     max_size=256, loader=CachedLoader())
    body = {"prompt": PROMPT, "negative_prompt": NEGATIVE, "init_images": [png_b64(picture)],
            "width": 96, "height": 64, "steps": 2, "seed": 7, "cfg_scale": 4,
            "sampler_name": "Euler", "override_settings": {"randn_source": "CPU"}}
    with TestClient(app) as client:
        response = client.post("/sdapi/v1/img2img", json=body)
        assert response.status_code == 200, response.text
        data = base64.b64decode(response.json()["images"][0])
        with Image.open(io.BytesIO(data)) as image:
            ours = np.asarray(image.convert("RGB"), np.float32) / 255
        assert np.abs(ours - _diffusers(reference, picture, PROMPT)).mean() < 0.01
        mask = np.zeros((64, 96), np.uint8)
        mask[:, 48:] = 255
        masked = client.post("/sdapi/v1/img2img", json={
            **body, "init_images": [png_b64(_picture(3, 0, 60).resize((96, 64)))],
            "mask": png_b64(Image.fromarray(mask)), "mask_blur": 0, "steps": 4})
        assert masked.status_code == 200, masked.text
        data = base64.b64decode(masked.json()["images"][0])
        with Image.open(io.BytesIO(data)) as image:
            painted = np.asarray(image.convert("RGB"), np.float32)
        init = np.asarray(_picture(3, 0, 60).resize((96, 64)), np.float32)
        assert np.abs(painted - init)[mask == 0].max() == 0
        assert np.abs(painted - init)[mask > 0].mean() > 10


def test_edit_plus_equals_diffusers(first_device: gpucore.Device, tiny_edit: tuple[Path, Any],
                                    tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two references of different sizes, each read at the condition area and encoded at the
    reference area (both scaled down alike), the output at the last one's size by default:
    diffusers' QwenImageEditPlusPipeline; the second reference visibly matters."""
    import diffusers
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as module

    from diffusion.pipelines.flow.qwen_image_edit_plus import QwenImageEditPlusPipeline

    _, edit = tiny_edit
    reference = diffusers.QwenImageEditPlusPipeline(**edit.components)
    reference.save_pretrained(tmp_path / "plus")
    dimensions, shrink = module.calculate_dimensions, AREA / (1024 * 1024)
    monkeypatch.setattr(module, "calculate_dimensions",
                        lambda area, ratio: dimensions(area * shrink, ratio))
    ours = QwenImageEditPlusPipeline.from_pretrained(tmp_path / "plus", device=first_device)
    ours.reference_area, ours.condition_area = AREA, int(384 * 384 * shrink)
    first = _picture(1, 0, 60)
    def square(low: int, high: int) -> Image.Image:
        return Image.fromarray(np.random.default_rng(4).integers(low, high, (80, 80, 3),
                                                                 dtype=np.uint8))

    second = square(150, 256)
    guidance = {"negative_prompt": NEGATIVE, "true_cfg_scale": 4.0, "num_inference_steps": 2}
    expected = reference(image=[first, second], prompt=PROMPT, output_type="np",
                         generator=torch.Generator().manual_seed(7), **guidance).images[0]
    got = ours(PROMPT, image=[first, second], seed=7, **guidance)[0]
    assert got.shape == expected.shape == (64, 64, 3)
    # a tighter tolerance than TOL: the second picture's effect on the tiny model is smaller
    # (16 of the 56 image tokens); the error stays ~1e-6 all the same
    tol = 1e-4
    assert np.abs(got - expected).mean() < tol
    other = ours(PROMPT, image=[first, square(0, 40)], seed=7, **guidance)[0]
    assert np.abs(other - got).mean() > 10 * tol


def test_edit_plus_references_through_cli_and_server(
        first_device: gpucore.Device, tiny_edit: tuple[Path, Any], tmp_path: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """An Edit Plus model's two references from the CLI (--init-image, then --reference;
    diffusers' loop) and from the server (init_images in the other order; Euler with the CPU
    noise source): QwenImageEditPlusPipeline's picture of each order, which differ, and the
    infotext counts them. Qwen-Image-Edit, which reads one, refuses a second in one line."""
    pytest.importorskip("fastapi", reason="the server extra is not installed")
    import base64
    import io

    import diffusers
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_plus as module
    from fastapi.testclient import TestClient
    from server_support import CachedLoader, info, png_b64

    from diffusion.infotext import read_infotext
    from diffusion.pipelines.flow.qwen_image_edit_plus import QwenImageEditPlusPipeline
    from diffusion.server import create_app

    folder, edit = tiny_edit
    reference = diffusers.QwenImageEditPlusPipeline(**edit.components)
    reference.save_pretrained(tmp_path / "plus")
    dimensions, shrink = module.calculate_dimensions, AREA / (1024 * 1024)
    monkeypatch.setattr(module, "calculate_dimensions",
                        lambda area, ratio: dimensions(area * shrink, ratio))
    monkeypatch.setattr(edit_module, "REFERENCE_AREA", AREA)
    monkeypatch.setattr(QwenImageEditPlusPipeline, "condition_area", int(384 * 384 * shrink))
    rng = np.random.default_rng(5)
    # a dark picture and a bright one, of the output's size (the init image is fitted to it)
    first, second = (Image.fromarray(rng.integers(low, high, (64, 96, 3), dtype=np.uint8))
                     for low, high in ((0, 60), (150, 256)))
    first.save(tmp_path / "first.png")
    second.save(tmp_path / "second.png")

    def theirs(images: list[Image.Image]) -> np.ndarray:
        return reference(image=images, prompt=PROMPT, height=64, width=96, true_cfg_scale=1.0,
                         num_inference_steps=2, generator=torch.Generator().manual_seed(7),
                         output_type="np").images[0]

    common = ["img2img", "--width", "96", "--height", "64", "--steps", "2", "--seed", "7",
              "--dtype", "float32", "--cfg-scale", "1", "--prompt", PROMPT,
              "--init-image", str(tmp_path / "first.png"),
              "--reference", str(tmp_path / "second.png")]
    assert cli.main([*common, "--model", str(tmp_path / "plus"), "--sampler", "diffusers",
                     "--rng", "torch", "--out", str(tmp_path / "a.png")]) == 0
    out = capsys.readouterr().out.strip()
    with Image.open(out) as image:
        ours = np.asarray(image.convert("RGB"), np.float32) / 255
    in_order, other_order = theirs([first, second]), theirs([second, first])
    swap = np.abs(in_order - other_order).mean()
    assert swap > 0.005  # the order of the references matters
    assert np.abs(ours - in_order).mean() < swap / 3  # the PNG's rounding
    assert "Reference images: 2" in (read_infotext(out) or "")
    assert cli.main([*common, "--model", str(folder), "--out", str(tmp_path / "b.png")]) != 0
    err = capsys.readouterr().err
    assert "2 reference pictures: Qwen-Image-Edit models read at most 1" in err
    assert "Traceback" not in err
    app = create_app(model=tmp_path / "plus", models_dir=tmp_path, outputs=tmp_path / "out",
                     max_size=256, loader=CachedLoader())
    with TestClient(app) as client:
        response = client.post("/sdapi/v1/img2img", json={
            "prompt": PROMPT, "init_images": [png_b64(second), png_b64(first)], "width": 96,
            "height": 64, "steps": 2, "seed": 7, "cfg_scale": 1, "sampler_name": "Euler",
            "override_settings": {"randn_source": "CPU"}})
        assert response.status_code == 200, response.text
        data = base64.b64decode(response.json()["images"][0])
        with Image.open(io.BytesIO(data)) as image:
            swapped = np.asarray(image.convert("RGB"), np.float32) / 255
        assert np.abs(swapped - other_order).mean() < swap / 3
        assert "Reference images: 2" in info(response)["infotexts"][0]


def test_edit_transformer_file_with_base(first_device: gpucore.Device,
                                         tiny_edit: tuple[Path, Any], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """ComfyUI's split edit transformer (Qwen-Image's tensors; its name says which edit model
    it is) with an edit folder as --base: the folder's own picture bitwise; a file without
    --base gets one line, and a Qwen-Image file is still Qwen-Image's."""
    from safetensors.torch import save_file

    from diffusion.loaders.qwen_image import qwenimage_family

    folder, edit = tiny_edit
    monkeypatch.setattr(edit_module, "REFERENCE_AREA", AREA)
    state = {"model.diffusion_model." + key: value.detach().clone()
             for key, value in edit.transformer.state_dict().items()}
    file = tmp_path / "qwen_image_edit_bf16.safetensors"
    save_file(state, str(file))
    for name, family in (("qwen_image_edit_2509_fp8_e4m3fn.safetensors", "qwen-image-edit-plus"),
                         ("Qwen-Image-Edit-Plus.safetensors", "qwen-image-edit-plus"),
                         ("qwen_image_bf16.safetensors", "qwen-image")):
        save_file(state, str(tmp_path / name))
        assert family_of(tmp_path / name)[1] == family
    assert family_of(file)[1] == "qwen-image-edit" and qwenimage_family(file) is None
    _picture(1, 0, 60).save(tmp_path / "init.png")
    common = ["img2img", "--width", "96", "--height", "64", "--steps", "2", "--seed", "7",
              "--dtype", "float32", "--cfg-scale", "1", "--prompt", PROMPT,
              "--init-image", str(tmp_path / "init.png")]
    pictures = []
    for model in (["--model", str(folder)], ["--model", str(file), "--base", str(folder)]):
        assert cli.main([*common, *model, "--out", str(tmp_path / "out.png")]) == 0
        out, err = capsys.readouterr()
        with Image.open(out.strip()) as image:
            pictures.append(np.asarray(image.convert("RGB")))
    assert "model: qwen_image_edit_bf16 (qwen-image-edit)" in err
    np.testing.assert_array_equal(pictures[0], pictures[1])
    assert cli.main([*common, "--model", str(file), "--out", str(tmp_path / "x.png")]) != 0
    err = capsys.readouterr().err
    assert "give a Qwen-Image-Edit diffusers folder with --base" in err
    assert "Traceback" not in err


def test_edit_inpaint_equals_diffusers(first_device: gpucore.Device,
                                       tiny_edit: tuple[Path, Any],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """A mask: the init image is the picture inpainted at the request's strength and still
    the reference. The "diffusers" sampler draws QwenImageEditInpaintPipeline's picture (the
    picture's posterior draw noised by the torch CPU generator, that draw also its latent
    tokens, the kept part put back after every step; measured 9.6e-4 mean abs of [0, 1]
    pixels, the uint8 rounding; the mean's tokens in place of the draw's: 1.0e-2). The kept
    latents are that draw exactly, the masked ones move."""
    import diffusers
    from diffusers.pipelines.qwenimage import pipeline_qwenimage_edit_inpaint as module

    from diffusion.imaging import to_unit_image
    from diffusion.noise.rng import make_generator
    from diffusion.pipelines.load import load_pipeline
    from diffusion.pipelines.request import GenerationRequest

    folder, edit = tiny_edit
    dimensions = module.calculate_dimensions
    monkeypatch.setattr(module, "calculate_dimensions",
                        lambda area, ratio: dimensions(AREA, ratio))
    monkeypatch.setattr(edit_module, "REFERENCE_AREA", AREA)
    init = Image.fromarray(np.random.default_rng(5).integers(0, 256, (64, 96, 3), np.uint8))
    mask = np.zeros((64, 96), np.uint8)
    mask[:, 48:] = 255  # whole 2x2 patches of latents: kept at the left
    guidance: dict[str, Any] = dict(negative_prompt=NEGATIVE, strength=0.75)
    expected = diffusers.QwenImageEditInpaintPipeline(**edit.components)(
        image=init, mask_image=Image.fromarray(mask), prompt=PROMPT, true_cfg_scale=4.0,
        num_inference_steps=4, generator=torch.Generator().manual_seed(7), output_type="np",
        **guidance).images[0]
    model = load_pipeline(folder, device=first_device)
    ours = model.generate(GenerationRequest(
        prompt=PROMPT, init_image=init, mask=mask, width=96, height=64, steps=4, seed=7,
        cfg_scale=4.0, sampler="diffusers", rng="torch", **guidance)).images[0] / 255
    assert np.abs(ours - expected).mean() < 2e-3
    latents = model.pipe(PROMPT, image=init, init_image=init, mask_image=mask, height=64,
                         width=96, num_inference_steps=4, true_cfg_scale=4.0, seed=7,
                         output_type="latent", **guidance)
    drawn = model.pipe.encode_image(to_unit_image(init, 96, 64), make_generator("torch", 7))
    assert np.abs(latents - drawn)[..., :6].max() < 1e-5
    assert np.abs(latents - drawn)[..., 6:].mean() > 0.1


def test_edit_hires_fix_with_the_reference(first_device: gpucore.Device,
                                           tiny_edit: tuple[Path, Any],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The hires fix on img2img: the picture at the hires size, finite; the second pass reads
    the init image as its reference, unchanged, as the first did (FLUX.1 Kontext's, checked
    against diffusers in test_kontext_pipeline.py, runs the same code), and another picture
    there alone visibly moves the result (a strong hires denoise: the tiny model reads its
    reference faintly)."""
    from diffusion.pipelines.load import load_pipeline
    from diffusion.pipelines.request import GenerationRequest
    from diffusion.upscalers.interpolation import HiresFix

    folder, _ = tiny_edit
    monkeypatch.setattr(edit_module, "REFERENCE_AREA", AREA)
    model = load_pipeline(folder, device=first_device)
    picture, other = _picture(1, 0, 60), _picture(2, 180, 256)
    request = GenerationRequest(prompt=PROMPT, init_image=picture, width=48, height=32,
                                steps=2, seed=7, cfg_scale=1.0, sampler="Euler", rng="torch",
                                hires=HiresFix(scale=2.0, upscaler="Latent", steps=3,
                                               denoise=0.75))
    velocity, read = model.pipe.velocity, []

    def reading(prompts: Any, *, height: int, width: int, image: Any, **rest: Any) -> Any:
        read.append(((width, height), image))
        if swap and width == 96:  # the hires pass's size
            image = other
        return velocity(prompts, height=height, width=width, image=image, **rest)

    monkeypatch.setattr(model.pipe, "velocity", reading)
    swap = False
    got = model.generate(request).images[0].astype(np.float32)
    assert got.shape == (64, 96, 3) and np.isfinite(got).all()
    assert [size for size, _ in read] == [(48, 32), (96, 64)]
    assert np.array_equal(np.asarray(read[1][1]), np.asarray(read[0][1]))  # unchanged
    swap = True
    moved = np.abs(model.generate(request).images[0] - got).mean()
    assert moved > 2  # uint8 levels; measured 4.1
