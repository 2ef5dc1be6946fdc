"""The Qwen-Image 2.1 transformer (prompt prefix once, image tokens per step) against
diffusers' QwenImage21Transformer2DModel's full forward on torch CPU (tiny random weights)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from diffusers.models.transformers import transformer_qwenimage21 as diffusers21
from sd_tiny import randomized, state_dict
from support import assert_close

import gpucore
from diffusion.models.qwen_image21 import QwenImage21Transformer2DModel, qwen_image21_positions
from gpustd import asarray

TINY: dict[str, Any] = dict(
    patch_size=1, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=16,
    num_attention_heads=2, context_in_dim=32, mlp_ratio=3, axes_dims_rope=(4, 6, 6))
# measured up to 5.6e-5 of the output's rms: the timestep's sinusoid of arguments up to 1000
# rad, rounded in float32 by each side's own frequencies (1.2e-5 at t = 0)
TOL = 1e-4


def _tiny_reference() -> Any:
    """diffusers' model of TINY, weights scaled so the prompt visibly matters."""
    return randomized(diffusers21.QwenImage21Transformer2DModel(**TINY), 11, scale=0.4)


def _reference(model: Any, latents: np.ndarray, text: np.ndarray, keep: np.ndarray,
               t: np.ndarray, rows: int, columns: int) -> np.ndarray:
    """diffusers' uncached forward (its default SDPA processor), the image's tokens; the
    pipeline's img_mask: one slot per 2 x 2 latents after the prompt."""
    batch, length = keep.shape
    slots = torch.cat([torch.zeros(batch, length, dtype=torch.bool),
                       torch.ones(batch, rows * columns // 4, dtype=torch.bool)], dim=1)
    with torch.no_grad():
        out = model(torch.from_numpy(latents), torch.from_numpy(text), torch.from_numpy(t),
                    [[(1, rows, columns)]] * batch, slots,
                    torch.from_numpy(keep)).sample
    return out[:, -rows * columns:].numpy()


def test_transformer_equals_diffusers(device: gpucore.Device) -> None:
    """Two prompts (9 tokens and 6 right-padded to 9) and 5 x 4 latents (odd rows: the
    centred grid); one prefix serves two timesteps."""
    reference = _tiny_reference()
    ours = QwenImage21Transformer2DModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(3)
    rows, columns = 5, 4
    latents = rng.standard_normal((2, rows * columns, TINY["in_channels"])).astype(np.float32)
    text = rng.standard_normal((2, 9, TINY["context_in_dim"])).astype(np.float32)
    keep = np.ones((2, 9), bool)
    keep[1, 6:] = False
    x = asarray(latents, device=device)
    prefix = ours.prefix(asarray(text, device=device), keep)
    for t in (np.array([0.9, 0.3], np.float32), np.array([0.05, 0.6], np.float32)):
        got = ours(x, t, rows, columns, prefix).numpy()
        assert_close(got, _reference(reference, latents, text, keep, t, rows, columns), tol=TOL)
    # the prompt visibly matters (the test's premise)
    other = text[::-1].copy()
    changed = ours(x, t, rows, columns, ours.prefix(asarray(other, device=device), keep))
    assert np.abs(changed.numpy() - got).mean() > 0.1 * np.abs(got).mean()
    # the padding does not: other values there leave the flow as it was
    padded = text.copy()
    padded[1, 6:] = rng.standard_normal((3, TINY["context_in_dim"])) * 10
    again = ours(x, t, rows, columns, ours.prefix(asarray(padded, device=device), keep))
    np.testing.assert_array_equal(again.numpy(), got)


def test_transformer_f16(f16_device: gpucore.Device) -> None:
    """float16 weights and latents, the prompt's states float32 as the encoder returns them:
    diffusers' float32 output to float16 error (measured 1.2e-2)."""
    reference = _tiny_reference()
    ours = QwenImage21Transformer2DModel(dict(reference.config), dtype=np.float16,
                                         device=f16_device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(4)
    rows, columns = 2, 6
    latents = rng.standard_normal((1, rows * columns, TINY["in_channels"])).astype(np.float32)
    text = rng.standard_normal((1, 7, TINY["context_in_dim"])).astype(np.float32)
    t = np.array([0.5], np.float32)  # exact in float16, as diffusers rounds it
    prefix = ours.prefix(asarray(text, device=f16_device))
    got = ours(asarray(latents, dtype=np.float16, device=f16_device), t, rows, columns, prefix)
    assert got.dtype == np.float16
    assert_close(got.numpy().astype(np.float32), _reference(
        reference, latents, text, np.ones((1, 7), bool), t, rows, columns), tol=2e-2)


@pytest.mark.nodevice
def test_positions_follow_diffusers() -> None:
    """A layout with condition-image blocks inside the prompt (Qwen-Image-Edit 2.1's)."""
    axes = TINY["axes_dims_rope"]
    layout: list[int | tuple[int, int]] = [3, (2, 3), 2, (3, 3), 4, (5, 4)]
    image = [isinstance(item, tuple) for item in layout]
    pad_mask = torch.tensor([flag for item, flag in zip(layout, image) for _ in range(
        item[0] * item[1] if isinstance(item, tuple) else item)])
    shapes = [(1, *item) for item in layout if isinstance(item, tuple)]
    freqs = diffusers21.QwenImage21Rope(theta=10000, axes_dim=list(axes))(shapes, pad_mask, "cpu")
    angles = np.angle(freqs.numpy())
    ids = qwen_image21_positions(layout)
    offset = 0
    for axis, dim in enumerate(axes):
        scales = 1.0 / 10000 ** (np.arange(0, dim, 2) / dim)
        expected = np.angle(np.exp(1j * np.outer(ids[:, axis], scales)))
        assert_close(angles[:, offset:offset + dim // 2], expected, tol=1e-4)
        offset += dim // 2


@pytest.mark.nodevice
def test_bad_input_gets_one_line() -> None:
    with pytest.raises(ValueError, match="causal_condition"):
        QwenImage21Transformer2DModel({**TINY, "causal_condition": False})
    with pytest.raises(ValueError, match="rotary positions"):
        qwen_image21_positions([9000, (4, 4)])
