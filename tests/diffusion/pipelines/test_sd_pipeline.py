"""End-to-end txt2img / img2img / inpaint against diffusers' pipelines (tiny models, offline).

Both sides get the same random draws: diffusers' `randn_tensor` is replaced by one that
returns, in call order, what our numpy Generator draws for the same seed — our pipeline
draws in diffusers' order (image latents, noise, masked-image latents).

Tolerance: images are compared as uint8. The GPU computes in float32 like torch CPU but in a
different order, so pixels may land one level apart where a value sits on a rounding
boundary; a mean absolute difference under 0.5 levels (and no pixel off by more than a few)
allows that and nothing systematic.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

diffusers = pytest.importorskip("diffusers", reason="test-only reference (extra: reference)")
import torch  # noqa: E402
from conftest import host_variant_on_first_adapter  # noqa: E402
from PIL import Image  # noqa: E402
from sd_tiny import tiny_unet, write_pipeline  # noqa: E402

import gpucore  # noqa: E402
from diffusion import load_pipeline  # noqa: E402

SIZE = 32  # tiny VAE: 2x downsampling, so 16x16 latents
PROMPT, NEGATIVE = "a lighthouse at dusk, oil painting", "blurry"
_RANDN_MODULES = (
    "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion",
    "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_img2img",
    "diffusers.pipelines.stable_diffusion.pipeline_stable_diffusion_inpaint",
    "diffusers.models.autoencoders.vae",
)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pipeline(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="module")
def inpaint_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_pipeline(tmp_path_factory.mktemp("tiny-sd-inpaint"), unet=tiny_unet(
        seed=5, in_channels=9))


def _same_draws(monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    rng = np.random.default_rng(seed)

    def randn_tensor(shape: Any, generator: Any = None, device: Any = None, dtype: Any = None,
                     layout: Any = None) -> torch.Tensor:
        return torch.from_numpy(rng.standard_normal(tuple(shape))).to(dtype or torch.float32)

    import importlib

    for name in _RANDN_MODULES:
        monkeypatch.setattr(importlib.import_module(name), "randn_tensor", randn_tensor)


def _reference(kind: str, folder: Path) -> Any:
    cls = {"txt2img": diffusers.StableDiffusionPipeline,
           "img2img": diffusers.StableDiffusionImg2ImgPipeline,
           "inpaint": diffusers.StableDiffusionInpaintPipeline}[kind]
    pipe = cls.from_pretrained(folder, safety_checker=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _as_uint8(images: np.ndarray) -> np.ndarray:
    return np.round(np.asarray(images) * 255).astype(np.uint8)


def _assert_images_match(ours: list[np.ndarray], theirs: np.ndarray) -> None:
    a = np.stack(ours).astype(np.int16)
    b = _as_uint8(theirs).astype(np.int16)
    assert a.shape == b.shape
    diff = np.abs(a - b)
    assert diff.mean() < 0.5 and diff.max() <= 4, (diff.mean(), diff.max())
    assert a.std() > 5, "degenerate (flat) image: the comparison would prove nothing"


def _picture(seed: int) -> Image.Image:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    base = np.stack([x * 8, y * 8, (x + y) * 4], axis=-1) % 256
    return Image.fromarray((base + rng.integers(0, 40, base.shape)).clip(0, 255).astype(np.uint8))


def _mask() -> Image.Image:
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[8:24, 4:20] = 255
    return Image.fromarray(mask)


@pytest.mark.parametrize("sampler", ["DDIM", "diffusers"])
def test_txt2img_matches_diffusers(device: gpucore.Device, model_dir: Path,
                                   monkeypatch: pytest.MonkeyPatch, sampler: str) -> None:
    """DDIM: the WebUI's timestep sampler, diffusers' DDIMScheduler on the model's config.
    "diffusers": the model folder's own scheduler, here switched to DPM-Solver++ with Karras
    sigmas (a multistep scheduler with its own timestep mapping)."""
    if sampler == "diffusers":
        host_variant_on_first_adapter(device, "the model folder's scheduler")
    ours = load_pipeline(model_dir, device=device)
    reference = _reference("txt2img", model_dir)
    if sampler == "diffusers":
        reference.scheduler = diffusers.DPMSolverMultistepScheduler.from_config(
            reference.scheduler.config, use_karras_sigmas=True)
        ours.scheduler_config = dict(reference.scheduler.config)
    result = ours.txt2img(PROMPT, negative_prompt=NEGATIVE, steps=4, cfg_scale=7.5, seed=7,
                          width=SIZE, height=SIZE, sampler=sampler, batch_size=2)
    _same_draws(monkeypatch, 7)
    expected = reference(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=4,
                         guidance_scale=7.5, height=SIZE, width=SIZE, num_images_per_prompt=2,
                         output_type="np").images
    _assert_images_match(result.images, expected)
    assert result.settings["seed"] == 7 and result.settings["sampler"] == sampler


def test_the_emphasis_mode_reaches_the_text_encoder(first_device: gpucore.Device,
                                                    model_dir: Path) -> None:
    """The request's emphasis mode (the WebUI's option) is the one its prompts are encoded
    with: "None" reads the brackets as text, the picture of the prompt with them escaped;
    "Original" weighs the word, another picture. The modes' own arithmetic is
    test_conditioning's."""
    pipe = load_pipeline(model_dir, device=first_device)

    def picture(prompt: str, emphasis: str) -> np.ndarray:
        return pipe.txt2img(prompt, steps=2, seed=3, width=SIZE, height=SIZE,
                            emphasis=emphasis).images[0].astype(int)

    weighted = "a lighthouse at (dusk:1.6), oil painting"
    as_text = picture(weighted, "None")
    np.testing.assert_array_equal(as_text, picture(weighted.replace("(", "\\(").replace(
        ")", "\\)"), "Original"))
    assert np.abs(as_text - picture(weighted, "Original")).mean() > 1


