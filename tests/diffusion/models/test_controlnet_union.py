"""SDXL ControlNet Union (xinsir's, diffusers' ControlNetUnionModel) against diffusers: the
model's residuals, and whole pictures against StableDiffusionXLControlNetUnionPipeline for two
control types (tiny random models on torch CPU; the model folder's scheduler, `rng="torch"`)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

diffusers = pytest.importorskip("diffusers", reason="test-only reference (extra: reference)")
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from sd_tiny import randomized  # noqa: E402
from sdxl_tiny import UNET_SDXL_TINY, save_folder, sdxl_pipeline  # noqa: E402
from support import assert_close  # noqa: E402

import gpucore  # noqa: E402
import gpustd  # noqa: E402
from diffusion import load_pipeline  # noqa: E402
from diffusion.loaders.control.catalog import load_control_model  # noqa: E402
from diffusion.loaders.control.controlnet_file import load_controlnet  # noqa: E402
from diffusion.loaders.errors import WeightsError  # noqa: E402
from diffusion.models.controlnet_union import ControlNetUnionModel  # noqa: E402
from diffusion.pipelines.control import ControlUnit  # noqa: E402
from diffusion.pipelines.control_spec import ControlSpec  # noqa: E402

SIZE = 32  # the tiny VAE halves: 16x16 latents
PROMPT, NEGATIVE = "a lighthouse at dusk, oil painting", "blurry"
_UNET_ONLY = ("up_block_types", "out_channels", "sample_size")
TYPES = 6


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_union(seed: int, scale: float = 0.2) -> Any:
    """diffusers' ControlNetUnionModel of the tiny SDXL UNet, every weight random."""
    config = {k: v for k, v in UNET_SDXL_TINY.items() if k not in _UNET_ONLY}
    return randomized(diffusers.ControlNetUnionModel(
        **config, conditioning_embedding_out_channels=(8, 16), num_control_type=TYPES,
        num_trans_channel=32, num_trans_head=4, num_trans_layer=2, num_proj_channel=32),
        seed, scale)


