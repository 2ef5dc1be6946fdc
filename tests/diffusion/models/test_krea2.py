"""The Krea 2 transformer (its text path once per prompt, the step per timestep) against
diffusers' Krea2Transformer2DModel on torch CPU float32 (tiny random weights, loaded from the
folder diffusers' save_pretrained writes): an odd 3 x 5 patch grid, 7 text tokens of which 2
are padding in the middle (as Krea 2's template pads), float32 and float16."""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from diffusers.pipelines.krea2.pipeline_krea2 import Krea2Pipeline
from krea2_tiny import KREA2_TINY, tiny_krea2_transformer, write_krea2_transformer
from safetensors.numpy import load_file
from sd_tiny import ported
from support import assert_close

import gpucore
from diffusion.models.krea2 import Krea2Transformer2DModel, pack_latents, unpack_latents
from diffusion.models.step_cache import FirstBlockCache
from gpustd import asarray

ROWS, COLUMNS, TOKENS = 3, 5, 7
CHANNELS, LAYERS, WIDTH = (KREA2_TINY[k] for k in ("in_channels", "num_text_layers",
                                                   "text_hidden_dim"))
# measured up to 5.7e-6 over 4 inputs x 4 timesteps (float32 rounding; the timestep's
# sinusoid of arguments up to 1000 rad rounded by each side's own frequencies)
TOL = 2e-5
# float16 weights and stream against diffusers' float32: measured up to 1.4e-2 over the same
# 16 cases (the mean error 1.5e-3 of the output's rms)
TOL_F16 = 2e-2


