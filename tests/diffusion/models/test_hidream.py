"""The HiDream-I1 transformer against diffusers' HiDreamImageTransformer2DModel on torch CPU
(tiny random weights: MoE of 4 experts, top 2)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from hidream_tiny import HIDREAM_TINY, LLAMA_LAYERS, tiny_hidream_transformer
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.models import hidream_blocks
from diffusion.models.hidream import HiDreamImageTransformer2DModel
from diffusion.models.hidream_blocks import route
from diffusion.models.step_cache import FirstBlockCache
from gpustd import asarray

TOL = 3e-5  # float32: measured 1.4e-5 (float16: 7.1e-3 against its 1.5e-2)
T5_WIDTH, LLAMA_WIDTH = HIDREAM_TINY["caption_channels"]


def _inputs(seed: int, batch: int, size: tuple[int, int]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "hidden_states": rng.standard_normal((batch, 4, *size)).astype(np.float32),
        "timesteps": rng.uniform(0, 1000, batch).astype(np.float32),
        "encoder_hidden_states_t5": rng.standard_normal((batch, 5, T5_WIDTH)).astype(np.float32),
        "encoder_hidden_states_llama3": rng.standard_normal(
            (LLAMA_LAYERS, batch, 7, LLAMA_WIDTH)).astype(np.float32),
        "pooled_embeds": rng.standard_normal((batch, 16)).astype(np.float32)}


def _reference(model: torch.nn.Module, inputs: dict[str, np.ndarray]) -> np.ndarray:
    with torch.no_grad():
        return model(**{k: torch.from_numpy(v) for k, v in inputs.items()},
                     return_dict=False)[0].numpy()


def _ours(reference: torch.nn.Module, device: gpucore.Device, dtype: type = np.float32
          ) -> HiDreamImageTransformer2DModel:
    ours = HiDreamImageTransformer2DModel(dict(reference.config), dtype=dtype, device=device)
    ours.load_state_dict(state_dict(reference))
    return ours


def test_transformer_equals_diffusers(device: gpucore.Device,
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    """Two pictures of 6 x 10 latents (15 patches, padded to the 16 of max_resolution as
    diffusers pads a non-square picture): diffusers' output; the T5 text, the Llama states
    and the pooled embedding each visibly matter, and the gate routes tokens to every expert."""
    reference = tiny_hidream_transformer()
    ours = _ours(reference, device)
    inputs = _inputs(1, 2, (6, 10))
    choices: list[np.ndarray] = []

    def recorded(logits: np.ndarray, top_k: int) -> tuple[np.ndarray, np.ndarray]:
        chosen, scores = route(logits, top_k)
        choices.append(chosen)
        return chosen, scores

    monkeypatch.setattr(hidream_blocks, "route", recorded)
    got = ours(**inputs).numpy()
    assert_close(got, _reference(reference, inputs), tol=TOL)
    # every block's gate sends tokens to different pairs of experts, all four used
    assert all(len(np.unique(chosen, axis=0)) > 1 for chosen in choices)
    assert len(choices) == 4 and set(np.concatenate(choices).ravel()) == {0, 1, 2, 3}
    for name, axis in (("encoder_hidden_states_t5", 0), ("encoder_hidden_states_llama3", 1),
                       ("pooled_embeds", 0)):
        changed = ours(**{**inputs, name: np.flip(inputs[name], axis).copy()}).numpy()
        assert np.abs(changed[1] - got[1]).mean() > 0.05 * np.abs(got[1]).mean(), name


def test_square_and_patched(device: gpucore.Device) -> None:
    """A square 8 x 8 picture (no padding) as a Tensor, and a 4 x 6 one patched by diffusers'
    `patchify` (the tokens, masks, ids and sizes passed in): diffusers' outputs; a bad
    width is a one-line error."""
    reference = tiny_hidream_transformer()
    ours = _ours(reference, device)
    inputs = _inputs(2, 1, (8, 8))
    got = ours(**{**inputs, "hidden_states": asarray(inputs["hidden_states"], device=device)})
    assert_close(got.numpy(), _reference(reference, inputs), tol=TOL)
    inputs = _inputs(3, 1, (4, 6))
    tokens, masks, sizes, ids = (v.numpy() for v in reference.patchify(
        torch.from_numpy(inputs["hidden_states"])))
    patched = {**inputs, "hidden_states": tokens, "hidden_states_masks": masks,
               "img_ids": ids, "img_sizes": sizes}
    assert_close(ours(**patched).numpy(), _reference(reference, patched), tol=TOL)
    with pytest.raises(ValueError, match=r"pooled_embeds must be \(\.\.\., 16\)"):
        ours(**{**inputs, "pooled_embeds": inputs["pooled_embeds"][:, :8]})


def test_transformer_f16(f16_device: gpucore.Device) -> None:
    """float16 weights and inputs against diffusers' float32 output."""
    reference = tiny_hidream_transformer()
    ours = _ours(reference, f16_device, np.float16)
    inputs = _inputs(4, 2, (4, 6))
    got = ours(**inputs).numpy().astype(np.float32)
    assert_close(got, _reference(reference, inputs), tol=1.5e-2)


def test_first_block_cache(device: gpucore.Device) -> None:
    """First Block Cache: a call computes as without it, and the same input again skips the
    blocks after the first (its residual unchanged) for the cached one, the same output."""
    ours = _ours(tiny_hidream_transformer(), device)
    inputs = _inputs(5, 2, (4, 4))
    plain = ours(**inputs).numpy()
    cache = FirstBlockCache(0.5)
    first = ours(**inputs, cache=cache).numpy()
    again = ours(**inputs, cache=cache).numpy()
    assert (cache.calls, cache.computed) == (2, 1)
    assert_close(first, plain, tol=TOL)
    assert_close(again, plain, tol=TOL)
