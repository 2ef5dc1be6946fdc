"""The FLUX.2 transformer against diffusers' Flux2Transformer2DModel on torch CPU (tiny
random weights)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from flux2_tiny import FLUX2_TINY, tiny_flux2_transformer
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.models.flux2 import Flux2Transformer2DModel
from gpustd import asarray

TOL = 1e-3


def _ids(height: int, width: int, text: int) -> tuple[np.ndarray, np.ndarray]:
    """Flux2KleinPipeline's positions: (0, row, column, 0) per patch, (0, 0, 0, l) per token."""
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    img = np.stack([np.zeros(height * width), rows.ravel(), cols.ravel(),
                    np.zeros(height * width)], axis=1)
    txt = np.stack([np.zeros(text), np.zeros(text), np.zeros(text), np.arange(text)], axis=1)
    return img.astype(np.int64), txt.astype(np.int64)


def _reference(model: torch.nn.Module, latents: np.ndarray, text: np.ndarray, t: np.ndarray,
               img_ids: np.ndarray, txt_ids: np.ndarray, guidance: np.ndarray | None
               ) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(latents), torch.from_numpy(text), torch.from_numpy(t),
                     torch.from_numpy(img_ids), torch.from_numpy(txt_ids),
                     None if guidance is None else torch.from_numpy(guidance)).sample.numpy()


@pytest.mark.parametrize("guidance_embeds", [False, True], ids=["klein", "guidance"])
def test_transformer_equals_diffusers(device: gpucore.Device, guidance_embeds: bool) -> None:
    """Two pictures of 5 x 7 patches, 11 text tokens: the flow to float32 error, and the
    text (and the guidance scale, where embedded) visibly changes it."""
    reference = tiny_flux2_transformer(config={"guidance_embeds": guidance_embeds})
    ours = Flux2Transformer2DModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(1)
    latents = rng.standard_normal((2, 35, FLUX2_TINY["in_channels"])).astype(np.float32)
    text = rng.standard_normal((2, 11, FLUX2_TINY["joint_attention_dim"])).astype(np.float32)
    t = np.array([0.3, 0.9], np.float32)
    guidance = np.array([4.0, 2.5], np.float32) if guidance_embeds else None
    img_ids, txt_ids = _ids(5, 7, 11)

    def run(states: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
        return ours(asarray(latents, device=device), asarray(states, device=device), t,
                    img_ids, txt_ids, scale).numpy()

    got = run(text, guidance)
    assert_close(got, _reference(reference, latents, text, t, img_ids, txt_ids, guidance),
                 tol=TOL)
    other = text[::-1].copy()
    changed = run(other, guidance)
    assert np.abs(changed - got).mean() > 0.03 * np.abs(got).mean()  # 30x the tolerance
    assert_close(changed, _reference(reference, latents, other, t, img_ids, txt_ids, guidance),
                 tol=TOL)
    if guidance_embeds:
        assert np.abs(run(text, guidance * 3) - got).mean() > 0.05 * np.abs(got).mean()


@pytest.mark.nodevice
def test_bad_config_gets_one_line() -> None:
    with pytest.raises(ValueError, match="axes_dims_rope"):
        Flux2Transformer2DModel({**FLUX2_TINY, "axes_dims_rope": (4, 4, 4, 2)})


def test_transformer_f16(f16_device: gpucore.Device) -> None:
    """float16 weights, float32 text states: diffusers' float32 output to float16 error."""
    reference = tiny_flux2_transformer()
    ours = Flux2Transformer2DModel(dict(reference.config), dtype=np.float16, device=f16_device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(2)
    latents = rng.standard_normal((1, 24, FLUX2_TINY["in_channels"])).astype(np.float32)
    text = rng.standard_normal((1, 9, FLUX2_TINY["joint_attention_dim"])).astype(np.float32)
    t = np.array([0.5], np.float32)
    img_ids, txt_ids = _ids(4, 6, 9)
    expected = _reference(reference, latents, text, t, img_ids, txt_ids, None)
    got = ours(asarray(latents, dtype=np.float16, device=f16_device),
               asarray(text, dtype=np.float16, device=f16_device), t, img_ids, txt_ids).numpy()
    assert got.dtype == np.float16
    assert_close(got.astype(np.float32), expected, tol=2e-2)
