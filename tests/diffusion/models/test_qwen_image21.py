"""The Qwen-Image 2.1 transformer (prompt prefix once, image tokens per step) against
diffusers' QwenImage21Transformer2DModel's full forward on torch CPU (tiny random weights),
text alone and with condition pictures' latents among the prompt's tokens (editing)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from diffusers.models.transformers import transformer_qwenimage21 as diffusers21
from sd_tiny import randomized, state_dict
from support import assert_close

import gpucore
from diffusion.models.qwen_image21 import QwenImage21Transformer2DModel, qwen_image21_positions
from diffusion.models.qwen_image21_layout import prefix_keep, prefix_layout
from gpustd import asarray

TINY: dict[str, Any] = dict(
    patch_size=1, in_channels=16, out_channels=16, num_layers=2, attention_head_dim=16,
    num_attention_heads=2, context_in_dim=32, mlp_ratio=3, axes_dims_rope=(4, 6, 6))
# measured up to 5.6e-5 of the output's rms: the timestep's sinusoid of arguments up to 1000
# rad, rounded in float32 by each side's own frequencies (1.2e-5 at t = 0)
TOL = 1e-4


def _tiny_reference() -> Any:
    """diffusers' model of TINY, weights scaled so the prompt visibly matters."""
    return randomized(diffusers21.QwenImage21Transformer2DModel(**TINY), 11, scale=0.4)


