"""The Sana transformer against diffusers' SanaTransformer2DModel on torch CPU (tiny random
weights): Sana 1.0, Sana Sprint (q/k norms, guidance) and Sana 4K's position embeddings."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from sana_tiny import SANA_PE_TINY, SANA_SPRINT_TINY, SANA_TINY, tiny_sana_transformer
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.models.sana import SanaTransformer2DModel
from gpustd import asarray, nn

# float32: measured 2.1e-5 (float16: 5.3e-3 against its 1e-2). Timesteps stay small: the
# 256-wide sinusoid of t ~ 900 differs from torch's by 2e-5 (float32 sin of large arguments),
# which the tiny model's gates amplify to 2e-3 in its output (diffusers' own moves as much
# when its features are perturbed by 2e-5)
TOL = 5e-5
CHANNELS, WIDTH = SANA_TINY["in_channels"], SANA_TINY["caption_channels"]


def _inputs(seed: int, batch: int, size: tuple[int, int], tokens: int, lengths: list[int]
            ) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    mask = np.arange(tokens)[None, :] < np.asarray(lengths)[:, None]
    return {"latents": rng.standard_normal((batch, CHANNELS, *size)).astype(np.float32),
            "states": rng.standard_normal((batch, tokens, WIDTH)).astype(np.float32),
            "mask": mask}


def _reference(model: torch.nn.Module, x: dict[str, np.ndarray], t: np.ndarray,
               guidance: np.ndarray | None = None) -> np.ndarray:
    extra = {} if guidance is None else {"guidance": torch.from_numpy(guidance)}
    with torch.no_grad():
        return model(torch.from_numpy(x["latents"]), torch.from_numpy(x["states"]),
                     torch.from_numpy(t), encoder_attention_mask=torch.from_numpy(
                         x["mask"].astype(np.int64)), return_dict=False, **extra)[0].numpy()


def _ours(reference: torch.nn.Module, device: gpucore.Device, dtype: Any = np.float32
          ) -> SanaTransformer2DModel:
    ours = SanaTransformer2DModel(dict(reference.config), dtype=dtype, device=device)
    ours.load_state_dict(state_dict(reference))
    return ours


def _run(ours: SanaTransformer2DModel, x: dict[str, np.ndarray], t: np.ndarray,
         guidance: np.ndarray | None = None, dtype: Any = np.float32) -> np.ndarray:
    device = ours.device
    return ours(asarray(x["latents"], dtype=dtype, device=device),
                asarray(x["states"], device=device), t, guidance, x["mask"]).numpy()


def test_sana_equals_diffusers(device: gpucore.Device) -> None:
    """Two pictures of 6 x 10 latents, captions of 5 and 9 tokens masked in 11 (odd
    lengths, padding past both): diffusers' output; the caption visibly matters."""
    reference = tiny_sana_transformer()
    ours = _ours(reference, device)
    x = _inputs(1, 2, (6, 10), 11, [5, 9])
    t = np.array([130.0, 410.0], np.float32)
    got = _run(ours, x, t)
    assert_close(got, _reference(reference, x, t), tol=TOL)
    swapped = dict(x, states=x["states"][::-1].copy(), mask=x["mask"][::-1].copy())
    changed = _run(ours, swapped, t)
    assert np.abs(changed[1] - got[1]).mean() > 0.1 * np.abs(got[1]).mean()


def test_sprint_equals_diffusers(device: gpucore.Device) -> None:
    """Sana Sprint's variant (q/k RMS norms, guidance embedding), 7 x 5 latents, one caption
    of 3 masked in 6 with a hole (SanaPipeline's instruction-prefixed captions keep the first
    token and the last ones): diffusers' output; the caption and the guidance visibly
    matter."""
    reference = tiny_sana_transformer(**SANA_SPRINT_TINY)
    ours = _ours(reference, device)
    x = _inputs(2, 2, (7, 5), 6, [6, 4])
    x["mask"][1, 1] = False
    t, g = np.array([0.3, 0.9], np.float32), np.array([0.45, 0.45], np.float32)
    got = _run(ours, x, t, g)
    assert_close(got, _reference(reference, x, t, g), tol=TOL)
    other = _run(ours, dict(x, states=x["states"][::-1].copy()), t, g)
    assert np.abs(other[0] - got[0]).mean() > 0.03 * np.abs(got[0]).mean()
    stronger = _run(ours, x, t, g * 4)
    assert np.abs(stronger - got).mean() > 0.03 * np.abs(got).mean()


