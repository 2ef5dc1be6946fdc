"""T2I-Adapter against diffusers' T2IAdapter, and ControlNet / T2I-Adapter files (folders,
fp16 variants, lllyasviel's `control_model.*` single files) loading to diffusers' tensors."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from ldm_files import ldm_unet
from sd_tiny import UNET_TINY, randomized, state_dict
from support import assert_close
from test_controlnet import tiny_controlnet

import gpucore
import gpustd
from diffusion.loaders import WeightsError
from diffusion.loaders.control.controlnet_file import (
    controlnet_weights,
    load_controlnet,
    load_t2i_adapter,
)
from diffusion.models.t2i_adapter import avg_pool2x2

TOL = 1e-3


def tiny_adapter(kind: str, seed: int = 8) -> Any:
    import diffusers

    channels = {"full_adapter": [8, 16, 16], "full_adapter_xl": [8, 16, 16, 16],
                "light_adapter": [16, 32]}[kind]
    return randomized(diffusers.T2IAdapter(
        in_channels=3, channels=channels, num_res_blocks=2,
        downscale_factor=4 if kind == "full_adapter_xl" else 2, adapter_type=kind), seed)


@pytest.mark.parametrize("kind", ["full_adapter", "full_adapter_xl", "light_adapter"])
def test_t2i_adapter(first_device: gpucore.Device, kind: str, tmp_path: Path) -> None:
    """Through the folder loader: the features equal diffusers' (odd pooled sides included)."""
    reference = tiny_adapter(kind)
    reference.save_pretrained(tmp_path / kind)
    ours = load_t2i_adapter(tmp_path / kind, device=first_device)
    image = np.random.default_rng(9).uniform(0, 1, (2, 3, 24, 40)).astype(np.float32)
    with torch.no_grad():
        want = reference(torch.from_numpy(image))
    got = ours(gpustd.asarray(image, device=first_device))
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert_close(g.numpy(), w.numpy(), tol=TOL)


def test_avg_pool_odd_sides(first_device: gpucore.Device) -> None:
    x = np.random.default_rng(10).standard_normal((1, 3, 5, 7)).astype(np.float32)
    want = torch.nn.functional.avg_pool2d(torch.from_numpy(x), 2, 2, ceil_mode=True).numpy()
    assert_close(avg_pool2x2(gpustd.asarray(x, device=first_device)).numpy(), want, tol=1e-6)


def _original_file(reference: Any) -> dict[str, torch.Tensor]:
    """lllyasviel's layout of a diffusers ControlNet, written independently of our loader:
    the UNet part through the test's LDM inverse, the rest by diffusers' own table."""
    sd = {k: v.clone() for k, v in reference.state_dict().items()}
    unet_part = {k: v for k, v in sd.items() if not k.startswith("controlnet_")}
    out = {k.replace("model.diffusion_model.", "control_model."): v
           for k, v in ldm_unet(unet_part).items()}
    blocks = {int(m[1]) for k in sd if (m := re.match(r"controlnet_cond_embedding\.blocks\.(\d+)",
                                                      k))}
    for k, v in sd.items():
        if k.startswith("controlnet_down_blocks."):
            _, i, param = k.split(".")
            out[f"control_model.zero_convs.{i}.0.{param}"] = v
        elif k.startswith("controlnet_mid_block."):
            out[f"control_model.middle_block_out.0.{k.split('.')[-1]}"] = v
        elif m := re.fullmatch(r"controlnet_cond_embedding\.(conv_in|conv_out|blocks\.(\d+))\."
                               r"(\w+)", k):
            index = 0 if m[1] == "conv_in" else (2 * len(blocks) + 2 if m[1] == "conv_out"
                                                 else 2 * int(m[2]) + 2)
            out[f"control_model.input_hint_block.{index}.{m[3]}"] = v
    return out