def _control_map(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    control = ((np.hypot(x - 14, y - 17) < 9) * 255).astype(np.uint8)
    return np.repeat(control[:, :, None], 3, axis=2) | rng.integers(0, 30, (SIZE, SIZE, 3),
                                                                     dtype=np.uint8)


def test_union_residuals_match_diffusers(first_device: gpucore.Device, tmp_path: Path) -> None:
    """Down and mid residuals for a batch of three (the condition transformer attends along
    the batch, as diffusers' nn.MultiheadAttention without batch_first), 5x7 latents."""
    reference = tiny_union(41)
    reference.save_pretrained(tmp_path / "union")
    ours = load_controlnet(tmp_path / "union", device=first_device)
    assert isinstance(ours, ControlNetUnionModel) and ours.union
    rng = np.random.default_rng(3)
    batch, mode = 3, 4
    sample = rng.standard_normal((batch, 4, 5, 7)).astype(np.float32)
    context = rng.standard_normal((batch, 7, 64)).astype(np.float32)
    image = rng.uniform(0, 1, (batch, 3, 10, 14)).astype(np.float32)
    text = rng.standard_normal((batch, 32)).astype(np.float32)
    ids = rng.uniform(0, 64, (batch, 6)).astype(np.float32)
    one_hot = torch.zeros(batch, TYPES)
    one_hot[:, mode] = 1
    with torch.no_grad():
        down, mid = reference(
            torch.from_numpy(sample), 321.0, torch.from_numpy(context),
            [torch.from_numpy(image)], one_hot, [mode], conditioning_scale=0.7,
            added_cond_kwargs={"text_embeds": torch.from_numpy(text),
                               "time_ids": torch.from_numpy(ids)}, return_dict=False)
    got_down, got_mid = ours(gpustd.asarray(sample, device=first_device), 321.0,
                             gpustd.asarray(context, device=first_device),
                             gpustd.asarray(image, device=first_device),
                             {"text_embeds": text, "time_ids": ids}, conditioning_scale=0.7,
                             union_mode=mode)
    for got, want in zip([*got_down, got_mid], [*down, mid]):
        assert_close(got.numpy(), want.numpy(), tol=1e-3)
    with pytest.raises(ValueError, match=r"control type, 0 \.\. 5"):
        ours(gpustd.asarray(sample, device=first_device), 321.0,
             gpustd.asarray(context, device=first_device),
             gpustd.asarray(image, device=first_device), {"text_embeds": text, "time_ids": ids})


def test_union_single_file_reads_the_config_beside(first_device: gpucore.Device,
                                                   tmp_path: Path) -> None:
    """The folder's one .safetensors in models/ControlNet: its config beside it as NAME.json;
    without one, a line saying so. A folder whose config names xinsir's class."""
    reference = tiny_union(42)
    reference.save_pretrained(tmp_path / "union")
    folder = tmp_path / "ControlNet"
    folder.mkdir()
    single = folder / "xinsir-union.safetensors"
    (tmp_path / "union" / "diffusion_pytorch_model.safetensors").rename(single)
    with pytest.raises(WeightsError, match=r"needs its folder.s config\.json beside it"):
        load_controlnet(single, device=first_device)
    config = json.loads((tmp_path / "union" / "config.json").read_text())
    # as ProMax's file beside the plain model's config: the types are the file's
    (folder / "xinsir-union.json").write_text(json.dumps({**config, "num_control_type": 8}))
    loaded = load_controlnet(single, device=first_device)
    assert isinstance(loaded, ControlNetUnionModel)
    assert loaded.config["num_control_type"] == TYPES
    # xinsir's folder names its own class; the catalog takes it as a ControlNet
    (tmp_path / "union" / "config.json").write_text(
        json.dumps({**config, "_class_name": "ControlNetModel_Union"}))
    single.rename(tmp_path / "union" / "diffusion_pytorch_model.safetensors")
    assert isinstance(load_control_model(tmp_path / "union", device=first_device),
                      ControlNetUnionModel)


def test_union_txt2img_matches_diffusers(first_device: gpucore.Device, tmp_path: Path) -> None:
    """Pictures through a ControlNet Union unit equal StableDiffusionXLControlNetUnionPipeline's
    for two control types; the control and the type each change the picture well beyond the
    tolerance."""
    pipe = sdxl_pipeline("base", seed=30, scratch=tmp_path / "scratch")
    model_dir = save_folder(pipe, tmp_path / "sdxl")
    controlnet = tiny_union(43, scale=0.6)
    controlnet.save_pretrained(tmp_path / "union")
    control = _control_map(44)

    ours = load_pipeline(model_dir, device=first_device)
    union = load_controlnet(tmp_path / "union", device=first_device)
    reference = diffusers.StableDiffusionXLControlNetUnionPipeline(**pipe.components,
                                                                   controlnet=controlnet)
    reference.set_progress_bar_config(disable=True)

    def run_reference(mode: int, scale: float = 1.0) -> np.ndarray:
        return reference(PROMPT, control_image=[Image.fromarray(control)], control_mode=[mode],
                         negative_prompt=NEGATIVE, num_inference_steps=2, guidance_scale=6.0,
                         height=SIZE, width=SIZE, controlnet_conditioning_scale=scale,
                         generator=torch.Generator().manual_seed(5), output_type="np").images

    def run_ours(mode: int) -> np.ndarray:
        # mode 3 as the CLI and the server give it: the extension's unit with union_mode
        unit = ControlSpec(model="union", image=control, union_mode=mode).unit(
            union, width=SIZE, height=SIZE) if mode == 3 else ControlUnit(
            union, control, schedule="diffusers", union_mode=mode)
        assert unit.union_mode == mode
        result = ours.txt2img(PROMPT, negative_prompt=NEGATIVE, steps=2, cfg_scale=6.0,
                              seed=5, width=SIZE, height=SIZE, sampler="diffusers",
                              rng="torch", control=[unit])
        return np.stack(result.images).astype(np.float64) / 255

    tolerance = 0.5 / 255
    pictures = {}
    for mode in (1, 3):
        expected = run_reference(mode)
        pictures[mode] = got = run_ours(mode)
        assert got.shape == expected.shape
        assert np.abs(got - expected).mean() < tolerance, (mode, np.abs(got - expected).mean())
    without = run_reference(1, scale=0.0)
    assert np.abs(pictures[1] - without).mean() > 10 * tolerance
    assert np.abs(pictures[1] - pictures[3]).mean() > 10 * tolerance
    with pytest.raises(ValueError, match="is a ControlNet Union: give its control type"):
        run_ours(TYPES)
