"""diffusion.models.transformer_ops on the host (numpy standing in for gpustd, host_gpustd.py)
against torch and diffusers on the CPU: RMS norm, the per-head q/k norm, adaLN's chunks,
modulation and gated residual (float16's clip), and the rotary tables and rotation in both
pair layouts. The device tests (test_flux.py, test_t5.py, test_llm.py) run the real kernels."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import host_gpustd
import torch
from diffusers.models.embeddings import apply_rotary_emb
from diffusers.models.transformers.transformer_flux import FluxPosEmbed
from support import assert_close

from diffusion.models import transformer_ops as ops

pytestmark = pytest.mark.nodevice

TOL = 2e-6  # float32 against torch float32: measured 1.3e-7 at most


@pytest.fixture(autouse=True)
def host(monkeypatch: pytest.MonkeyPatch) -> None:
    host_gpustd.stand_in(monkeypatch)


def rng() -> np.random.Generator:
    return np.random.default_rng(52)


@pytest.mark.parametrize("affine", [True, False])
def test_rms_norm(affine: bool) -> None:
    x = (3 * rng().standard_normal((2, 5, 12))).astype(np.float32)
    norm = ops.RMSNorm(12, eps=0.5, place={"dtype": np.float32, "device": None},
                       elementwise_affine=affine)
    weight = rng().uniform(0.5, 2.0, 12).astype(np.float32) if affine else None
    assert (norm.weight is None) == (not affine)
    if affine:
        norm.weight = weight
    expected = torch.nn.functional.rms_norm(
        torch.from_numpy(x), (12,), None if weight is None else torch.from_numpy(weight),
        eps=0.5).numpy()
    got = norm(x)
    assert got.dtype == np.float32
    assert_close(got, expected, tol=TOL)
    # eps matters at this size (x ~ 3: mean square ~ 9 against 0.5)
    assert np.abs(ops.rms_norm(x, weight, 1e-6) - expected).max() > 100 * TOL


def test_rms_norm_keeps_float16() -> None:
    x = (300 * rng().standard_normal((3, 8))).astype(np.float16)  # x^2 overflows float16
    got = ops.rms_norm(x, None, 1e-6)
    assert got.dtype == np.float16
    expected = torch.nn.functional.rms_norm(torch.from_numpy(x).double(), (8,), eps=1e-6)
    assert_close(got, expected.numpy(), dtype=np.float16)


def test_rms_norm_weight(monkeypatch: pytest.MonkeyPatch) -> None:
    device, made = object(), []
    monkeypatch.setattr(ops.nn, "parameter", lambda shape, dtype, device: made.append(
        (shape, dtype, device)))
    ops.RMSNorm(6, place={"dtype": np.float16, "device": device})
    assert made == [((6,), np.float16, device)]


def test_head_norm() -> None:
    x = rng().standard_normal((2, 3, 4 * 6)).astype(np.float32)
    norm = ops.RMSNorm(6, place={"dtype": np.float32})
    assert norm.weight.shape == (6,)
    norm.weight = rng().uniform(0.5, 2.0, 6).astype(np.float32)
    torch_norm = torch.nn.RMSNorm(6, eps=1e-6)
    with torch.no_grad():
        torch_norm.weight.copy_(torch.from_numpy(norm.weight))
        expected = torch_norm(torch.from_numpy(x).unflatten(-1, (4, 6))).flatten(-2).numpy()
    assert_close(ops.head_norm(norm, x, 4, 6), expected, tol=TOL)
    assert ops.head_norm(None, x, 4, 6) is x


def test_chunks() -> None:
    emb = rng().standard_normal((2, 3 * 5)).astype(np.float32)
    got = ops.chunks(emb, 3)
    expected = [c[:, None].numpy() for c in torch.from_numpy(emb).chunk(3, dim=1)]
    assert len(got) == 3
    for g, e in zip(got, expected):
        np.testing.assert_array_equal(g, e)
    with pytest.raises(ValueError, match="14 features does not split into 3 equal chunks"):
        ops.chunks(emb[:, 1:], 3)


def test_modulate_and_gated_add() -> None:
    x, y = rng().standard_normal((2, 2, 4, 6)).astype(np.float32)
    shift, scale, gate = rng().standard_normal((3, 2, 1, 6)).astype(np.float32)
    tx, ty, tshift, tscale, tgate = map(torch.from_numpy, (x, y, shift, scale, gate))
    assert_close(ops.modulate(x, shift, scale), (tx * (1 + tscale) + tshift).numpy(), tol=TOL)
    assert_close(ops.gated_add(x, gate, y), (tx + tgate * ty).numpy(), tol=TOL)


def test_gated_add_clips_float16() -> None:
    """diffusers clips FLUX's float16 stream to +-65504 (inf otherwise)."""
    residual = np.array([[[60000.0, -60000.0, 1.0]]], np.float16)
    gate = np.array([[[2.0, 2.0, 0.5]]], np.float16)
    y = np.array([[[30000.0, -30000.0, 3.0]]], np.float16)
    got = ops.gated_add(residual, gate, y)
    assert got.dtype == np.float16
    np.testing.assert_array_equal(got, np.array([[[65504.0, -65504.0, 2.5]]], np.float16))


