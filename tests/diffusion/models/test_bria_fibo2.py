"""The Bria FIBO 2 transformer against diffusers' BriaFibo2Transformer2DModel on torch CPU
(tiny, random): float32 with a latent grid no tile divides and a prompt length between the
gist limits, with a context picture (an edit's), and float16; the Perceiver's bundle and an
injection block's bundle each visibly matter; the gist count as diffusers'."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from bria_fibo2_tiny import FIBO2_TINY, tiny_fibo2_transformer
from sd_tiny import state_dict
from support import assert_close

import gpucore
import gpustd
from diffusion.models.bria_fibo2 import BriaFibo2Transformer2DModel, gist_count

HEIGHT, WIDTH, TEXT = 6, 14, 19  # 3 x 7 patches; 19 tokens: 8 gist tokens
BUNDLES = 1 + len(FIBO2_TINY["injection_layer_ids"])


def _inputs(rng: np.random.Generator, text: int = TEXT) -> tuple[np.ndarray, np.ndarray]:
    latents = rng.standard_normal((1, FIBO2_TINY["in_channels"], HEIGHT, WIDTH))
    bundles = rng.standard_normal((1, BUNDLES, text, FIBO2_TINY["cap_feat_dim"]))
    return latents.astype(np.float32), bundles.astype(np.float32)


def _reference(model: object, latents: np.ndarray, bundles: np.ndarray, t: float,
               contexts: list[np.ndarray] | None = None) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(latents), torch.tensor([t]),  # type: ignore[operator]
                     torch.from_numpy(bundles),
                     context_latents=None if contexts is None else [
                         torch.from_numpy(c) for c in contexts]).sample.numpy()


def _ours(model: BriaFibo2Transformer2DModel, latents: np.ndarray, bundles: np.ndarray,
          t: float, contexts: list[np.ndarray] | None = None,
          dtype: object = np.float32) -> np.ndarray:
    device = model.device
    texts = [gpustd.asarray(bundles[:, k], dtype=dtype, device=device)
             for k in range(bundles.shape[1])]
    got = model(gpustd.asarray(latents, dtype=dtype, device=device), t, texts,
                [gpustd.asarray(c, dtype=dtype, device=device) for c in contexts or []])
    assert got.dtype == dtype
    return got.numpy().astype(np.float32)


def test_fibo2_transformer(first_device: gpucore.Device) -> None:
    """float32 against diffusers; the Perceiver's bundle and the last injection block's each
    visibly matter (redrawn)."""
    reference = tiny_fibo2_transformer()
    ours = BriaFibo2Transformer2DModel(dict(reference.config), device=first_device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(3)
    latents, bundles = _inputs(rng)
    expected = _reference(reference, latents, bundles, 0.83)
    # the worst element's |error| / (rms + |expected|) measured on lavapipe: 3.3e-5. The
    # timestep's sin and cos features, of arguments up to 1000, round at ~5e-5 in float32 (an
    # ulp of the argument) and the tiny model's large modulations carry that through: diffusers'
    # own float32 output is 7.8e-5 from the model run in float64 throughout
    assert_close(_ours(ours, latents, bundles, 0.83), expected, tol=1e-4)
    for k in (0, BUNDLES - 1):
        changed = bundles.copy()
        changed[:, k] = np.random.default_rng(9 + k).standard_normal(changed[:, k].shape)
        other = _reference(reference, latents, changed, 0.83)
        assert np.abs(other - expected).mean() > 0.05 * np.abs(expected).mean()


def test_fibo2_transformer_context(first_device: gpucore.Device) -> None:
    """float32 against diffusers with a context picture (an edit's) of another size, which
    visibly matters."""
    reference = tiny_fibo2_transformer()
    ours = BriaFibo2Transformer2DModel(dict(reference.config), device=first_device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(6)
    latents, bundles = _inputs(rng)
    context = [rng.standard_normal((1, FIBO2_TINY["in_channels"], 4, 6)).astype(np.float32)]
    expected = _reference(reference, latents, bundles, 0.4, context)
    # measured on lavapipe: 2e-5 (as above)
    assert_close(_ours(ours, latents, bundles, 0.4, context), expected, tol=1e-4)
    alone = _reference(reference, latents, bundles, 0.4)
    assert np.abs(alone - expected).mean() > 0.05 * np.abs(expected).mean()


def test_fibo2_transformer_f16(f16_device: gpucore.Device) -> None:
    """float16 weights and activations against the float32 reference."""
    reference = tiny_fibo2_transformer()
    ours = BriaFibo2Transformer2DModel(dict(reference.config), dtype=np.float16,
                                       device=f16_device)
    ours.load_state_dict(state_dict(reference))
    latents, bundles = _inputs(np.random.default_rng(4), text=33)
    expected = _reference(reference, latents, bundles, 0.5)
    # measured on lavapipe: 3e-3 (float16 rounding through every block)
    assert_close(_ours(ours, latents, bundles, 0.5, dtype=np.float16), expected, tol=1e-2)


def test_fibo2_refusals(first_device: gpucore.Device) -> None:
    with pytest.raises(ValueError, match="must add up to the head dim"):
        BriaFibo2Transformer2DModel({**FIBO2_TINY, "axes_dims": (4, 4, 4)},
                                    device=first_device)
    ours = BriaFibo2Transformer2DModel(FIBO2_TINY, device=first_device)
    latents, bundles = _inputs(np.random.default_rng(5))
    with pytest.raises(ValueError, match="3 text bundles; this transformer reads 6"):
        _ours(ours, latents, bundles[:, :3], 0.5)


@pytest.mark.nodevice
def test_gist_count() -> None:
    """diffusers' compute_gist_count, at the real config and the tiny one."""
    from diffusers.models.transformers.transformer_bria_fibo2 import compute_gist_count

    real = {"min_num_gist_tokens": 256, "max_num_gist_tokens": 512, "gist_step": 64,
            "gist_min_text_len": 256, "gist_max_text_len": 2048}
    for cfg in (real, FIBO2_TINY):
        lengths = [1, 8, 19, 33, 40, 300, 1000, 2047, 5000]
        expected = compute_gist_count(lengths, cfg["min_num_gist_tokens"],
                                      cfg["max_num_gist_tokens"], cfg["gist_step"],
                                      cfg["gist_min_text_len"], cfg["gist_max_text_len"])
        assert [gist_count(n, cfg) for n in lengths] == expected