def test_controlnet_files_load_the_folders_tensors(first_device: gpucore.Device,
                                                   tmp_path: Path) -> None:
    from diffusers.loaders.single_file_utils import convert_controlnet_checkpoint
    from safetensors.torch import save_file

    # lllyasviel's files (and diffusers' conversion) have SD's 4-level control image embedding
    reference = tiny_controlnet(UNET_TINY, conditioning_embedding_out_channels=(4, 8, 8, 16))
    want = state_dict(reference)
    original = _original_file(reference)
    # the test's layout is lllyasviel's: diffusers' own conversion reads it back
    converted = convert_controlnet_checkpoint(original, dict(reference.config))
    assert {k: v.numpy() for k, v in converted.items()}.keys() == want.keys()
    save_file(original, tmp_path / "control_tiny.safetensors")
    torch.save(original, tmp_path / "control_tiny.pth")  # how lllyasviel shares them
    reference.save_pretrained(tmp_path / "folder")
    copy.deepcopy(reference).half().save_pretrained(tmp_path / "folder", variant="fp16")

    weights = controlnet_weights(tmp_path / "control_tiny.safetensors")
    pickled = controlnet_weights(tmp_path / "control_tiny.pth")
    assert weights.keys() == want.keys() == pickled.keys()
    for key, value in want.items():
        np.testing.assert_array_equal(weights[key], value, err_msg=key)
        np.testing.assert_array_equal(pickled[key], value, err_msg=key)
    for field in ("block_out_channels", "conditioning_embedding_out_channels",
                  "layers_per_block", "cross_attention_dim", "down_block_types"):
        assert list(np.atleast_1d(weights.config[field])) == list(
            np.atleast_1d(reference.config[field])), field
    folder = controlnet_weights(tmp_path / "folder")
    fp16 = controlnet_weights(tmp_path / "folder", variant="fp16")
    for key, value in want.items():
        np.testing.assert_array_equal(folder[key], value, err_msg=key)
        assert fp16[key].dtype == np.float16
        np.testing.assert_array_equal(fp16[key], value.astype(np.float16), err_msg=key)

    # the tiny model's 2 heads are not in the weights: run the file with the folder's config
    model = load_controlnet(tmp_path / "control_tiny.safetensors", device=first_device,
                            config=dict(reference.config))
    rng = np.random.default_rng(11)
    sample = rng.standard_normal((1, 4, 8, 8)).astype(np.float32)
    context = rng.standard_normal((1, 5, 32)).astype(np.float32)
    image = rng.uniform(0, 1, (1, 3, 64, 64)).astype(np.float32)
    with torch.no_grad():
        _, mid = reference(torch.from_numpy(sample), 10, torch.from_numpy(context),
                           torch.from_numpy(image), return_dict=False)
    _, got = model(gpustd.asarray(sample, device=first_device), 10,
                   gpustd.asarray(context, device=first_device),
                   gpustd.asarray(image, device=first_device))
    assert_close(got.numpy(), mid.numpy(), tol=TOL)


@pytest.mark.nodevice
def test_diffusers_named_file(tmp_path: Path) -> None:
    """SDXL ControlNets are shared as one file under diffusers' names: it needs its config."""
    from safetensors.numpy import save_file
    from sdxl_tiny import UNET_SDXL_TINY

    reference = tiny_controlnet(UNET_SDXL_TINY, seed=16)
    want = state_dict(reference)
    save_file(want, str(tmp_path / "controlnet-sdxl.safetensors"))
    with pytest.raises(WeightsError, match="pass config="):
        controlnet_weights(tmp_path / "controlnet-sdxl.safetensors")
    weights = controlnet_weights(tmp_path / "controlnet-sdxl.safetensors", dtype="float16",
                                 config=dict(reference.config))
    assert weights.keys() == want.keys()
    for key, value in want.items():
        np.testing.assert_array_equal(weights[key], value.astype(np.float16), err_msg=key)


@pytest.mark.nodevice
def test_bad_controlnet_files(tmp_path: Path) -> None:
    from safetensors.numpy import save_file

    with pytest.raises(WeightsError, match="no such ControlNet"):
        controlnet_weights(tmp_path / "missing.safetensors")
    (tmp_path / "control.pth").write_bytes(b"\x80\x02")  # a truncated pickle
    with pytest.raises(WeightsError, match=r"control\.pth"):
        controlnet_weights(tmp_path / "control.pth")
    save_file({"model.diffusion_model.conv_in.weight": np.zeros((4, 4, 3, 3), np.float32)},
              str(tmp_path / "checkpoint.safetensors"))
    with pytest.raises(WeightsError, match="not a ControlNet"):
        controlnet_weights(tmp_path / "checkpoint.safetensors")