def _reference(model: Any, latents: np.ndarray, text: np.ndarray, keep: np.ndarray,
               t: np.ndarray, rows: int, columns: int, pads: np.ndarray | None = None,
               condition: np.ndarray | None = None, shapes: tuple = ()) -> np.ndarray:
    """diffusers' uncached forward (its default SDPA processor, the prefix segment by
    segment), the image's tokens; the pipeline's img_mask: the prompt's image pads (`pads`
    (L,), none by default) then one slot per 2 x 2 latents, the condition pictures' latents
    first in hidden_states and their shapes first in img_shapes."""
    batch, length = keep.shape
    pads = np.zeros(length, bool) if pads is None else pads
    slots = torch.from_numpy(np.concatenate([pads, np.ones(rows * columns // 4, bool)]))
    joint = latents if condition is None else np.concatenate([condition, latents], axis=1)
    img_shapes = [[*((1, r, c) for r, c in shapes), (1, rows, columns)]] * batch
    with torch.no_grad():
        out = model(torch.from_numpy(joint), torch.from_numpy(text), torch.from_numpy(t),
                    img_shapes, slots[None].expand(batch, -1), torch.from_numpy(keep)).sample
    return out[:, -rows * columns:].numpy()


def _pads(layout: list[int | tuple[int, int]]) -> np.ndarray:
    """The prompt's image-pad row (L,) of a prefix layout: a text run's tokens False, a
    picture's rows * columns / 4 pads True."""
    return np.concatenate([np.ones(item[0] * item[1] // 4, bool) if isinstance(item, tuple)
                           else np.zeros(item, bool) for item in layout])


def test_transformer_equals_diffusers(device: gpucore.Device) -> None:
    """Two prompts (9 tokens and 6 right-padded to 9) and 5 x 4 latents (odd rows: the
    centred grid); one prefix serves two timesteps."""
    reference = _tiny_reference()
    ours = QwenImage21Transformer2DModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(3)
    rows, columns = 5, 4
    latents = rng.standard_normal((2, rows * columns, TINY["in_channels"])).astype(np.float32)
    text = rng.standard_normal((2, 9, TINY["context_in_dim"])).astype(np.float32)
    keep = np.ones((2, 9), bool)
    keep[1, 6:] = False
    x = asarray(latents, device=device)
    prefix = ours.prefix(asarray(text, device=device), keep)
    for t in (np.array([0.9, 0.3], np.float32), np.array([0.05, 0.6], np.float32)):
        got = ours(x, t, rows, columns, prefix).numpy()
        assert_close(got, _reference(reference, latents, text, keep, t, rows, columns), tol=TOL)
    # the prompt visibly matters (the test's premise)
    other = text[::-1].copy()
    changed = ours(x, t, rows, columns, ours.prefix(asarray(other, device=device), keep))
    assert np.abs(changed.numpy() - got).mean() > 0.1 * np.abs(got).mean()
    # the padding does not: other values there leave the flow as it was
    padded = text.copy()
    padded[1, 6:] = rng.standard_normal((3, TINY["context_in_dim"])) * 10
    again = ours(x, t, rows, columns, ours.prefix(asarray(padded, device=device), keep))
    np.testing.assert_array_equal(again.numpy(), got)


def test_transformer_f16(f16_device: gpucore.Device) -> None:
    """float16 weights and latents, the prompt's states float32 as the encoder returns them:
    diffusers' float32 output to float16 error (measured 1.2e-2), text alone and with a
    condition picture."""
    reference = _tiny_reference()
    ours = QwenImage21Transformer2DModel(dict(reference.config), dtype=np.float16,
                                         device=f16_device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(4)
    rows, columns = 2, 6
    latents = rng.standard_normal((1, rows * columns, TINY["in_channels"])).astype(np.float32)
    text = rng.standard_normal((1, 7, TINY["context_in_dim"])).astype(np.float32)
    t = np.array([0.5], np.float32)  # exact in float16, as diffusers rounds it
    prefix = ours.prefix(asarray(text, device=f16_device))
    got = ours(asarray(latents, dtype=np.float16, device=f16_device), t, rows, columns, prefix)
    assert got.dtype == np.float16
    assert_close(got.numpy().astype(np.float32), _reference(
        reference, latents, text, np.ones((1, 7), bool), t, rows, columns), tol=2e-2)
    # a 2 x 4 condition picture's float32 latents in place of 2 of the tokens (measured 1.3e-2)
    pads = _pads([2, (2, 4), 3])
    condition = rng.standard_normal((1, 8, TINY["in_channels"])).astype(np.float32)
    prefix = ours.prefix(asarray(text, device=f16_device), image_pad_mask=pads,
                         condition_latents=condition, condition_shapes=[(2, 4)])
    got = ours(asarray(latents, dtype=np.float16, device=f16_device), t, rows, columns, prefix)
    assert_close(got.numpy().astype(np.float32), _reference(
        reference, latents, text, np.ones((1, 7), bool), t, rows, columns, pads, condition,
        ((2, 4),)), tol=2e-2)


def test_condition_pictures_equal_diffusers(device: gpucore.Device) -> None:
    """Editing: two condition pictures of 3 x 4 and 4 x 6 latents, their image pads among the
    prompt's tokens (3 text, 3 pads, 2 text, 6 pads, 4 text; the second prompt padded on the
    right by 3), 5 x 4 target latents, one prefix for two timesteps; then one 2 x 6 picture.
    Each picture's latents visibly matter."""
    reference = _tiny_reference()
    ours = QwenImage21Transformer2DModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(5)
    rows, columns, channels = 5, 4, TINY["in_channels"]
    latents = rng.standard_normal((2, rows * columns, channels)).astype(np.float32)
    x = asarray(latents, device=device)
    layout: list[int | tuple[int, int]] = [3, (3, 4), 2, (4, 6), 4]
    shapes, pads = ((3, 4), (4, 6)), _pads(layout)
    text = rng.standard_normal((2, len(pads), TINY["context_in_dim"])).astype(np.float32)
    keep = np.ones((2, len(pads)), bool)
    keep[1, -3:] = False
    condition = rng.standard_normal((2, 36, channels)).astype(np.float32)

    def run(condition: np.ndarray, t: np.ndarray) -> np.ndarray:
        prefix = ours.prefix(asarray(text, device=device), keep, image_pad_mask=pads,
                             condition_latents=condition, condition_shapes=shapes)
        return ours(x, t, rows, columns, prefix).numpy()

    prefix = ours.prefix(asarray(text, device=device), keep, image_pad_mask=np.stack([pads] * 2),
                         condition_latents=asarray(condition, device=device),
                         condition_shapes=shapes)
    for t in (np.array([0.9, 0.3], np.float32), np.array([0.05, 0.6], np.float32)):
        got = ours(x, t, rows, columns, prefix).numpy()
        assert_close(got, _reference(reference, latents, text, keep, t, rows, columns, pads,
                                     condition, shapes), tol=TOL)
    # each picture's latents visibly matter (the test's premise)
    for start, end in ((0, 12), (12, 36)):
        other = condition.copy()
        other[:, start:end] = rng.standard_normal((2, end - start, channels))
        assert np.abs(run(other, t) - got).mean() > 0.1 * np.abs(got).mean()
    # one picture among the text, a prompt alone
    layout, shapes = [4, (2, 6), 3], ((2, 6),)
    pads = _pads(layout)
    text, keep = text[:1, :len(pads)], np.ones((1, len(pads)), bool)
    x = asarray(latents[:1], device=device)
    assert_close(run(condition[:1, :12], t[:1]), _reference(
        reference, latents[:1], text, keep, t[:1], rows, columns, pads, condition[:1, :12],
        shapes), tol=TOL)
    # bad input: one line each
    states = asarray(np.concatenate([text] * 2), device=device)
    with pytest.raises(ValueError, match="different places"):
        ours.prefix(states, image_pad_mask=np.stack([pads, pads[::-1]]))
    with pytest.raises(ValueError, match="no condition_latents"):
        ours.prefix(states, image_pad_mask=pads, condition_shapes=shapes)


@pytest.mark.nodevice
def test_positions_follow_diffusers() -> None:
    """A layout with condition-image blocks inside the prompt (Qwen-Image-Edit 2.1's)."""
    axes = TINY["axes_dims_rope"]
    layout: list[int | tuple[int, int]] = [3, (2, 3), 2, (3, 3), 4, (5, 4)]
    image = [isinstance(item, tuple) for item in layout]
    pad_mask = torch.tensor([flag for item, flag in zip(layout, image) for _ in range(
        item[0] * item[1] if isinstance(item, tuple) else item)])
    shapes = [(1, *item) for item in layout if isinstance(item, tuple)]
    freqs = diffusers21.QwenImage21Rope(theta=10000, axes_dim=list(axes))(shapes, pad_mask, "cpu")
    angles = np.angle(freqs.numpy())
    ids = qwen_image21_positions(layout)
    offset = 0
    for axis, dim in enumerate(axes):
        scales = 1.0 / 10000 ** (np.arange(0, dim, 2) / dim)
        expected = np.angle(np.exp(1j * np.outer(ids[:, axis], scales)))
        assert_close(angles[:, offset:offset + dim // 2], expected, tol=1e-4)
        offset += dim // 2


@pytest.mark.nodevice
def test_bad_input_gets_one_line() -> None:
    with pytest.raises(ValueError, match="causal_condition"):
        QwenImage21Transformer2DModel({**TINY, "causal_condition": False})
    with pytest.raises(ValueError, match="rotary positions"):
        qwen_image21_positions([9000, (4, 4)])
    pads = np.array([0, 1, 1, 0, 1, 0], bool)
    with pytest.raises(ValueError, match="not one run"):
        prefix_layout(6, pads, [(2, 6)])
    with pytest.raises(ValueError, match="holds 3 image pads"):
        prefix_layout(6, pads, [(2, 2)])
    with pytest.raises(ValueError, match="even size"):
        prefix_layout(6, pads, [(3, 3)])


@pytest.mark.nodevice
def test_prefix_layout_from_image_pads() -> None:
    """Pictures' pads become their blocks (adjacent pictures stay two blocks, as diffusers'
    build_token_metadata keeps them); text keeps its padding flags, pictures are all kept."""
    pads = np.array([0, 1, 1, 1, 1, 1, 0, 0], bool)
    layout = prefix_layout(8, pads, [(2, 6), (4, 2)])
    assert layout == [1, (2, 6), (4, 2), 2]
    keep = np.array([[1, 1, 1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0, 1, 0]], bool)
    joint = prefix_keep(layout, keep)
    assert joint is not None and joint.shape == (2, 23)
    np.testing.assert_array_equal(joint[1], [True] * 22 + [False])
    assert prefix_keep(layout, keep[:1]) is None
    assert prefix_layout(5, None, []) == [5]
