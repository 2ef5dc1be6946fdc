"""The Kandinsky 5 transformer (its text embedding once per prompt, the step per timestep)
against diffusers' Kandinsky5Transformer3DModel on torch CPU float32 (tiny random weights,
loaded from the folder diffusers' save_pretrained writes) with the positions its pipelines
pass: a picture of an odd 3 x 5 patch grid and 5 text tokens, float32 and float16; a
two-frame video of a visual_cond model with the video pipeline's rotary scale factor.

diffusers rounds the rotated q and k to bfloat16 whatever the dtype (its checkpoints'
precision); the exact comparisons run it with that rounding left out (`exact`), and one
measures what the rounding itself moves."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from diffusers.models.transformers import transformer_kandinsky
from kandinsky5_tiny import (
    KANDINSKY5_TINY,
    tiny_kandinsky5_transformer,
    write_kandinsky5_transformer,
)
from safetensors.numpy import load_file
from sd_tiny import ported
from support import assert_close

import gpucore
from diffusion.models.kandinsky5 import Kandinsky5Transformer3DModel
from diffusion.models.step_cache import FirstBlockCache
from gpustd import asarray

FRAMES, HEIGHT, WIDTH, TOKENS = 1, 6, 10, 5  # 3 x 5 patches of 2 x 2
CHANNELS, TEXT, POOLED = (KANDINSKY5_TINY[k] for k in ("in_visual_dim", "in_text_dim",
                                                       "in_text_dim2"))
# measured up to 2.5e-6 over 4 inputs x 4 timesteps (float32 rounding; the sinusoids of
# timesteps up to 1000 rad), 8.1e-7 over 3 videos
TOL = 1e-5
# diffusers as it is, its rotated q and k rounded to bfloat16: up to 1.3e-3 over the same 16
TOL_BF16 = 4e-3
# float16 weights and stream against diffusers' float32: up to 8.3e-3 over the same 16 (the
# mean 3.0e-3)
TOL_F16 = 1.5e-2


class _NoBfloat16:
    """torch as transformer_kandinsky sees it, bfloat16 being float32: its rotation's
    `.to(torch.bfloat16)` then keeps float32."""

    def __getattr__(self, name: str) -> Any:
        return torch.float32 if name == "bfloat16" else getattr(torch, name)


@contextlib.contextmanager
def exact() -> Iterator[None]:
    """diffusers' transformer without its bfloat16 rounding of the rotated q and k."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(transformer_kandinsky, "torch", _NoBfloat16())
        yield


def _inputs(seed: int, frames: int = FRAMES, channels: int = CHANNELS
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latents (1, F, 6, 10, C) channels last, states (1, 5, 40), pooled (1, 32)."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((1, frames, HEIGHT, WIDTH, channels)).astype(np.float32),
            rng.standard_normal((1, TOKENS, TEXT)).astype(np.float32),
            rng.standard_normal((1, POOLED)).astype(np.float32))


