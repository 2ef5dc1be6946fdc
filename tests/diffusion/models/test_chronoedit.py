"""The ChronoEdit transformer against diffusers' ChronoEditTransformer3DModel on torch CPU (a
tiny random model whose weights are scaled until the instruction and the picture visibly
matter): the two-frame edit with its spread rotary positions, a longer temporal-reasoning
video, float32 and float16."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from chronoedit_tiny import CHRONOEDIT_TINY, tiny_chronoedit_transformer
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.models.chronoedit import ChronoEditTransformer3DModel
from gpustd import asarray

TOL = 1e-3


def _inputs(seed: int, frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latents (1, 12, frames, 6, 10) (sides not multiples of a tile), 512 text states (as
    the pipeline's, which diffusers splits the image's off: 7 tokens' states, zeros after),
    5 CLIP states."""
    rng = np.random.default_rng(seed)
    latents = rng.standard_normal((1, 12, frames, 6, 10)).astype(np.float32)
    text = np.zeros((1, 512, CHRONOEDIT_TINY["text_dim"]), np.float32)
    text[:, :7] = rng.standard_normal((1, 7, CHRONOEDIT_TINY["text_dim"]))
    image = rng.standard_normal((1, 5, CHRONOEDIT_TINY["image_dim"])).astype(np.float32)
    return latents, text, image


def _flow(model: torch.nn.Module, latents: np.ndarray, text: np.ndarray, image: np.ndarray,
          t: float) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(latents), torch.tensor([t]), torch.from_numpy(text),
                     encoder_hidden_states_image=torch.from_numpy(image)).sample.numpy()


@pytest.mark.parametrize("frames", [2, 3])
def test_chronoedit_transformer_equals_diffusers(device: gpucore.Device, frames: int) -> None:
    """2 latent frames: the edit (its positions spread); 3: a reasoning video (Wan's)."""
    import diffusers

    reference = tiny_chronoedit_transformer()
    ours = ChronoEditTransformer3DModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    latents, text, image = _inputs(frames, frames)
    expected = _flow(reference, latents, text, image, 640.0)
    got = ours(asarray(latents, device=device), [640.0], asarray(text, device=device),
               encoder_hidden_states_image=asarray(image, device=device)).numpy()
    assert got.shape == (1, 4, frames, 6, 10)
    assert_close(got, expected, tol=TOL)
    # the instruction and the picture matter
    _, other_text, other_image = _inputs(frames + 10, frames)
    scale = np.abs(expected).mean()
    assert np.abs(_flow(reference, latents, other_text, image, 640.0) - expected).mean() \
        > 0.08 * scale
    assert np.abs(_flow(reference, latents, text, other_image, 640.0) - expected).mean() \
        > 0.2 * scale
    # the two-frame positions are what sets it apart from Wan's transformer of these weights
    wan = diffusers.WanTransformer3DModel(**{k: v for k, v in CHRONOEDIT_TINY.items()
                                             if k != "rope_temporal_skip_len"})
    wan.load_state_dict(reference.state_dict())
    differs = np.abs(_flow(wan.eval(), latents, text, image, 640.0) - expected).mean()
    assert (differs > 0.05 * scale) == (frames == 2)


def test_chronoedit_transformer_f16(f16_device: gpucore.Device) -> None:
    reference = tiny_chronoedit_transformer()
    ours = ChronoEditTransformer3DModel(dict(reference.config), dtype=np.float16,
                                        device=f16_device)
    ours.load_state_dict(state_dict(reference))
    latents, text, image = _inputs(7, 2)
    expected = _flow(reference, latents, text, image, 300.0)
    got = ours(asarray(latents, dtype=np.float16, device=f16_device), [300.0],
               asarray(text, dtype=np.float16, device=f16_device),
               encoder_hidden_states_image=asarray(image, dtype=np.float16,
                                                   device=f16_device)).numpy()
    assert got.dtype == np.float16
    assert_close(got.astype(np.float32), expected, tol=2e-2)


@pytest.mark.nodevice
def test_chronoedit_transformer_refuses_what_diffusers_splits_otherwise() -> None:
    with pytest.raises(ValueError, match="attention_head_dim 16"):
        ChronoEditTransformer3DModel({**CHRONOEDIT_TINY, "attention_head_dim": 16})
    with pytest.raises(ValueError, match="at least 1"):
        ChronoEditTransformer3DModel({**CHRONOEDIT_TINY, "rope_temporal_skip_len": 0})
