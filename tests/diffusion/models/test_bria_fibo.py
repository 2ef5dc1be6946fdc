"""The Bria FIBO transformer against diffusers' BriaFiboTransformer2DModel on torch CPU (tiny,
random): float32 with an odd text length and a latent grid no tile divides, and float16; the
per-block text layers visibly matter; the layer selection as BriaFiboPipeline's."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import torch
from bria_fibo_tiny import FIBO_TINY, tiny_fibo_transformer
from sd_tiny import state_dict
from support import assert_close

import gpucore
import gpustd
from diffusion.models.bria_fibo import BriaFiboTransformer2DModel, block_layers

ROWS, COLUMNS, TEXT = 3, 7, 11  # 21 latent pixels, 11 text tokens
BLOCKS = FIBO_TINY["num_layers"] + FIBO_TINY["num_single_layers"]


def _inputs(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    latents = rng.standard_normal((2, ROWS * COLUMNS, FIBO_TINY["in_channels"]))
    text = 2 * rng.standard_normal((2, TEXT, FIBO_TINY["joint_attention_dim"]))
    layers = [2 * rng.standard_normal((2, TEXT, FIBO_TINY["text_encoder_dim"]))
              for _ in range(BLOCKS)]
    return (latents.astype(np.float32), text.astype(np.float32),
            [layer.astype(np.float32) for layer in layers])


def _positions() -> tuple[np.ndarray, np.ndarray]:
    """(img_ids, txt_ids) as BriaFiboPipeline makes them: (0, row, column), text zeros."""
    img = np.zeros((ROWS, COLUMNS, 3), np.float32)
    img[..., 1] = np.arange(ROWS)[:, None]
    img[..., 2] = np.arange(COLUMNS)[None, :]
    return img.reshape(-1, 3), np.zeros((TEXT, 3), np.float32)


def _reference(model: object, latents: np.ndarray, text: np.ndarray,
               layers: list[np.ndarray], t: np.ndarray) -> np.ndarray:
    img_ids, txt_ids = _positions()
    with torch.no_grad():
        return model(torch.from_numpy(latents), torch.from_numpy(text),  # type: ignore[operator]
                     [torch.from_numpy(layer) for layer in layers],
                     timestep=torch.from_numpy(t * 1000), img_ids=torch.from_numpy(img_ids),
                     txt_ids=torch.from_numpy(txt_ids)).sample.numpy()


def _ours(model: BriaFiboTransformer2DModel, latents: np.ndarray, text: np.ndarray,
          layers: list[np.ndarray], t: np.ndarray, dtype: object = np.float32) -> np.ndarray:
    device = model.x_embedder.weight.device
    img_ids, txt_ids = _positions()
    got = model(gpustd.asarray(latents, dtype=dtype, device=device),
                gpustd.asarray(text, dtype=dtype, device=device),
                [gpustd.asarray(layer, dtype=dtype, device=device) for layer in layers], t,
                img_ids, txt_ids)
    assert got.dtype == dtype
    return got.numpy().astype(np.float32)


def test_fibo_transformer(first_device: gpucore.Device) -> None:
    """float32 against diffusers; a block's own text layer visibly matters (the first's,
    redrawn)."""
    reference = tiny_fibo_transformer()
    ours = BriaFiboTransformer2DModel(dict(reference.config), device=first_device)
    ours.load_state_dict(state_dict(reference))
    latents, text, layers = _inputs(np.random.default_rng(3))
    t = np.array([0.83, 0.25], np.float32)
    expected = _reference(reference, latents, text, layers, t)
    # the worst element's |error| / (rms + |expected|) measured on lavapipe: 1.3e-6
    assert_close(_ours(ours, latents, text, layers, t), expected, tol=1e-5)
    changed = [2 * np.random.default_rng(9).standard_normal(layers[0].shape, np.float32),
               *layers[1:]]
    other = _reference(reference, latents, text, changed, t)
    assert np.abs(other - expected).mean() > 0.05 * np.abs(expected).mean()


def test_fibo_transformer_f16(f16_device: gpucore.Device) -> None:
    """float16 weights and activations against the float32 reference."""
    reference = tiny_fibo_transformer()
    ours = BriaFiboTransformer2DModel(dict(reference.config), dtype=np.float16,
                                      device=f16_device)
    ours.load_state_dict(state_dict(reference))
    latents, text, layers = _inputs(np.random.default_rng(4))
    t = np.array([0.5, 0.97], np.float32)
    expected = _reference(reference, latents, text, layers, t)
    # measured on lavapipe: 3.4e-3 (float16 rounding through every block)
    assert_close(_ours(ours, latents, text, layers, t, np.float16), expected, tol=1e-2)


def test_fibo_refusals(first_device: gpucore.Device) -> None:
    with pytest.raises(ValueError, match="patch_size 1, no guidance"):
        BriaFiboTransformer2DModel({**FIBO_TINY, "guidance_embeds": True}, device=first_device)
    ours = BriaFiboTransformer2DModel(FIBO_TINY, device=first_device)
    latents, text, layers = _inputs(np.random.default_rng(5))
    with pytest.raises(ValueError, match="reads 6 text layers"):
        _ours(ours, latents, text, layers[:3], np.array([0.5, 0.5], np.float32))


@pytest.mark.nodevice
def test_block_layers() -> None:
    """The last `blocks` states, or all with the last repeated (BriaFiboPipeline's)."""
    assert block_layers([0, 1, 2, 3, 4], 3) == [2, 3, 4]
    assert block_layers([0, 1, 2], 5) == [0, 1, 2, 2, 2]