def test_positions_equal_diffusers(device: gpucore.Device) -> None:
    """Sana 4K's sin-cos position embeddings at a grid other than sample_size's, 2 x 2
    patches over 10 x 6 latents, attention biases: diffusers' output."""
    reference = tiny_sana_transformer(**SANA_PE_TINY)
    ours = _ours(reference, device)
    x = _inputs(3, 1, (10, 6), 4, [4])
    t = np.array([130.0], np.float32)
    assert_close(_run(ours, x, t), _reference(reference, x, t), tol=TOL)


def test_sana_f16(f16_device: gpucore.Device) -> None:
    """float16 weights, the captions float32 as Gemma 2 returns them: diffusers' float32
    output to float16 error."""
    reference = tiny_sana_transformer(**SANA_SPRINT_TINY)
    ours = _ours(reference, f16_device, np.float16)
    x = _inputs(4, 2, (5, 9), 7, [7, 4])
    t, g = np.array([0.6, 0.2], np.float32), np.array([0.45, 0.3], np.float32)
    got = _run(ours, x, t, g, np.float16)
    assert got.dtype == np.float16
    assert_close(got.astype(np.float32), _reference(reference, x, t, g), tol=1e-2)


def test_positions_f16(f16_device: gpucore.Device) -> None:
    """Sana 4K's position table in a float16 model (added in float32, as diffusers adds it,
    then back to float16): no further from diffusers' float32 output than diffusers' own
    float16 model is (the table's addition costs float16 precision on both sides: measured
    3-7% of the largest value on this tiny config, against 0.4-0.6% without positions)."""
    reference = tiny_sana_transformer(**SANA_PE_TINY)
    ours = _ours(reference, f16_device, np.float16)
    x = _inputs(3, 1, (10, 6), 4, [4])
    t = np.array([130.0], np.float32)
    expected = _reference(reference, x, t)
    got = _run(ours, x, t, None, np.float16).astype(np.float32)
    half = {k: v.astype(np.float16) if k != "mask" else v for k, v in x.items()}
    theirs = _reference(copy.deepcopy(reference).half(), half, t).astype(np.float32)
    assert np.abs(got - expected).max() <= 1.25 * np.abs(theirs - expected).max()


@pytest.mark.parametrize("config", [
    {}, {"qk_norm": "rms_norm_across_heads", "guidance_embeds": True},
    {"interpolation_scale": 2.0, "sample_size": 128}])
def test_full_size_names_and_shapes(first_device: gpucore.Device, config: dict) -> None:
    """Sana 1600M's, Sana Sprint's and Sana 4K's full configs (diffusers' defaults and the
    converter's variations): every parameter diffusers' has, of its shape (allocated
    neither side)."""
    import diffusers
    from accelerate import init_empty_weights

    with init_empty_weights():
        reference = diffusers.SanaTransformer2DModel(**config)
    with nn.deferred():
        ours = SanaTransformer2DModel(dict(reference.config), dtype=np.float16,
                                      device=first_device)
    assert {k: tuple(v.shape) for k, v in ours.named_parameters()} == {
        k: tuple(v.shape) for k, v in reference.state_dict().items()}


@pytest.mark.nodevice
def test_bad_configs_get_one_line() -> None:
    with pytest.raises(ValueError, match="qk_norm"):
        SanaTransformer2DModel({**SANA_TINY, "qk_norm": "layer_norm"})
    with pytest.raises(ValueError, match="cross_attention_dim"):
        SanaTransformer2DModel({**SANA_TINY, "cross_attention_dim": 12})


def test_bad_inputs_get_one_line(first_device: gpucore.Device) -> None:
    ours = SanaTransformer2DModel(SANA_SPRINT_TINY, device=first_device)
    x = _inputs(5, 1, (4, 4), 3, [3])
    latents = asarray(x["latents"], device=first_device)
    states = asarray(x["states"], device=first_device)
    with pytest.raises(ValueError, match="guidance"):
        ours(latents, states, [0.5])
    with pytest.raises(ValueError, match="encoder_attention_mask"):
        ours(latents, states, [0.5], [0.1], np.ones((1, 4)))
    with pytest.raises(ValueError, match="channels"):
        ours(asarray(x["latents"][:, :4], device=first_device), states, [0.5], [0.1])
    with pytest.raises(ValueError, match="one value per latent"):
        ours(latents, states, [0.5, 0.2, 0.1], [0.1])
