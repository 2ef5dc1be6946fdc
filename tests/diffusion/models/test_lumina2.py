"""The Lumina Image 2.0 transformer against diffusers' Lumina2Transformer2DModel on torch CPU
(tiny random weights)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from lumina2_tiny import LUMINA2_TINY, tiny_lumina2_transformer
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.models.lumina2 import Lumina2Transformer2DModel
from gpustd import asarray

TOL = 5e-5  # float32: measured 1.9e-5 (float16: 1.2e-2 against its 2e-2)
CHANNELS, WIDTH = LUMINA2_TINY["in_channels"], LUMINA2_TINY["cap_feat_dim"]


def _inputs(seed: int, batch: int, size: tuple[int, int], tokens: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    latents = rng.standard_normal((batch, CHANNELS, *size)).astype(np.float32)
    t = rng.uniform(0, 1, batch).astype(np.float32)
    states = rng.standard_normal((batch, tokens, WIDTH)).astype(np.float32)
    return latents, t, states


def _reference(model: torch.nn.Module, latents: np.ndarray, t: np.ndarray,
               states: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(latents), torch.from_numpy(t), torch.from_numpy(states),
                     torch.from_numpy(mask), return_dict=False)[0].numpy()


def _ours(reference: torch.nn.Module, device: gpucore.Device, dtype: type = np.float32
          ) -> Lumina2Transformer2DModel:
    ours = Lumina2Transformer2DModel(dict(reference.config), dtype=dtype, device=device)
    ours.load_state_dict(state_dict(reference))
    return ours


def test_transformer_equals_diffusers(device: gpucore.Device) -> None:
    """Two pictures of 6 x 10 latents (15 patches) with captions of 7 and 11 tokens padded
    to 14 (as Lumina2Pipeline pads to max_sequence_length) and masked: diffusers' masked
    batch; the caption visibly matters, and a picture's padding changes nothing."""
    reference = tiny_lumina2_transformer()
    ours = _ours(reference, device)
    latents, t, states = _inputs(1, 2, (6, 10), 14)
    mask = np.ones((2, 14), bool)
    mask[0, 7:] = False
    mask[1, 11:] = False

    def run(captions: np.ndarray, keep: np.ndarray) -> np.ndarray:
        return ours(asarray(latents, device=device), t, asarray(captions, device=device),
                    keep).numpy()

    got = run(states, mask)
    assert_close(got, _reference(reference, latents, t, states, mask), tol=TOL)
    other = states[::-1].copy()
    changed = run(other, mask[::-1].copy())
    assert np.abs(changed[1] - got[1]).mean() > 0.1 * np.abs(got[1]).mean()
    # the first picture alone, unpadded, as in the batch
    alone = ours(asarray(latents[:1], device=device), t[:1],
                 asarray(states[:1, :7], device=device), None).numpy()
    assert_close(alone, got[:1], tol=TOL)


def test_transformer_f16(f16_device: gpucore.Device) -> None:
    """float16 weights, the captions float32 as the LLM encoder returns them, one caption
    of 5 masked in 9: diffusers' float32 output to float16 error."""
    reference = tiny_lumina2_transformer()
    ours = _ours(reference, f16_device, np.float16)
    latents, t, states = _inputs(2, 2, (8, 6), 9)
    mask = np.ones((2, 9), bool)
    mask[1, 5:] = False
    expected = _reference(reference, latents, t, states, mask)
    got = ours(asarray(latents, dtype=np.float16, device=f16_device), t,
               asarray(states, device=f16_device), mask).numpy()
    assert got.dtype == np.float16
    assert_close(got.astype(np.float32), expected, tol=2e-2)


@pytest.mark.nodevice
def test_bad_configs_get_one_line() -> None:
    with pytest.raises(ValueError, match="axes_dim_rope"):
        Lumina2Transformer2DModel({**LUMINA2_TINY, "axes_dim_rope": (4, 4, 2)})
    with pytest.raises(ValueError, match="num_kv_heads"):
        Lumina2Transformer2DModel({**LUMINA2_TINY, "num_kv_heads": 3})


def test_bad_inputs_get_one_line(first_device: gpucore.Device) -> None:
    ours = Lumina2Transformer2DModel(LUMINA2_TINY, device=first_device)
    latents, t, states = _inputs(3, 1, (4, 4), 6)
    x, s = asarray(latents, device=first_device), asarray(states, device=first_device)
    with pytest.raises(ValueError, match="right"):
        ours(x, t, s, np.array([[0, 1, 1, 1, 1, 1]]))
    with pytest.raises(ValueError, match="patch size"):
        ours(asarray(latents[:, :, :3], device=first_device), t, s)
    with pytest.raises(ValueError, match="shorter prompt"):
        ours(x, t, asarray(np.zeros((1, 64, WIDTH), np.float32), device=first_device))
