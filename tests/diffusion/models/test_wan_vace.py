"""Wan VACE's transformer against diffusers' WanVACETransformer3DModel on torch CPU (a tiny
random model whose weights are scaled until the control latents visibly matter)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from sd_tiny import state_dict
from support import assert_close
from wan_vace_tiny import VACE_TINY, tiny_vace_transformer

import gpucore
from diffusion.models.wan import WanTransformer3DModel
from diffusion.models.wan_vace import WanVACETransformer3DModel
from gpustd import asarray

# float32 measured within 1.7e-6 of diffusers (lavapipe), float16 within 2.2e-3
TOL, TOL_F16 = 2e-5, 5e-3
CONTROL = VACE_TINY["vace_in_channels"]


def _reference(model: torch.nn.Module, latents: np.ndarray, timestep: np.ndarray,
               text: np.ndarray, control: np.ndarray, scale: list[float]) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(latents), torch.from_numpy(timestep),
                     torch.from_numpy(text), control_hidden_states=torch.from_numpy(control),
                     control_hidden_states_scale=torch.tensor(scale)).sample.numpy()


def test_vace_transformer_equals_diffusers(device: gpucore.Device) -> None:
    """Two videos of 2 latent frames, 6 x 10 latents, one control for both (diffusers is
    given it twice), per-layer scales; the control and the scales visibly matter."""
    reference = tiny_vace_transformer()
    ours = WanVACETransformer3DModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(0)
    latents = rng.standard_normal((2, 4, 2, 6, 10)).astype(np.float32)
    text = rng.standard_normal((2, 7, VACE_TINY["text_dim"])).astype(np.float32)
    control = rng.standard_normal((1, CONTROL, 2, 6, 10)).astype(np.float32)
    timestep = np.array([700.0, 250.5], np.float32)
    both = np.repeat(control, 2, axis=0)
    expected = _reference(reference, latents, timestep, text, both, [1.0, 0.6])
    got = ours(asarray(latents, device=device), timestep, asarray(text, device=device),
               control_hidden_states=asarray(control, device=device),
               control_hidden_states_scale=[1.0, 0.6]).numpy()
    assert got.shape == latents.shape
    assert_close(got, expected, tol=TOL)
    # the control and the scales matter
    other = 2 * rng.standard_normal(both.shape).astype(np.float32)
    changed = _reference(reference, latents, timestep, text, other, [1.0, 0.6])
    assert np.abs(changed - expected).mean() > 0.2 * np.abs(expected).mean()
    rescaled = _reference(reference, latents, timestep, text, both, [1.0, 1.0])
    assert np.abs(rescaled - expected).mean() > 0.1 * np.abs(expected).mean()
    # the control embedded once equals the latents given each call (one float: every layer)
    context = ours.encode_control(asarray(both, device=device))
    again = ours(asarray(latents, device=device), timestep, asarray(text, device=device),
                 control_context=context, control_hidden_states_scale=1.0).numpy()
    assert_close(again, rescaled, tol=TOL)


def test_vace_scale_zero_is_plain_wan(first_device: gpucore.Device) -> None:
    """diffusers adds each hint times its scale: all scales 0 give the plain Wan transformer
    of the main weights (ours runs no VACE block then); a control of fewer frames counts
    the missing ones as zero tokens, as diffusers pads them."""
    import diffusers

    reference = tiny_vace_transformer()
    wan_config = {k: v for k, v in VACE_TINY.items() if not k.startswith("vace_")}
    plain = diffusers.WanTransformer3DModel(**wan_config).eval()
    plain.load_state_dict({k: v for k, v in reference.state_dict().items()
                           if not k.startswith("vace_")})
    ours = WanVACETransformer3DModel(dict(reference.config), device=first_device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(1)
    latents = rng.standard_normal((1, 4, 2, 4, 6)).astype(np.float32)
    text = rng.standard_normal((1, 5, VACE_TINY["text_dim"])).astype(np.float32)
    control = rng.standard_normal((1, CONTROL, 1, 4, 6)).astype(np.float32)
    timestep = np.array([400.0], np.float32)
    with torch.no_grad():
        wan = plain(torch.from_numpy(latents), torch.from_numpy(timestep),
                    torch.from_numpy(text)).sample.numpy()
    off = _reference(reference, latents, timestep, text, control, [0.0, 0.0])
    np.testing.assert_array_equal(off, wan)  # hint * 0 added: exactly Wan's
    args = (asarray(latents, device=first_device), timestep, asarray(text, device=first_device))
    got = ours(*args, control_hidden_states=asarray(control, device=first_device),
               control_hidden_states_scale=0.0).numpy()
    assert_close(got, wan, tol=TOL)
    # one control frame of two: padded
    expected = _reference(reference, latents, timestep, text, control, [0.5, 1.0])
    assert np.abs(expected - wan).mean() > 0.1 * np.abs(wan).mean()
    got = ours(*args, control_hidden_states=asarray(control, device=first_device),
               control_hidden_states_scale=[0.5, 1.0]).numpy()
    assert_close(got, expected, tol=TOL)
    # bad input: one line saying what to give
    with pytest.raises(ValueError, match="give one number or 2"):
        ours(*args, control_hidden_states=asarray(control, device=first_device),
             control_hidden_states_scale=[1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="control latents must be"):
        ours(*args, control_hidden_states=asarray(latents, device=first_device))
    with pytest.raises(ValueError, match="reads control latents"):
        ours(*args)
    # the plain Wan transformer's hook is unused without a control
    wan_ours = WanTransformer3DModel(wan_config, device=first_device)
    wan_ours.load_state_dict(state_dict(plain))
    assert_close(wan_ours(*args).numpy(), wan, tol=TOL)


def test_vace_transformer_f16(f16_device: gpucore.Device) -> None:
    reference = tiny_vace_transformer()
    ours = WanVACETransformer3DModel(dict(reference.config), dtype=np.float16,
                                     device=f16_device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(3)
    latents = rng.standard_normal((1, 4, 2, 6, 10)).astype(np.float32)
    text = rng.standard_normal((1, 5, VACE_TINY["text_dim"])).astype(np.float32)
    control = rng.standard_normal((1, CONTROL, 2, 6, 10)).astype(np.float32)
    timestep = np.array([500.0], np.float32)
    expected = _reference(reference, latents, timestep, text, control, [1.0, 1.0])
    got = ours(asarray(latents, dtype=np.float16, device=f16_device), timestep,
               asarray(text, dtype=np.float16, device=f16_device),
               control_hidden_states=asarray(control, device=f16_device)).numpy()
    assert got.dtype == np.float16
    assert_close(got.astype(np.float32), expected, tol=TOL_F16)


@pytest.mark.nodevice
def test_vace_config_refused() -> None:
    with pytest.raises(ValueError, match="include 0"):
        WanVACETransformer3DModel({**VACE_TINY, "vace_layers": [1, 2]})
    with pytest.raises(ValueError, match="include 0"):
        WanVACETransformer3DModel({**VACE_TINY, "vace_layers": [0, 3]})


def test_vace_folder_reads_back(first_device: gpucore.Device, tmp_path: Path) -> None:
    """The tiny transformer folder (diffusers' save_pretrained) builds ours from its
    config.json (diffusers' extra fields included) and its safetensors keys."""
    from safetensors.numpy import load_file
    from wan_vace_tiny import tiny_vace_transformer_folder

    reference = tiny_vace_transformer_folder(tmp_path / "transformer", seed=22)
    config = json.loads((tmp_path / "transformer" / "config.json").read_text())
    assert config["_class_name"] == "WanVACETransformer3DModel"
    ours = WanVACETransformer3DModel(config, device=first_device)
    ours.load_state_dict(load_file(
        tmp_path / "transformer" / "diffusion_pytorch_model.safetensors"))
    rng = np.random.default_rng(4)
    latents = rng.standard_normal((1, 4, 1, 2, 4)).astype(np.float32)
    text = rng.standard_normal((1, 3, VACE_TINY["text_dim"])).astype(np.float32)
    control = rng.standard_normal((1, CONTROL, 1, 2, 4)).astype(np.float32)
    timestep = np.array([900.0], np.float32)
    expected = _reference(reference, latents, timestep, text, control, [1.0, 1.0])
    got = ours(asarray(latents, device=first_device), timestep,
               asarray(text, device=first_device),
               control_hidden_states=asarray(control, device=first_device)).numpy()
    assert_close(got, expected, tol=TOL)