def test_same_seed_same_image(device: gpucore.Device, model_dir: Path) -> None:
    pipe = load_pipeline(model_dir, device=device)
    first = pipe.txt2img(PROMPT, steps=2, seed=3, width=SIZE, height=SIZE).images[0]
    again = pipe.txt2img(PROMPT, steps=2, seed=3, width=SIZE, height=SIZE).images[0]
    other = pipe.txt2img(PROMPT, steps=2, seed=4, width=SIZE, height=SIZE).images[0]
    np.testing.assert_array_equal(first, again)
    assert np.abs(first.astype(int) - other).mean() > 1


@pytest.mark.parametrize("sampler", ["Euler a", "DDIM"])
def test_denoising_loop_creates_nothing_after_its_first_step(
        first_device: gpucore.Device, model_dir: Path, sampler: str) -> None:
    """The UNet step is recorded once and replayed (gpustd.capture): after the first step no
    pipeline, bind group or buffer is created, whatever the number of steps. (The capture and
    the pool are host logic: the first adapter shows them.)"""
    device = first_device
    pipe = load_pipeline(model_dir, device=device)
    counts: list[tuple[int, int, int]] = []

    def on_step(done: int, total: int, latents: np.ndarray) -> None:
        counts.append((device.buffers_created, device.pipelines_created,
                       device.bind_groups_created))

    pipe.txt2img(PROMPT, negative_prompt=NEGATIVE, steps=5, seed=1, width=SIZE, height=SIZE,
                 sampler=sampler, on_step=on_step)
    assert len(counts) == 5
    assert counts[1:] == [counts[0]] * 4, counts


