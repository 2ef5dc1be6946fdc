"""The JoyImage Edit transformer against diffusers' JoyImageEditTransformer3DModel on torch CPU
(tiny random weights), fed the pipeline's two items (the reference picture, the noise) as its
6D input, and a picture of text alone (one item)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from joyimage_tiny import JOYIMAGE_TINY, tiny_joyimage_transformer
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.models.joyimage import JoyImageEditTransformer3DModel
from gpustd import asarray

TOL = 1e-5  # float32: measured 2.1e-6 (float16: 4.3e-3 against its 1e-2)
CHANNELS, TEXT_DIM = JOYIMAGE_TINY["in_channels"], JOYIMAGE_TINY["text_dim"]


def _inputs(seed: int, items: int, rows: int, columns: int, text: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """diffusers' (1, items, C, 1, 2 rows, 2 columns) latents, a timestep, the states."""
    rng = np.random.default_rng(seed)
    latents = rng.standard_normal((1, items, CHANNELS, 1, 2 * rows, 2 * columns))
    t = rng.uniform(0, 1000, 1)
    states = rng.standard_normal((1, text, TEXT_DIM))
    return latents.astype(np.float32), t.astype(np.float32), states.astype(np.float32)


def _reference(model: torch.nn.Module, latents: np.ndarray, t: np.ndarray,
               states: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model(torch.from_numpy(latents), torch.from_numpy(t), torch.from_numpy(states),
                    return_dict=False)[0]
    return out.numpy()  # type: ignore[no-any-return]


def _ours(model: JoyImageEditTransformer3DModel, latents: np.ndarray, t: np.ndarray,
          states: np.ndarray) -> np.ndarray:
    """Our frames: the drawn picture (diffusers' last item) first, the references after."""
    frames = np.concatenate([latents[:, -1], *latents[:, :-1].transpose(1, 0, 2, 3, 4, 5)], 2)
    out = model([frames], t, model.prepare_text(asarray(states, device=model.device)))[0]
    items = out.reshape(1, CHANNELS, latents.shape[1], 1, *out.shape[3:]).transpose(
        0, 2, 1, 3, 4, 5)
    return np.concatenate([items[:, 1:], items[:, :1]], axis=1)


def _ported(reference: torch.nn.Module, device: gpucore.Device, dtype: type = np.float32
            ) -> JoyImageEditTransformer3DModel:
    ours = JoyImageEditTransformer3DModel(dict(reference.config), dtype=dtype, device=device)
    ours.load_state_dict(state_dict(reference))
    return ours


@pytest.mark.parametrize("rope_type", ["rope", "mrope"])
def test_transformer_equals_diffusers(device: gpucore.Device, rope_type: str) -> None:
    """A reference and the noise, 3 x 5 patches each (a grid no tile divides), 7 text
    tokens; the prompt and the reference picture visibly matter (each moves the velocity by
    about 8% of its size: 5% asserted); one item (text alone)."""
    reference = tiny_joyimage_transformer(rope_type=rope_type)
    ours = _ported(reference, device)
    latents, t, states = _inputs(1, 2, 3, 5, 7)
    got = _ours(ours, latents, t, states)
    assert_close(got, _reference(reference, latents, t, states), tol=TOL)
    target = got[:, -1]
    other = np.random.default_rng(9).standard_normal(states.shape).astype(np.float32)
    other_prompt = _ours(ours, latents, t, other)[:, -1]
    assert np.abs(other_prompt - target).mean() > 0.05 * np.abs(target).mean()
    other_picture = latents.copy()
    other_picture[:, 0] = np.roll(latents[:, 0], 3, axis=-1)
    moved = _ours(ours, other_picture, t, states)[:, -1]
    assert np.abs(moved - target).mean() > 0.05 * np.abs(target).mean()
    alone = latents[:, 1:]
    assert_close(_ours(ours, alone, t, states), _reference(reference, alone, t, states),
                 tol=TOL)


def test_transformer_f16(f16_device: gpucore.Device) -> None:
    """float16 weights, the states float32 as the text encoder returns them: diffusers'
    float32 output to float16 error."""
    reference = tiny_joyimage_transformer()
    ours = _ported(reference, f16_device, np.float16)
    latents, t, states = _inputs(2, 2, 4, 3, 5)
    assert_close(_ours(ours, latents, t, states), _reference(reference, latents, t, states),
                 tol=1e-2)


@pytest.mark.nodevice
def test_bad_config_gets_one_line() -> None:
    with pytest.raises(ValueError, match="rope_dim_list"):
        JoyImageEditTransformer3DModel({**JOYIMAGE_TINY, "rope_dim_list": [4, 4, 4]})
