"""The Z-Image transformer against diffusers' ZImageTransformer2DModel on torch CPU (tiny
random weights)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from sd_tiny import state_dict
from support import assert_close
from zimage_tiny import ZIMAGE_TINY, tiny_zimage_transformer

import gpucore
from diffusion.models.z_image import ZImageTransformer2DModel
from gpustd import asarray

TOL = 1e-3


def _reference(model: torch.nn.Module, latents: np.ndarray, t: np.ndarray,
               captions: list[np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        out = model([torch.from_numpy(x[:, None]) for x in latents], torch.from_numpy(t),
                    [torch.from_numpy(c) for c in captions]).sample
    return torch.stack(out).squeeze(2).numpy()


def test_transformer_equals_diffusers(device: gpucore.Device) -> None:
    """Two pictures of 6 x 10 latents (15 patches, padded to 32) with captions of 7 and 45
    tokens (padded to 32 and 64): the per-picture sequences diffusers batches with masks."""
    reference = tiny_zimage_transformer()
    ours = ZImageTransformer2DModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(1)
    latents = rng.standard_normal((2, ZIMAGE_TINY["in_channels"], 6, 10)).astype(np.float32)
    t = np.array([0.25, 0.8], np.float32)
    captions = [rng.standard_normal((n, ZIMAGE_TINY["cap_feat_dim"])).astype(np.float32)
                for n in (7, 45)]
    expected = _reference(reference, latents, t, captions)

    def run(states: list[np.ndarray]) -> np.ndarray:
        return ours(asarray(latents, device=device), t,
                    [asarray(c, device=device) for c in states]).numpy()

    got = run(captions)
    assert_close(got, expected, tol=TOL)
    # the caption visibly matters (the test's premise), in ours as in diffusers'
    other = [captions[1][:7], captions[0]]
    changed = run(other)
    assert np.abs(changed - got).mean() > 0.1 * np.abs(got).mean()
    assert_close(changed, _reference(reference, latents, t, other), tol=TOL)


@pytest.mark.nodevice
def test_bad_configs_get_one_line() -> None:
    with pytest.raises(ValueError, match="Omni"):
        ZImageTransformer2DModel({**ZIMAGE_TINY, "siglip_feat_dim": 32})
    with pytest.raises(ValueError, match="axes_dims"):
        ZImageTransformer2DModel({**ZIMAGE_TINY, "axes_dims": (4, 4, 2)})


def test_transformer_f16(f16_device: gpucore.Device) -> None:
    """float16 weights, the captions float32 as the LLM encoder returns them: diffusers'
    float32 output to float16 error."""
    reference = tiny_zimage_transformer()
    ours = ZImageTransformer2DModel(dict(reference.config), dtype=np.float16,
                                    device=f16_device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(2)
    latents = rng.standard_normal((1, ZIMAGE_TINY["in_channels"], 8, 6)).astype(np.float32)
    t = np.array([0.5], np.float32)
    captions = [rng.standard_normal((19, ZIMAGE_TINY["cap_feat_dim"])).astype(np.float32)]
    expected = _reference(reference, latents, t, captions)
    got = ours(asarray(latents, dtype=np.float16, device=f16_device), t,
               [asarray(c, device=f16_device) for c in captions]).numpy()
    assert got.dtype == np.float16
    assert_close(got.astype(np.float32), expected, tol=2e-2)