def _reference(model: Any, latents: np.ndarray, states: np.ndarray, pooled: np.ndarray,
               t: float, scale: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> np.ndarray:
    """diffusers' forward with the positions Kandinsky5T2IPipeline passes (arange of the
    frames, rows and columns of patches; of the text tokens)."""
    frames, height, width = latents.shape[1:4]
    visual = [torch.arange(frames), torch.arange(height // 2), torch.arange(width // 2)]
    with torch.no_grad():
        return model(torch.from_numpy(latents), torch.from_numpy(states), torch.tensor([t]),
                     torch.from_numpy(pooled), visual, torch.arange(states.shape[1]),
                     scale_factor=scale).sample.numpy()


def _loaded(folder: Path, device: gpucore.Device) -> Kandinsky5Transformer3DModel:
    """Ours from the `transformer/` folder diffusers wrote."""
    ours = Kandinsky5Transformer3DModel(json.loads((folder / "config.json").read_text()),
                                        device=device)
    ours.load_state_dict(load_file(folder / "diffusion_pytorch_model.safetensors"))
    return ours


def _differs(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether b is visibly not a: a mean change over 5% of a's mean size (the timestep
    changes the tiny model's velocity by 140%, the pooled vector by 57%, the text by 9%: it
    enters through the cross-attentions only)."""
    return bool(np.abs(a - b).mean() > 0.05 * np.abs(a).mean())


def test_kandinsky5_equals_diffusers(device: gpucore.Device, tmp_path: Path) -> None:
    """One text() serves two timesteps; the text, the pooled vector and the timestep each
    visibly change the velocity; a step cache wired to the visual blocks."""
    reference = write_kandinsky5_transformer(tmp_path / "transformer")
    ours = _loaded(tmp_path / "transformer", device)
    latents, states, pooled = _inputs(1)
    x = asarray(latents, device=device)
    text = ours.text(states)
    assert text.shape == (1, TOKENS, KANDINSKY5_TINY["model_dim"])
    got = {t: ours(x, t, text, pooled).numpy() for t in (937.5, 250.0)}
    with exact():
        for t, velocity in got.items():
            assert_close(velocity, _reference(reference, latents, states, pooled, t), tol=TOL)
    assert_close(got[250.0], _reference(reference, latents, states, pooled, 250.0),
                 tol=TOL_BF16)
    # what the test's premise needs: each input visibly matters
    rng = np.random.default_rng(9)
    assert _differs(got[250.0], got[937.5])
    assert _differs(got[250.0], ours(x, 250.0, ours.text(rng.standard_normal(states.shape)),
                                     pooled).numpy())
    assert _differs(got[250.0], ours(x, 250.0, text, rng.standard_normal(pooled.shape)).numpy())
    # threshold 0 computes every call (the uncached velocity, bitwise); a huge one skips the
    # blocks after the first at the second call
    for threshold, computed in ((0.0, 2), (1e9, 1)):
        cache = FirstBlockCache(threshold)
        first = ours(x, 937.5, text, pooled, cache=cache).numpy()
        second = ours(x, 250.0, text, pooled, cache=cache).numpy()
        assert cache.computed == computed
        np.testing.assert_array_equal(first, got[937.5])
        assert (second == got[250.0]).all() == (computed == 2)

def test_kandinsky5_video(device: gpucore.Device) -> None:
    """Two latent frames of a visual_cond model (the latents, the condition and its mask
    concatenated: 9 channels in, 4 out) under the video pipeline's (1, 2, 2) scale factor."""
    reference = tiny_kandinsky5_transformer(5, visual_cond=True)
    ours = ported(Kandinsky5Transformer3DModel, reference, device)
    latents, states, pooled = _inputs(3, frames=2, channels=2 * CHANNELS + 1)
    got = ours(latents, 500.0, ours.text(states), pooled, scale_factor=(1, 2, 2)).numpy()
    assert got.shape == (1, 2, HEIGHT, WIDTH, CHANNELS)
    with exact():
        expected = _reference(reference, latents, states, pooled, 500.0, (1.0, 2.0, 2.0))
    assert_close(got, expected, tol=TOL)


def test_kandinsky5_f16(f16_device: gpucore.Device) -> None:
    """float16 weights, float32 states, pooled vector and latents given: diffusers' float32
    velocity to float16 error."""
    reference = tiny_kandinsky5_transformer()
    ours = ported(Kandinsky5Transformer3DModel, reference, f16_device, dtype=np.float16)
    latents, states, pooled = _inputs(2)
    t = 937.5  # exact in float16, as diffusers' pipeline rounds it
    got = ours(latents, t, ours.text(states), pooled)
    assert got.dtype == np.float16
    with exact():
        expected = _reference(reference, latents, states, pooled, t)
    assert_close(got.numpy().astype(np.float32), expected, tol=TOL_F16)


def test_kandinsky5_bad_input(device: gpucore.Device) -> None:
    """Wrong shapes and configs are refused in one line each, saying what to give."""
    with pytest.raises(ValueError, match="sparse NABLA attention"):
        Kandinsky5Transformer3DModel({**KANDINSKY5_TINY, "attention_type": "nabla"},
                                     device=device)
    with pytest.raises(ValueError, match="not a multiple of the head size 16"):
        Kandinsky5Transformer3DModel({**KANDINSKY5_TINY, "model_dim": 40}, device=device)
    ours = ported(Kandinsky5Transformer3DModel, tiny_kandinsky5_transformer(), device)
    latents, states, pooled = _inputs(4)
    with pytest.raises(ValueError, match=r"states must be \(1, tokens, 40\)"):
        ours.text(states[:, :, :32])
    with pytest.raises(ValueError, match="1024 rotary positions"):
        ours.text(np.zeros((1, 1025, TEXT), np.float32))
    text = ours.text(states)
    with pytest.raises(ValueError, match=r"latents must be \(1, frames, height, width, 4\)"):
        ours(latents[:, :, :5], 500.0, text, pooled)
    with pytest.raises(ValueError, match="channels last"):
        ours(latents.transpose(0, 1, 4, 2, 3), 500.0, text, pooled)
    with pytest.raises(ValueError, match="128 rotary positions per axis"):
        ours(np.zeros((1, 1, 2, 258, CHANNELS), np.float32), 500.0, text, pooled)
    with pytest.raises(ValueError, match="text must be this model's text"):
        ours(latents, 500.0, states, pooled)
    with pytest.raises(ValueError, match=r"pooled must be \(1, 32\)"):
        ours(latents, 500.0, text, pooled[:, :16])
    with pytest.raises(ValueError, match="timestep must be one number"):
        ours(latents, [500.0, 400.0], text, pooled)
    with pytest.raises(ValueError, match="scale_factor must be 3 numbers"):
        ours(latents, 500.0, text, pooled, scale_factor=(1, 2))
