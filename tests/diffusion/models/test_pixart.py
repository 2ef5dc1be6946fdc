"""The PixArt transformer against diffusers' PixArtTransformer2DModel on torch CPU (tiny random
weights): PixArt-Σ, PixArt-α 1024's size embeddings, float16."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from pixart_tiny import PIXART_ALPHA_TINY, PIXART_TINY, tiny_pixart_transformer
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.models.pixart import PixArtTransformer2DModel
from gpustd import asarray, nn

# float32: measured 1.4e-4 at the worst element of outputs of RMS 4 (3.4e-5 relative; the
# tiny model's modulations amplify the float32 rounding of the timestep's sinusoid, and the
# GEMM kernels the autotuner picks round differently from run to run)
TOL = 1e-4
CHANNELS, WIDTH = PIXART_TINY["in_channels"], PIXART_TINY["caption_channels"]


def _inputs(seed: int, batch: int, size: tuple[int, int], tokens: int, lengths: list[int]
            ) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.arange(tokens)[None, :] < np.asarray(lengths)[:, None]
    return {"latents": rng.standard_normal((batch, CHANNELS, *size)).astype(np.float32),
            "states": rng.standard_normal((batch, tokens, WIDTH)).astype(np.float32),
            "mask": mask}


def _reference(model: torch.nn.Module, x: dict[str, np.ndarray], t: np.ndarray,
               sizes: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    added = {"resolution": None, "aspect_ratio": None} if sizes is None else {
        "resolution": torch.from_numpy(sizes[0]), "aspect_ratio": torch.from_numpy(sizes[1])}
    with torch.no_grad():
        return model(torch.from_numpy(x["latents"]), torch.from_numpy(x["states"]),
                     torch.from_numpy(t), added_cond_kwargs=added,
                     encoder_attention_mask=torch.from_numpy(x["mask"].astype(np.int64)),
                     return_dict=False)[0].numpy()


def _ours(reference: torch.nn.Module, device: gpucore.Device, dtype: Any = np.float32
          ) -> PixArtTransformer2DModel:
    ours = PixArtTransformer2DModel(dict(reference.config), dtype=dtype, device=device)
    ours.load_state_dict(state_dict(reference))
    return ours


def _run(ours: PixArtTransformer2DModel, x: dict[str, np.ndarray], t: np.ndarray,
         sizes: tuple[np.ndarray, np.ndarray] | None = None, dtype: Any = np.float32
         ) -> np.ndarray:
    device = ours.device
    extra = {} if sizes is None else {"resolution": sizes[0], "aspect_ratio": sizes[1]}
    return ours(asarray(x["latents"], dtype=dtype, device=device),
                asarray(x["states"], device=device), t, x["mask"], **extra).numpy()


def test_sigma_equals_diffusers(device: gpucore.Device) -> None:
    """Two pictures of 6 x 10 latents (3 x 5 patches, not the sample size's 4 x 4: the
    position table redrawn), captions of 5 and 9 tokens masked in 11: diffusers' output;
    the caption visibly matters."""
    reference = tiny_pixart_transformer()
    ours = _ours(reference, device)
    x = _inputs(1, 2, (6, 10), 11, [5, 9])
    t = np.array([130.0, 410.0], np.float32)
    got = _run(ours, x, t)
    assert_close(got, _reference(reference, x, t), tol=TOL)
    swapped = dict(x, states=x["states"][::-1].copy(), mask=x["mask"][::-1].copy())
    changed = _run(ours, swapped, t)
    assert np.abs(changed[1] - got[1]).mean() > 0.05 * np.abs(got[1]).mean()


def test_alpha_sizes_equal_diffusers(device: gpucore.Device) -> None:
    """PixArt-α 1024's size and aspect-ratio embeddings, 10 x 6 latents, interpolation
    scale 2: diffusers' output; the size visibly matters."""
    reference = tiny_pixart_transformer(**PIXART_ALPHA_TINY)
    ours = _ours(reference, device)
    x = _inputs(2, 2, (10, 6), 4, [4, 2])
    t = np.array([90.0, 250.0], np.float32)
    sizes = (np.array([[80.0, 48.0]] * 2, np.float32), np.array([[80 / 48]] * 2, np.float32))
    got = _run(ours, x, t, sizes)
    assert_close(got, _reference(reference, x, t, sizes), tol=TOL)
    other = _run(ours, x, t, (sizes[0] * 2, sizes[1] / 2))
    assert np.abs(other - got).mean() > 0.03 * np.abs(got).mean()


