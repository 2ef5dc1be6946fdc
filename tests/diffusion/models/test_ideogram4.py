"""The Ideogram 4 transformer against diffusers' Ideogram4Transformer2DModel on torch CPU (tiny
random weights), fed diffusers' packed, left-padded sequence as Ideogram4Pipeline builds it."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from ideogram4_tiny import IDEOGRAM4_TINY, tiny_ideogram4_transformer
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.models.ideogram4 import Ideogram4Transformer2DModel, interleave_layers
from gpustd import asarray

TOL = 5e-5  # float32: measured 2.1e-5 (float16 passes at 5e-3 against its 1e-2)
CHANNELS, WIDTH = IDEOGRAM4_TINY["in_channels"], IDEOGRAM4_TINY["llm_features_dim"]


def _inputs(seed: int, batch: int, rows: int, columns: int, text: int
            ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    latents = rng.standard_normal((batch, rows * columns, CHANNELS)).astype(np.float32)
    t = rng.uniform(0, 1, batch).astype(np.float32)
    states = rng.standard_normal((batch, text, WIDTH)).astype(np.float32)
    return latents, t, states


def _reference(model: torch.nn.Module, latents: np.ndarray, t: np.ndarray,
               states: np.ndarray | None, rows: int, columns: int, pad: int = 0) -> np.ndarray:
    """diffusers' output at the image tokens for [pad][text][image] as Ideogram4Pipeline
    packs it (`_prepare_ids`; no text: the unconditional branch's image-only sequence)."""
    from diffusers.pipelines.ideogram4.pipeline_ideogram4 import Ideogram4Pipeline

    batch, count, _ = latents.shape
    text = 0 if states is None else states.shape[1]
    position, segment, indicator = Ideogram4Pipeline._prepare_ids(
        [text] * batch, rows, columns, pad + text, "cpu")
    features = np.zeros((batch, pad + text + count, WIDTH), np.float32)
    if states is not None:
        features[:, pad:pad + text] = states
    packed = np.concatenate([np.zeros((batch, pad + text, CHANNELS), np.float32), latents], 1)
    with torch.no_grad():
        out = model(torch.from_numpy(packed), torch.from_numpy(t), torch.from_numpy(features),
                    position, segment, indicator, return_dict=False)[0]
    return out[:, pad + text:].numpy()  # type: ignore[no-any-return]


def _ours(reference: torch.nn.Module, device: gpucore.Device, dtype: type = np.float32
          ) -> Ideogram4Transformer2DModel:
    ours = Ideogram4Transformer2DModel(dict(reference.config), dtype=dtype, device=device)
    ours.load_state_dict(state_dict(reference))
    return ours


def test_transformer_equals_diffusers(device: gpucore.Device) -> None:
    """Two pictures of 3 x 5 patches (a grid no tile divides) with 7 text tokens behind 4 of
    padding; the text visibly matters; the unconditional branch (no text) too."""
    reference = tiny_ideogram4_transformer()
    ours = _ours(reference, device)
    latents, t, states = _inputs(1, 2, 3, 5, 7)

    def run(features: np.ndarray | None) -> np.ndarray:
        given = None if features is None else asarray(features, device=device)
        return ours(asarray(latents, device=device), t, given, 3, 5).numpy()

    got = run(states)
    assert_close(got, _reference(reference, latents, t, states, 3, 5, pad=4), tol=TOL)
    changed = run(states[::-1].copy())
    assert np.abs(changed - got).mean() > 0.1 * np.abs(got).mean()
    assert_close(run(None), _reference(reference, latents, t, None, 3, 5), tol=TOL)


def test_transformer_f16(f16_device: gpucore.Device) -> None:
    """float16 weights, the features float32 as the LLM returns them: diffusers' float32
    output to float16 error."""
    reference = tiny_ideogram4_transformer()
    ours = _ours(reference, f16_device, np.float16)
    latents, t, states = _inputs(2, 1, 4, 6, 5)
    # diffusers' pipeline hands the timestep in the model's dtype
    t16 = t.astype(np.float16).astype(np.float32)
    expected = _reference(reference, latents, t16, states, 4, 6)
    got = ours(asarray(latents, dtype=np.float16, device=f16_device), t,
               asarray(states, device=f16_device), 4, 6).numpy()
    assert got.dtype == np.float16
    assert_close(got.astype(np.float32), expected, tol=1e-2)


def test_interleave_layers(first_device: gpucore.Device) -> None:
    """Taps stacked feature-major, as diffusers' permute(1, 2, 3, 0)."""
    rng = np.random.default_rng(4)
    taps = [rng.standard_normal((2, 3, 5)).astype(np.float32) for _ in range(4)]
    got = interleave_layers([asarray(a, device=first_device) for a in taps]).numpy()
    expected = torch.stack([torch.from_numpy(a) for a in taps]).permute(1, 2, 3, 0)
    np.testing.assert_array_equal(got, expected.reshape(2, 3, -1).numpy())


@pytest.mark.nodevice
def test_bad_config_gets_one_line() -> None:
    with pytest.raises(ValueError, match="mrope_section"):
        Ideogram4Transformer2DModel({**IDEOGRAM4_TINY, "mrope_section": (2, 4, 4)})
