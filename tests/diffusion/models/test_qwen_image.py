"""The Qwen-Image transformer against diffusers' QwenImageTransformer2DModel on torch CPU
(tiny random weights)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from qwenimage_tiny import QWENIMAGE_TINY, tiny_qwenimage_transformer
from sd_tiny import state_dict
from support import assert_close

import gpucore
from diffusion.models.qwen_image import QwenImageTransformer2DModel, qwen_image_positions
from gpustd import asarray

TOL = 1e-3


def _reference(model: torch.nn.Module, packed: np.ndarray, text: np.ndarray, t: np.ndarray,
               rows: int, columns: int, mask: np.ndarray | None = None) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(packed), torch.from_numpy(text),
                     None if mask is None else torch.from_numpy(mask), torch.from_numpy(t),
                     [(1, rows, columns)] * packed.shape[0]).sample.numpy()


def test_transformer_equals_diffusers(device: gpucore.Device) -> None:
    """Two pictures of 5 x 7 patches (odd sizes: the centred rotary grid), 11 text tokens."""
    reference = tiny_qwenimage_transformer()
    ours = QwenImageTransformer2DModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(1)
    rows, columns = 5, 7
    packed = rng.standard_normal((2, rows * columns, QWENIMAGE_TINY["in_channels"]))
    packed = packed.astype(np.float32)
    t = np.array([0.25, 0.8], np.float32)
    text = rng.standard_normal((2, 11, QWENIMAGE_TINY["joint_attention_dim"])).astype(
        np.float32)

    def run(states: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        return ours(asarray(packed, device=device), asarray(states, device=device), t, rows,
                    columns, mask).numpy()

    got = run(text)
    assert_close(got, _reference(reference, packed, text, t, rows, columns), tol=TOL)
    # the text visibly matters (the test's premise), in ours as in diffusers'
    other = text[::-1].copy()
    changed = run(other)
    assert np.abs(changed - got).mean() > 0.1 * np.abs(got).mean()
    assert_close(changed, _reference(reference, packed, other, t, rows, columns), tol=TOL)
    # a padded batch: the masked tokens are not attended to
    mask = np.ones((2, 11), np.int64)
    mask[1, 6:] = 0
    assert_close(run(text, mask), _reference(reference, packed, text, t, rows, columns, mask),
                 tol=TOL)


@pytest.mark.nodevice
def test_positions_follow_diffusers() -> None:
    from diffusers.models.transformers.transformer_qwenimage import QwenEmbedRope

    axes = QWENIMAGE_TINY["axes_dims_rope"]
    embed = QwenEmbedRope(theta=10000, axes_dim=list(axes), scale_rope=True)
    image, text = embed([(1, 5, 8)], max_txt_seq_len=9, device=torch.device("cpu"))
    angles = np.angle(torch.cat([text, image]).numpy())
    ids = qwen_image_positions(5, 8, 9)
    offset = 0
    for axis, dim in enumerate(axes):
        freqs = 1.0 / 10000 ** (np.arange(0, dim, 2) / dim)
        expected = np.angle(np.exp(1j * np.outer(ids[:, axis], freqs)))
        assert_close(angles[:, offset:offset + dim // 2], expected, tol=1e-4)
        offset += dim // 2


@pytest.mark.nodevice
def test_layered_positions_follow_diffusers() -> None:
    """Qwen-Image-Layered's: three frames numbered 0, 1, 2, the picture at -1, the text after
    the largest of half a side and the frames' count (5 // 2 < 3 here, so the count)."""
    from diffusers.models.transformers.transformer_qwenimage import QwenEmbedLayer3DRope

    axes = QWENIMAGE_TINY["axes_dims_rope"]
    embed = QwenEmbedLayer3DRope(theta=10000, axes_dim=list(axes), scale_rope=True)
    image, text = embed([[(1, 3, 5)] * 4], max_txt_seq_len=6, device=torch.device("cpu"))
    angles = np.angle(torch.cat([text, image]).numpy())
    ids = qwen_image_positions(3, 5, 6, [(3, 5)] * 3, layered=True)
    assert sorted(set(ids[6:, 0])) == [-1, 0, 1, 2] and ids[0, 0] == 3
    offset = 0
    for axis, dim in enumerate(axes):
        freqs = 1.0 / 10000 ** (np.arange(0, dim, 2) / dim)
        expected = np.angle(np.exp(1j * np.outer(ids[:, axis], freqs)))
        assert_close(angles[:, offset:offset + dim // 2], expected, tol=1e-4)
        offset += dim // 2


@pytest.mark.nodevice
def test_bad_configs_get_one_line() -> None:
    with pytest.raises(ValueError, match="zero_cond_t"):
        QwenImageTransformer2DModel({**QWENIMAGE_TINY, "zero_cond_t": True})
    with pytest.raises(ValueError, match="axes_dims_rope"):
        QwenImageTransformer2DModel({**QWENIMAGE_TINY, "axes_dims_rope": (4, 4, 4)})


def test_transformer_f16(f16_device: gpucore.Device) -> None:
    """float16 weights, the text states float32 as the LLM encoder returns them: diffusers'
    float32 output to float16 error."""
    reference = tiny_qwenimage_transformer()
    ours = QwenImageTransformer2DModel(dict(reference.config), dtype=np.float16,
                                       device=f16_device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(2)
    rows, columns = 4, 3
    packed = rng.standard_normal((1, rows * columns, QWENIMAGE_TINY["in_channels"]))
    packed = packed.astype(np.float32)
    text = rng.standard_normal((1, 9, QWENIMAGE_TINY["joint_attention_dim"])).astype(
        np.float32)
    t = np.array([0.5], np.float32)
    got = ours(asarray(packed, dtype=np.float16, device=f16_device),
               asarray(text, device=f16_device), t, rows, columns).numpy()
    assert got.dtype == np.float16
    assert_close(got.astype(np.float32),
                 _reference(reference, packed, text, t, rows, columns), tol=2e-2)