def test_sigma_f16(f16_device: gpucore.Device) -> None:
    """float16 weights, T5's float32 states: no further from diffusers' float32 output than
    diffusers' own float16 model is (the tiny model's gains turn the latents' float16
    rounding into ~10% of the largest value: measured 0.115 of 1.04 on both sides)."""
    reference = tiny_pixart_transformer()
    ours = _ours(reference, f16_device, np.float16)
    x = _inputs(4, 2, (6, 6), 7, [7, 4])
    t = np.array([600.0, 200.0], np.float32)
    got = _run(ours, x, t, dtype=np.float16)
    assert got.dtype == np.float16
    expected = _reference(reference, x, t)
    half = dict(x, latents=x["latents"].astype(np.float16), states=x["states"].astype(
        np.float16))
    theirs = _reference(copy.deepcopy(reference).half(), half, t).astype(np.float32)
    assert np.abs(got.astype(np.float32) - expected).max() <= 1.25 * np.abs(
        theirs - expected).max()


@pytest.mark.parametrize("config", [
    {"sample_size": 128, "interpolation_scale": 2, "use_additional_conditions": False,
     "caption_channels": 4096},
    {"sample_size": 128, "caption_channels": 4096}])
def test_full_size_names_and_shapes(first_device: gpucore.Device, config: dict) -> None:
    """PixArt-Σ 1024's and PixArt-α 1024's full configs: every parameter diffusers' has, of
    its shape (allocated neither side)."""
    import diffusers
    from accelerate import init_empty_weights

    with init_empty_weights():
        reference = diffusers.PixArtTransformer2DModel(**config)
    with nn.deferred():
        ours = PixArtTransformer2DModel(dict(reference.config), dtype=np.float16,
                                        device=first_device)
    assert {k: tuple(v.shape) for k, v in ours.named_parameters()} == {
        k: tuple(v.shape) for k, v in reference.state_dict().items()
        if k != "pos_embed.pos_embed"}


@pytest.mark.nodevice
def test_bad_configs_get_one_line() -> None:
    with pytest.raises(ValueError, match="norm_type"):
        PixArtTransformer2DModel({**PIXART_TINY, "norm_type": "ada_norm_zero"})
    with pytest.raises(ValueError, match="cross_attention_dim"):
        PixArtTransformer2DModel({**PIXART_TINY, "cross_attention_dim": 12})
    with pytest.raises(ValueError, match="thirds"):
        PixArtTransformer2DModel({**PIXART_ALPHA_TINY, "attention_head_dim": 8,
                                  "cross_attention_dim": 16})


def test_bad_inputs_get_one_line(first_device: gpucore.Device) -> None:
    ours = PixArtTransformer2DModel(PIXART_ALPHA_TINY, device=first_device)
    x = _inputs(5, 1, (4, 4), 3, [3])
    latents = asarray(x["latents"], device=first_device)
    states = asarray(x["states"], device=first_device)
    with pytest.raises(ValueError, match="resolution"):
        ours(latents, states, [500.0])
    with pytest.raises(ValueError, match="encoder_attention_mask"):
        ours(latents, states, [500.0], np.ones((1, 4)), [32, 32], [1.0])
    with pytest.raises(ValueError, match="channels"):
        ours(asarray(x["latents"][:, :3], device=first_device), states, [500.0])
    with pytest.raises(ValueError, match="patch size"):
        ours(asarray(x["latents"][:, :, :3], device=first_device), states, [500.0])