def _inputs(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Latents (1, 15, 16), states (1, 7, 3, 40), the mask (1, 7): tokens 4 and 5 padding."""
    rng = np.random.default_rng(seed)
    latents = rng.standard_normal((1, ROWS * COLUMNS, CHANNELS)).astype(np.float32)
    states = rng.standard_normal((1, TOKENS, LAYERS, WIDTH)).astype(np.float32)
    mask = np.ones((1, TOKENS), bool)
    mask[0, 4:6] = False
    return latents, states, mask


def _reference(model: Any, latents: np.ndarray, states: np.ndarray, mask: np.ndarray | None,
               t: float) -> np.ndarray:
    """diffusers' forward with Krea2Pipeline's position ids."""
    ids = Krea2Pipeline.prepare_position_ids(states.shape[1], ROWS, COLUMNS, "cpu")
    with torch.no_grad():
        return model(torch.from_numpy(latents), torch.from_numpy(states),
                     torch.tensor([t]), ids,
                     None if mask is None else torch.from_numpy(mask)).sample.numpy()


def _loaded(folder: Path, device: gpucore.Device, dtype: Any = np.float32) -> Any:
    """Ours from the `transformer/` folder diffusers wrote."""
    ours = Krea2Transformer2DModel(json.loads((folder / "config.json").read_text()),
                                   dtype=dtype, device=device)
    ours.load_state_dict(load_file(folder / "diffusion_pytorch_model.safetensors"))
    return ours


def _differs(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether b is visibly not a: a mean change over 5% of a's mean size (the tiny model's
    flow is mostly the final layer's shift, the same for every token: the timestep changes it
    by 140%, the text by 23%, dropping the mask by 12%)."""
    return bool(np.abs(a - b).mean() > 0.05 * np.abs(a).mean())


def test_krea2_equals_diffusers(device: gpucore.Device, tmp_path: Path) -> None:
    """One text() serves two timesteps; the text, the mask and the timestep each visibly
    change the flow, the padded tokens' values do not; a step cache wired to the blocks."""
    reference = write_krea2_transformer(tmp_path / "transformer")
    ours = _loaded(tmp_path / "transformer", device)
    latents, states, mask = _inputs(1)
    x = asarray(latents, device=device)
    text = ours.text(states, mask)
    assert text.shape == (1, 5, KREA2_TINY["attention_head_dim"] * 4)
    for t in (0.8, 0.25):
        got = ours(x, np.float32(t), ROWS, COLUMNS, text).numpy()
        assert_close(got, _reference(reference, latents, states, mask, t), tol=TOL)
    # what the test's premise needs: each input visibly matters
    assert _differs(got, ours(x, 0.8, ROWS, COLUMNS, text).numpy())
    other = ours.text(np.random.default_rng(9).standard_normal(states.shape), mask)
    assert _differs(got, ours(x, 0.25, ROWS, COLUMNS, other).numpy())
    unmasked = ours(x, 0.25, ROWS, COLUMNS, ours.text(states)).numpy()
    assert_close(unmasked, _reference(reference, latents, states, None, 0.25), tol=TOL)
    assert _differs(got, unmasked)
    padded = states.copy()
    padded[0, 4:6] *= 100
    same = ours(x, 0.25, ROWS, COLUMNS, ours.text(padded, mask[0])).numpy()
    np.testing.assert_array_equal(same, got)
    # threshold 0 computes every call (the uncached flow, bitwise); a huge one skips the
    # blocks after the first at the second call
    for threshold, computed in ((0.0, 2), (1e9, 1)):
        cache = FirstBlockCache(threshold)
        first = ours(x, 0.8, ROWS, COLUMNS, text, cache=cache).numpy()
        second = ours(x, 0.25, ROWS, COLUMNS, text, cache=cache).numpy()
        assert cache.computed == computed
        np.testing.assert_array_equal(first, ours(x, 0.8, ROWS, COLUMNS, text).numpy())
        assert (second == got).all() == (computed == 2)


def test_krea2_f16(f16_device: gpucore.Device) -> None:
    """float16 weights, float32 states and latents given: diffusers' float32 flow to float16
    error, the mask's padding dropped as in float32."""
    reference = tiny_krea2_transformer()
    ours = ported(Krea2Transformer2DModel, reference, f16_device, dtype=np.float16)
    assert ours.txt_in.norm.weight.dtype == np.float32  # the zero-centred scales stay float32
    latents, states, mask = _inputs(2)
    t = 0.5  # exact in float16, as diffusers' pipeline rounds it
    got = ours(latents, t, ROWS, COLUMNS, ours.text(asarray(states, device=f16_device), mask))
    assert got.dtype == np.float16
    assert_close(got.numpy().astype(np.float32),
                 _reference(reference, latents, states, mask, t), tol=TOL_F16)


def test_pack_unpack_equal_diffusers() -> None:
    """pack_latents and unpack_latents against Krea2Pipeline's _pack_latents and
    _unpack_latents (6 x 10 latents of 4 channels: 3 x 5 patches)."""
    latents = np.random.default_rng(3).standard_normal((1, 4, 6, 10)).astype(np.float32)
    pipe = types.SimpleNamespace(patch_size=2, vae_scale_factor=8)
    expected = Krea2Pipeline._pack_latents(pipe, torch.from_numpy(latents), 1, 4, 6, 10)
    packed = pack_latents(latents)
    np.testing.assert_array_equal(packed, expected.numpy())
    back = Krea2Pipeline._unpack_latents(pipe, expected, 48, 80)[:, :, 0]
    np.testing.assert_array_equal(unpack_latents(packed, 3, 5), back.numpy())
    np.testing.assert_array_equal(unpack_latents(packed, 3, 5), latents)


def test_krea2_bad_input(device: gpucore.Device) -> None:
    """Wrong shapes and configs are refused in one line each, saying what to give."""
    with pytest.raises(ValueError, match="must add up to attention_head_dim"):
        Krea2Transformer2DModel({**KREA2_TINY, "axes_dims_rope": (4, 6, 8)}, device=device)
    with pytest.raises(ValueError, match="not a multiple of text_num_key_value_heads"):
        Krea2Transformer2DModel({**KREA2_TINY, "text_num_key_value_heads": 3}, device=device)
    ours = ported(Krea2Transformer2DModel, tiny_krea2_transformer(), device)
    latents, states, mask = _inputs(4)
    with pytest.raises(ValueError, match=r"states must be \(1, tokens, 3, 40\)"):
        ours.text(states[:, :, :2], mask)
    with pytest.raises(ValueError, match=r"mask must be \(1, 7\)"):
        ours.text(states, mask[:, :5])
    with pytest.raises(ValueError, match="keeps no text token"):
        ours.text(states, np.zeros((1, TOKENS), bool))
    text = ours.text(states, mask)
    with pytest.raises(ValueError, match=r"latents must be \(1, rows \* columns, in_channels\)"):
        ours(latents, 0.5, COLUMNS, COLUMNS, text)
    with pytest.raises(ValueError, match="text must be this model's text"):
        ours(latents, 0.5, ROWS, COLUMNS, states)
    with pytest.raises(ValueError, match="timestep must be one number"):
        ours(latents, [0.5, 0.4], ROWS, COLUMNS, text)
    with pytest.raises(ValueError, match="do not split into 2 x 2 patches"):
        pack_latents(np.zeros((1, 4, 5, 6), np.float32))
