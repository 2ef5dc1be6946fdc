"""The Helios transformer against diffusers' HeliosTransformer3DModel on torch CPU (a tiny
random model whose weights are scaled until the text visibly matters): a chunk with its
short, mid and long history, as HeliosPipeline calls it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from helios_tiny import HELIOS_TINY, tiny_helios_transformer
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.models.helios import HeliosTransformer3DModel
from gpustd import asarray

TOL = 2e-4  # measured 6.8e-5 at most, on flows up to 11 (f16: 3.6e-2, tol 2e-2 of rms)


def _inputs(seed: int, height: int, width: int) -> dict[str, Any]:
    """A 3-frame chunk at frames 6..8 after a history of long 4 frames (0..3), mid 2 (4, 5),
    short 2 (the first frame's 0 and 5): Helios' layout, smaller; H, W not multiples of the
    coarse patches, so the history is padded."""
    rng = np.random.default_rng(seed)

    def normal(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    channels = HELIOS_TINY["in_channels"]
    return dict(
        latents=normal(1, channels, 3, height, width), text=normal(1, 7, HELIOS_TINY["text_dim"]),
        other=normal(1, 7, HELIOS_TINY["text_dim"]), long=normal(1, channels, 4, height, width),
        mid=normal(1, channels, 2, height, width), short=normal(1, channels, 2, height, width),
        indices=dict(hidden=[6, 7, 8], long=[0, 1, 2, 3], mid=[4, 5], short=[0, 5]))


def _reference(model: Any, data: dict[str, Any], text: np.ndarray, t: float) -> np.ndarray:
    def tensor(a: Any) -> torch.Tensor:
        return torch.from_numpy(np.asarray(a))

    idx = data["indices"]
    with torch.no_grad():
        return model(tensor(data["latents"]), torch.tensor([t]), tensor(text),
                     indices_hidden_states=tensor([idx["hidden"]]),
                     **{f"indices_latents_history_{k}": tensor([idx[k]])
                        for k in ("short", "mid", "long")},
                     **{f"latents_history_{k}": tensor(data[k])
                        for k in ("short", "mid", "long")}).sample.numpy()


def _ours(model: HeliosTransformer3DModel, data: dict[str, Any], text: np.ndarray, t: float,
          device: gpucore.Device, dtype: Any = np.float32) -> np.ndarray:
    idx = data["indices"]
    history = {k: (asarray(data[k], dtype=dtype, device=device), idx[k])
               for k in ("short", "mid", "long")}
    return model(asarray(data["latents"], dtype=dtype, device=device), [t],
                 asarray(text, dtype=dtype, device=device),
                 indices_hidden_states=idx["hidden"], history=history).numpy()


def test_helios_transformer_equals_diffusers(device: gpucore.Device) -> None:
    reference = tiny_helios_transformer()
    ours = HeliosTransformer3DModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    data = _inputs(0, 6, 10)
    expected = _reference(reference, data, data["text"], 700.0)
    got = _ours(ours, data, data["text"], 700.0, device)
    assert got.shape == data["latents"].shape
    assert_close(got, expected, tol=TOL)
    # the text and the history both matter
    changed = _reference(reference, data, data["other"], 700.0)
    assert np.abs(changed - expected).mean() > 0.2 * np.abs(expected).mean()
    moved = _reference(reference, {**data, "long": data["mid"][:, :, [0, 1, 1, 0]]},
                       data["text"], 700.0)
    assert np.abs(moved - expected).mean() > 0.05 * np.abs(expected).mean()


def test_helios_transformer_without_history(first_device: gpucore.Device) -> None:
    """The first chunk's call without a history (diffusers' defaults: frames 0..F-1), and a
    config without amplified keys or the zero history timestep."""
    reference = tiny_helios_transformer(12, is_amplify_history=False,
                                        zero_history_timestep=False)
    ours = HeliosTransformer3DModel(dict(reference.config), device=first_device)
    ours.load_state_dict(state_dict(reference))
    data = _inputs(1, 4, 6)
    with torch.no_grad():
        expected = reference(torch.from_numpy(data["latents"]), torch.tensor([300.0]),
                             torch.from_numpy(data["text"])).sample.numpy()
    got = ours(asarray(data["latents"], device=first_device), [300.0],
               asarray(data["text"], device=first_device)).numpy()
    assert_close(got, expected, tol=TOL)
    assert_close(_ours(ours, data, data["text"], 300.0, first_device),
                 _reference(reference, data, data["text"], 300.0), tol=TOL)


def test_helios_transformer_f16(f16_device: gpucore.Device) -> None:
    reference = tiny_helios_transformer()
    ours = HeliosTransformer3DModel(dict(reference.config), dtype=np.float16, device=f16_device)
    ours.load_state_dict(state_dict(reference))
    data = _inputs(2, 6, 6)
    expected = _reference(reference, data, data["text"], 500.0)
    got = _ours(ours, data, data["text"], 500.0, f16_device, np.float16)
    assert got.dtype == np.float16
    # float16 rounding through 2 blocks: within 2e-2 on lavapipe; on an H200's matrix units
    # (float16 fragments, another summation order) 1.06x that at the worst element
    assert_close(got.astype(np.float32), expected, tol=3e-2)


@pytest.mark.nodevice
def test_helios_transformer_refuses_bad_configs() -> None:
    with pytest.raises(ValueError, match="rope_dim"):
        HeliosTransformer3DModel({**HELIOS_TINY, "rope_dim": (4, 4, 2)})
    with pytest.raises(ValueError, match="history_scale_mode"):
        HeliosTransformer3DModel({**HELIOS_TINY, "history_scale_mode": "other"})
