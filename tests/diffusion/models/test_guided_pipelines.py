"""Whole pictures with a T2I-Adapter unit against diffusers' StableDiffusionAdapterPipeline and
with an SDXL ControlNet unit against StableDiffusionXLControlNetPipeline (tiny random models,
the model folder's scheduler, `rng="torch"` against diffusers' torch.Generator draws; the
tolerance of test_controlnet_pipeline and the SD tests)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

diffusers = pytest.importorskip("diffusers", reason="test-only reference (extra: reference)")
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from sd_tiny import UNET_TINY, randomized, tiny_unet, write_pipeline  # noqa: E402
from sdxl_tiny import UNET_SDXL_TINY, save_folder, sdxl_pipeline  # noqa: E402
from support import assert_input_matters  # noqa: E402
from test_controlnet import tiny_controlnet  # noqa: E402

import gpucore  # noqa: E402
from diffusion import load_pipeline  # noqa: E402
from diffusion.loaders.control.controlnet_file import load_controlnet, load_t2i_adapter  # noqa: E402
from diffusion.pipelines.control import ControlUnit  # noqa: E402

SIZE = 32  # the tiny VAEs halve: 16x16 latents
PROMPT, NEGATIVE = "a lighthouse at dusk, oil painting", "blurry"
# a UNet whose first level has attention, so that a full adapter's features (at the latent
# size, then halved) land where diffusers adds them: inside each CrossAttnDownBlock2D
_ADAPTER_UNET = dict(down_block_types=("CrossAttnDownBlock2D",) * 2,
                     up_block_types=("CrossAttnUpBlock2D",) * 2)


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    """torch's references on one thread: on a busy machine two threads spin against each
    other (a tiny SDXL ControlNet picture took 19 s on two threads, 0.2 s on one)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _control_map(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    control = ((np.hypot(x - 14, y - 17) < 9) * 255).astype(np.uint8)
    return np.repeat(control[:, :, None], 3, axis=2) | rng.integers(0, 30, (SIZE, SIZE, 3),
                                                                     dtype=np.uint8)


def _compare(got_images: list[np.ndarray], expected: np.ndarray) -> None:
    got = np.stack(got_images).astype(np.int16)
    want = np.round(expected * 255).astype(np.int16)
    assert got.shape == want.shape
    diff = np.abs(got - want)
    assert diff.mean() < 0.5 and diff.max() <= 4, (diff.mean(), diff.max())
    assert got.std() > 5


def test_t2i_adapter_txt2img_matches_diffusers(first_device: gpucore.Device,
                                               tmp_path: Path) -> None:
    """A full T2I-Adapter (channels of the UNet's levels) on SD 1.5: its features added
    inside the down blocks at every step, on both rows, times the weight."""
    model_dir = write_pipeline(tmp_path / "sd", unet=tiny_unet(1, **_ADAPTER_UNET))
    adapter = randomized(diffusers.T2IAdapter(in_channels=3, channels=[32, 64],
                                              num_res_blocks=2, downscale_factor=2,
                                              adapter_type="full_adapter"), 21)
    adapter.save_pretrained(tmp_path / "adapter")
    control = _control_map(22)

    ours = load_pipeline(model_dir, device=first_device)
    unit = ControlUnit(load_t2i_adapter(tmp_path / "adapter", device=first_device), control,
                       weight=0.8, schedule="diffusers")
    result = ours.txt2img(PROMPT, negative_prompt=NEGATIVE, steps=3, cfg_scale=7.5, seed=7,
                          width=SIZE, height=SIZE, sampler="diffusers", rng="torch",
                          control=[unit])

    reference = diffusers.StableDiffusionAdapterPipeline.from_pretrained(
        model_dir, adapter=adapter, safety_checker=None, requires_safety_checker=False)
    reference.set_progress_bar_config(disable=True)

    def run_reference(scale: float) -> np.ndarray:
        return reference(PROMPT, Image.fromarray(control), negative_prompt=NEGATIVE,
                         num_inference_steps=3, guidance_scale=7.5, height=SIZE, width=SIZE,
                         adapter_conditioning_scale=scale,
                         generator=torch.Generator().manual_seed(7), output_type="np").images

    expected = run_reference(0.8)
    _compare(result.images, expected)
    assert_input_matters(expected, run_reference(0.0), "the adapter")


def test_sdxl_controlnet_txt2img_matches_diffusers(first_device: gpucore.Device,
                                                   tmp_path: Path) -> None:
    """An SDXL ControlNet (text_time added embedding: the pooled text and the size ids reach
    it as they reach the UNet), stopping at 0.6 of the steps."""
    pipe = sdxl_pipeline("base", seed=30, scratch=tmp_path / "scratch")
    model_dir = save_folder(pipe, tmp_path / "sdxl")
    controlnet = tiny_controlnet(UNET_SDXL_TINY, seed=31)
    controlnet.save_pretrained(tmp_path / "controlnet")
    control = _control_map(32)

    ours = load_pipeline(model_dir, device=first_device)
    unit = ControlUnit(load_controlnet(tmp_path / "controlnet", device=first_device), control,
                       weight=0.8, guidance_end=0.6, schedule="diffusers")
    result = ours.txt2img(PROMPT, negative_prompt=NEGATIVE, steps=3, cfg_scale=6.0, seed=5,
                          width=SIZE, height=SIZE, sampler="diffusers", rng="torch",
                          control=[unit])

    reference = diffusers.StableDiffusionXLControlNetPipeline(**pipe.components,
                                                              controlnet=controlnet)
    reference.set_progress_bar_config(disable=True)

    def run_reference(scale: float) -> np.ndarray:
        return reference(PROMPT, image=Image.fromarray(control), negative_prompt=NEGATIVE,
                         num_inference_steps=3, guidance_scale=6.0, height=SIZE, width=SIZE,
                         controlnet_conditioning_scale=scale, control_guidance_end=0.6,
                         generator=torch.Generator().manual_seed(5), output_type="np").images

    expected = run_reference(0.8)
    _compare(result.images, expected)
    assert_input_matters(expected, run_reference(0.0), "the SDXL ControlNet")


def _same_draws(monkeypatch: pytest.MonkeyPatch, seed: int, *modules: str) -> None:
    """diffusers' randn_tensor drawing from numpy's generator, as our default rng does (see
    test_sd_pipeline)."""
    import importlib

    rng = np.random.default_rng(seed)

    def randn_tensor(shape: Any, generator: Any = None, device: Any = None, dtype: Any = None,
                     layout: Any = None) -> torch.Tensor:
        return torch.from_numpy(rng.standard_normal(tuple(shape))).to(dtype or torch.float32)

    for name in (*modules, "diffusers.models.autoencoders.vae"):
        monkeypatch.setattr(importlib.import_module(name), "randn_tensor", randn_tensor)


def test_inpaint_controlnet_matches_diffusers(first_device: gpucore.Device, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Inpainting (an ordinary UNet, mask-blended latents) with a ControlNet unit of the
    extension's inpaint module: its map is the picture with the mask in alpha, which reaches
    the ControlNet as diffusers' `make_inpaint_condition` makes it (-1 where the mask is set);
    against StableDiffusionControlNetInpaintPipeline."""
    from diffusion.pipelines.control_spec import ControlSpec

    model_dir = write_pipeline(tmp_path / "sd")
    controlnet = tiny_controlnet(UNET_TINY, seed=41)
    controlnet.save_pretrained(tmp_path / "control_v11p_sd15_inpaint")
    picture = _control_map(42) // 2 + np.random.default_rng(43).integers(
        0, 120, (SIZE, SIZE, 3), dtype=np.uint8)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[6:22, 9:27] = 255

    ours = load_pipeline(model_dir, device=first_device)
    spec = ControlSpec(model="control_v11p_sd15_inpaint", image=picture, mask=mask,
                       module="inpaint_global_harmonious", resize_mode="Just Resize")
    unit = spec.unit(load_controlnet(tmp_path / "control_v11p_sd15_inpaint",
                                     device=first_device), width=SIZE, height=SIZE)
    result = ours.inpaint(Image.fromarray(picture), Image.fromarray(mask), PROMPT,
                          negative_prompt=NEGATIVE, steps=4, cfg_scale=6.0, seed=5, width=SIZE,
                          height=SIZE, sampler="DDIM", control=[unit])

    reference = diffusers.StableDiffusionControlNetInpaintPipeline.from_pretrained(
        model_dir, controlnet=controlnet, safety_checker=None, requires_safety_checker=False)
    reference.set_progress_bar_config(disable=True)
    hint = picture.astype(np.float32) / 255  # diffusers' make_inpaint_condition
    hint[mask > 127] = -1.0
    hint_tensor = torch.from_numpy(hint.transpose(2, 0, 1)[None].copy())

    def run_reference(scale: float) -> np.ndarray:
        _same_draws(monkeypatch, 5,
                    "diffusers.pipelines.controlnet.pipeline_controlnet_inpaint")
        return reference(PROMPT, image=Image.fromarray(picture),
                         mask_image=Image.fromarray(mask), control_image=hint_tensor,
                         negative_prompt=NEGATIVE, num_inference_steps=4, guidance_scale=6.0,
                         height=SIZE, width=SIZE, controlnet_conditioning_scale=scale,
                         output_type="np").images

    expected = run_reference(1.0)
    # the WebUI lays the original over what was not repainted: diffusers' apply_overlay
    overlaid = np.stack([np.asarray(reference.image_processor.apply_overlay(
        Image.fromarray(mask), Image.fromarray(picture),
        Image.fromarray(np.round(image * 255).astype(np.uint8)))) for image in expected]) / 255
    _compare(result.images, overlaid)
    assert_input_matters(expected, run_reference(0.0), "the inpaint ControlNet")