def test_img2img_matches_diffusers(device: gpucore.Device, model_dir: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    ours = load_pipeline(model_dir, device=device)
    image = _picture(1)
    result = ours.img2img(image, PROMPT, strength=0.6, steps=5, cfg_scale=5.0, seed=11,
                          width=SIZE, height=SIZE, sampler="DDIM")
    _same_draws(monkeypatch, 11)
    expected = _reference("img2img", model_dir)(
        PROMPT, image=image, strength=0.6, num_inference_steps=5, guidance_scale=5.0,
        output_type="np").images
    _assert_images_match(result.images, expected)
    assert result.settings["mode"] == "img2img" and result.settings["strength"] == 0.6


@pytest.mark.parametrize("which", ["inpainting-unet", "ordinary-unet"])
def test_inpaint_matches_diffusers(device: gpucore.Device, model_dir: Path, inpaint_dir: Path,
                                   monkeypatch: pytest.MonkeyPatch, which: str) -> None:
    if which == "ordinary-unet":
        host_variant_on_first_adapter(device, "inpainting with an ordinary UNet (mask blending)")
    folder = inpaint_dir if which == "inpainting-unet" else model_dir
    ours = load_pipeline(folder, device=device)
    assert ours.is_inpainting_model == (which == "inpainting-unet")
    # diffusers keeps the image's latents outside the mask with the ordinary UNet only; the
    # WebUI's samplers (DDIM) with every UNet: its parity shown with the folder's own
    # scheduler (DDIM too), whose pictures are diffusers' as they are (no overlay)
    webui = which == "ordinary-unet"
    image, mask = _picture(2), _mask()
    result = ours.inpaint(image, mask, PROMPT, steps=4, cfg_scale=6.0, seed=5, width=SIZE,
                          height=SIZE, sampler="DDIM" if webui else "diffusers")
    _same_draws(monkeypatch, 5)
    reference = _reference("inpaint", folder)
    expected = reference(
        PROMPT, image=image, mask_image=mask, num_inference_steps=4, guidance_scale=6.0,
        height=SIZE, width=SIZE, output_type="np").images
    if webui:  # the WebUI lays the original over what was not repainted: apply_overlay
        expected = np.stack([np.asarray(reference.image_processor.apply_overlay(
            mask, image, Image.fromarray(picture))) for picture in _as_uint8(expected)]) / 255
        outside = np.asarray(mask) == 0
        assert np.array_equal(result.images[0][outside], np.asarray(image)[outside])
    _assert_images_match(result.images, expected)


def test_latent_upscale_with_a_mask_only_masked_finds_blank(first_device: gpucore.Device,
                                                            model_dir: Path) -> None:
    """Resize mode 3 where "Only masked" finds the mask blank: the WebUI's img2img of the
    whole picture (its latents resized), the very pictures of that img2img."""
    pipe = load_pipeline(model_dir, device=first_device)
    picture = _picture(3).resize((40, 24))
    settings = dict(prompt=PROMPT, init_image=picture, strength=0.6, steps=2, cfg_scale=5.0,
                    sampler="Euler", seed=4, width=SIZE, height=SIZE, resize_mode=3)
    img2img = pipe.generate(**settings)
    with pytest.warns(UserWarning, match="the mask is blank"):
        blank = pipe.generate(**settings, mask=Image.new("L", (40, 24)), inpaint_full_res=True)
    assert np.array_equal(blank.images[0], img2img.images[0])


def test_bad_requests_are_clear_errors(device: gpucore.Device, model_dir: Path,
                                       inpaint_dir: Path) -> None:
    pipe = load_pipeline(model_dir, device=device)
    with pytest.raises(ValueError, match="multiple of 8"):
        pipe.txt2img(PROMPT, width=30, height=SIZE)
    with pytest.raises(ValueError, match="steps"):
        pipe.txt2img(PROMPT, steps=0, width=SIZE, height=SIZE)
    with pytest.raises(ValueError, match="unknown sampler"):
        pipe.txt2img(PROMPT, sampler="Eulerish", width=SIZE, height=SIZE)
    with pytest.raises(ValueError, match="strength"):
        pipe.img2img(_picture(0), PROMPT, strength=1.5, width=SIZE, height=SIZE)
    with pytest.raises(ValueError, match="leaves no step"):
        pipe.img2img(_picture(0), PROMPT, strength=0.1, steps=2, width=SIZE, height=SIZE)
    with pytest.raises(ValueError, match="inpainting model"):
        load_pipeline(inpaint_dir, device=device).txt2img(PROMPT, width=SIZE, height=SIZE)


def test_cli_writes_png_with_infotext(model_dir: Path, tmp_path: Path) -> None:
    import subprocess
    import sys

    from diffusion.infotext import parse_infotext, read_infotext

    if not gpucore.devices():
        pytest.skip("no GPU adapter present")
    out = tmp_path / "outputs"
    cmd = [sys.executable, "-m", "diffusion", "txt2img", "--model", str(model_dir), "--prompt",
           PROMPT, "--negative-prompt", NEGATIVE, "--steps", "2", "--seed", "42", "--width",
           str(SIZE), "--height", str(SIZE), "--sampler", "euler a", "--out", str(out)]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr
    written = [Path(line) for line in result.stdout.split()]
    assert len(written) == 1 and written[0].exists() and written[0].parent == out
    with Image.open(written[0]) as png:
        assert png.size == (SIZE, SIZE)
    settings = parse_infotext(read_infotext(written[0]))
    assert settings["prompt"] == PROMPT and settings["negative_prompt"] == NEGATIVE
    assert settings["seed"] == 42 and settings["steps"] == 2 and settings["sampler"] == "Euler a"
    bad = subprocess.run([*cmd[:-2], "--width", "33"], capture_output=True, text=True,
                         timeout=120, check=False)
    assert bad.returncode == 2 and "multiple of 8" in bad.stderr and "Traceback" not in bad.stderr


def test_single_file_checkpoint_generates_like_the_folder(first_device: gpucore.Device,
                                                          tmp_path: Path) -> None:
    """Key conversion and head inference are host-side: one adapter shows them (the models
    themselves run on every adapter above)."""
    from ldm_files import write_ldm
    from sd_tiny import tiny_text_encoder, tiny_vae

    # A single file stores no head counts: the loader infers SD1's (8 UNet heads; 64-wide
    # text-encoder heads, so 1 at this width). Tiny models with those heads load identically.
    unet, vae = tiny_unet(seed=8, attention_head_dim=8), tiny_vae(seed=9)
    text = tiny_text_encoder(seed=10, num_attention_heads=1)
    folder = write_pipeline(tmp_path / "folder", unet=unet, vae=vae, text_encoder=text)
    single = tmp_path / "tiny-sd1.safetensors"
    write_ldm(single, unet, vae, text)
    settings = dict(steps=2, seed=21, width=SIZE, height=SIZE, sampler="Euler")
    from_folder = load_pipeline(folder, device=first_device).txt2img(PROMPT, **settings)
    from_file = load_pipeline(single, device=first_device).txt2img(PROMPT, **settings)
    np.testing.assert_array_equal(from_file.images[0], from_folder.images[0])


def test_mis_shaped_tensor_is_a_weights_error_naming_file_and_key(tmp_path: Path) -> None:
    from safetensors.numpy import load_file, save_file

    from diffusion.loaders import WeightsError

    folder = write_pipeline(tmp_path / "broken")
    path = folder / "unet" / "diffusion_pytorch_model.safetensors"
    tensors = load_file(path)
    key = "conv_in.bias"
    tensors[key] = np.concatenate([tensors[key], tensors[key]])
    save_file(tensors, path)
    with pytest.raises(WeightsError, match=rf"{path.name}.*{key}: expected \(32,\), got \(64,\)"):
        load_pipeline(folder)


def test_textual_inversion_matches_diffusers(first_device: gpucore.Device, model_dir: Path,
                                             monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    """An embedding named in the prompt (WebUI format, 2 vectors) against diffusers'
    load_textual_inversion, whole txt2img with the same draws; the infotext's TI hashes."""
    import hashlib

    from safetensors.numpy import save_file

    from diffusion.infotext import format_infotext
    from diffusion.text.embeddings import EmbeddingDatabase

    vectors = np.random.default_rng(3).normal(0, 0.5, (2, 32)).astype(np.float32)
    path = tmp_path / "wuggle.safetensors"
    save_file({"emb_params": vectors}, str(path))
    prompt = "a wuggle at dusk, oil painting"
    ours = load_pipeline(model_dir, device=first_device)
    ours.embeddings = EmbeddingDatabase(tmp_path)
    result = ours.txt2img(prompt, negative_prompt=NEGATIVE, steps=3, cfg_scale=7.5, seed=7,
                          width=SIZE, height=SIZE, sampler="DDIM")
    reference = _reference("txt2img", model_dir)
    reference.load_textual_inversion(str(path), token="wuggle")
    _same_draws(monkeypatch, 7)
    expected = reference(prompt, negative_prompt=NEGATIVE, num_inference_steps=3,
                         guidance_scale=7.5, height=SIZE, width=SIZE, output_type="np").images
    _assert_images_match(result.images, expected)
    short = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
    assert f"TI hashes: \"wuggle: {short}\"" in format_infotext(result.settings)


def test_ddim_cfg_pp_runs_as_ddim_when_guidance_has_nothing_to_add(
        first_device: gpucore.Device, model_dir: Path) -> None:
    """DDIM CFG++ differs from DDIM only by guidance: with the prompt as its own negative the
    two are one sampler; with a real negative prompt they differ. Two steps: the first one
    re-noises (where CFG++ takes the unconditional prediction), the last one does not."""
    pipe = load_pipeline(model_dir, device=first_device)
    common = dict(steps=2, cfg_scale=7.5, seed=9, width=SIZE, height=SIZE)
    ddim = pipe.txt2img(PROMPT, negative_prompt=PROMPT, sampler="DDIM", **common)
    cfg_pp = pipe.txt2img(PROMPT, negative_prompt=PROMPT, sampler="DDIM CFG++", **common)
    np.testing.assert_array_equal(ddim.images[0], cfg_pp.images[0])
    strong = {**common, "cfg_scale": 60.0}  # CFG++ guides at scale / 12.5
    guided = pipe.txt2img(PROMPT, negative_prompt=NEGATIVE, sampler="DDIM CFG++", **strong)
    assert np.abs(guided.images[0].astype(int) - cfg_pp.images[0]).mean() > 1
    assert guided.settings["sampler"] == "DDIM CFG++"