def test_cast() -> None:
    x = np.ones(3, np.float32)
    assert ops.cast(x, np.float32) is x
    assert ops.cast(x, np.float16).dtype == np.float16


def test_rope_heads() -> None:
    config = {"num_attention_heads": 3, "attention_head_dim": 16, "axes_dims_rope": (4, 6, 6)}
    assert ops.rope_heads(config) == (3, 16)
    with pytest.raises(ValueError, match=r"axes_dims_rope \(4, 6, 8\) must add up to "
                                         "attention_head_dim 16"):
        ops.rope_heads({**config, "axes_dims_rope": (4, 6, 8)})


def test_rope_tables_and_rotation(monkeypatch: pytest.MonkeyPatch) -> None:
    """FluxPosEmbed's tables (float64 positions, rounded to float32 first as diffusers does,
    which moves these angles visibly; a theta that is not the default) and apply_rotary_emb's
    pair rotation over every head."""
    ids = rng().uniform(0, 4000, (7, 3))
    axes, theta = (4, 6, 6), 500
    device, devices = object(), []

    def upload(a: np.ndarray, dtype: object = None, device: object = None) -> np.ndarray:
        devices.append(device)
        return np.array(a, dtype)

    monkeypatch.setattr(ops, "asarray", upload)
    cos, sin = ops.rope_tables(ids, axes, theta, device=device)
    assert devices == [device, device]
    assert cos.shape == sin.shape == (7, 1, 16) and cos.dtype == sin.dtype == np.float32
    ref_cos, ref_sin = FluxPosEmbed(theta, list(axes))(torch.from_numpy(ids))
    assert_close(cos[:, 0], ref_cos.numpy(), tol=TOL)
    assert_close(sin[:, 0], ref_sin.numpy(), tol=TOL)
    x = rng().standard_normal((2, 7, 3 * 16)).astype(np.float32)
    expected = apply_rotary_emb(torch.from_numpy(x).unflatten(-1, (3, 16)),
                                (ref_cos, ref_sin), sequence_dim=1).flatten(-2).numpy()
    got = ops.rope(x, cos, sin, 3)
    assert got.dtype == np.float32
    assert_close(got, expected, tol=TOL)
    half = ops.rope(x.astype(np.float16), cos, sin, 3)
    assert half.dtype == np.float16
    assert_close(half, expected, dtype=np.float16)
    assert np.abs(expected - x).max() > 1.0  # the rotation matters
    with pytest.raises(ValueError, match="position ids must be"):
        ops.rope_tables(ids[:, :2], axes, theta, device=None)
    with pytest.raises(ValueError, match=r"rope tables of shape \(7, 1, 16\) do not fit 7 "
                                         "tokens of 4 heads x 12"):
        ops.rope(x, cos, sin, 4)


def test_rope_halves() -> None:
    """transformers' apply_rotary_pos_emb: x * cos + rotate_half(x) * sin, the angles over
    the first half then repeated."""
    angle = rng().uniform(0, 6, (5, 4))
    angle = np.concatenate([angle, angle], axis=1)
    cos = np.cos(angle).astype(np.float32)[:, None]
    sin = np.sin(angle).astype(np.float32)[:, None]
    x = rng().standard_normal((2, 5, 2 * 8)).astype(np.float32)
    tx = torch.from_numpy(x).unflatten(-1, (2, 8))
    half = torch.cat([-tx[..., 4:], tx[..., :4]], dim=-1)
    expected = (tx * torch.from_numpy(cos) + half * torch.from_numpy(sin)).flatten(-2).numpy()
    assert_close(ops.rope(x, cos, sin, 2, halves=True), expected, tol=TOL)
    paired = ops.rope(x, cos, sin, 2)
    assert np.abs(paired - expected).max() > 0.1
