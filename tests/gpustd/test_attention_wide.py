"""gpustd.nn.attention at wide head dims (gpustd/nn/_attention_wide.py: two GEMMs around a row
softmax, a chunk of query rows at a time) against torch in float64; float16 on the matrix
units, emulated where the device has none (conftest.matrix_device)."""

from __future__ import annotations

import types

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import matrix_device
from support import assert_close, random_array

import gpucore
from gpustd import Tensor
from gpustd.gemm import matrix_units
from gpustd.nn import _attention_wide as wide
from gpustd.nn.attention import attention


def reference(q: np.ndarray, k: np.ndarray, v: np.ndarray, **kwargs) -> np.ndarray:
    t = [torch.from_numpy(np.asarray(x, dtype=np.float64)) for x in (q, k, v)]
    return F.scaled_dot_product_attention(*t, **kwargs).numpy()


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """The shapes record_attention_wide was asked for: proof the path ran, or did not."""
    seen: list[tuple[int, ...]] = []
    original = wide.record_attention_wide

    def spy(*args, shape, **kwargs):
        seen.append(shape)
        return original(*args, shape=shape, **kwargs)

    monkeypatch.setattr(wide, "record_attention_wide", spy)
    return seen


def _run(device: gpucore.Device, arrays, **kwargs) -> np.ndarray:
    return attention(*(Tensor.from_numpy(x, device=device) for x in arrays), **kwargs).numpy()


@pytest.mark.parametrize("b,h,lq,lk,d,rows", [(1, 1, 70, 66, 512, 16), (2, 2, 131, 77, 256, 30),
                                              (1, 1, 5, 301, 384, 64)])
def test_float32_matches_torch_over_chunks(device, calls, monkeypatch, b, h, lq, lk, d, rows):
    # a chunk of `rows` query rows (the last one short), entries past the first at offsets
    monkeypatch.setattr(wide, "SCORE_BYTES", 4 * lk * rows)
    rng = np.random.default_rng(d + lq)
    arrays = [random_array(rng, (b, h, n, d), np.float32, -1.0, 1.0) for n in (lq, lk, lk)]
    got = _run(device, arrays, scale=0.11)
    assert calls == [(b, h, lq, lk, d)]
    assert_close(got, reference(*arrays, scale=0.11), tol=2e-5)


def test_one_head_of_tokens_layout(device, calls, monkeypatch):
    # the VAE's call: (B, L, D) with heads=1
    monkeypatch.setattr(wide, "SCORE_BYTES", 4 * 90 * 20)
    rng = np.random.default_rng(7)
    q, k, v = (random_array(rng, (2, n, 320), np.float32, -1.0, 1.0) for n in (45, 90, 90))
    got = _run(device, (q, k, v), heads=1)
    assert calls == [(2, 1, 45, 90, 320)] and got.shape == (2, 45, 320)
    expected = reference(q[:, None], k[:, None], v[:, None])[:, 0]
    assert_close(got, expected, tol=2e-5)


def test_float16_on_the_matrix_units(f16_device, calls, monkeypatch):
    device = matrix_device(f16_device)
    b, lq, lk, d = 2, 150, 400, 384  # Qwen-Image's VAE head; chunks of 64, 64 and 22 rows
    if not wide.applies(d, np.dtype(np.float16), device, True):
        pytest.skip("no matrix units, real or emulated")
    monkeypatch.setattr(wide, "SCORE_BYTES", 4 * lk * 64)
    rng = np.random.default_rng(d)
    # scores up to ~29: rounded to float16 they would put the output 5.2e-3 to 5.5e-3 of its
    # largest value off (numpy, these shapes); in float32 4.8e-4
    arrays = [random_array(rng, (b, 1, n, d), np.float16, -1.0, 1.0) for n in (lq, lk, lk)]
    got = _run(device, arrays, scale=1.0)
    assert got.dtype == np.float16 and calls == [(b, 1, lq, lk, d)]
    expected = reference(*arrays, scale=1.0)
    assert np.abs(got - expected).max() <= 2e-3 * np.abs(expected).max()


def test_scratch_is_one_chunk_of_scores(device, monkeypatch):
    # 2048 x 2048 tokens: 16 MiB of float32 scores whole; a chunk of 64 rows holds 1/32 of it
    monkeypatch.setattr(wide, "SCORE_BYTES", 64 * 2048 * 4)
    rng = np.random.default_rng(3)
    q, k, v = (Tensor.from_numpy(random_array(rng, (1, 1, 2048, 256), np.float32, -1.0, 1.0),
                                 device=device) for _ in range(3))
    created: list[int] = []
    original = gpucore.Buffer.__init__

    def counting(self, *args, **kwargs):
        original(self, *args, **kwargs)
        created.append(self.nbytes)

    monkeypatch.setattr(gpucore.Buffer, "__init__", counting)
    out = attention(q, k, v)
    monkeypatch.undo()
    # the chunk's scores and probabilities made once for all 32 chunks; nothing near the
    # whole score matrix (the rest: the output, each chunk's output rows, the portable
    # GEMM's partial sums of its K splits)
    chunk = 64 * 2048 * 4
    assert created.count(chunk) == 2 and max(created) <= 2048 * 2048 * 4 / 8
    rows = [0, 63, 64, 2047]
    qn, kn, vn = (x.numpy() for x in (q, k, v))
    assert_close(out.numpy()[:, :, rows], reference(qn[:, :, rows], kn, vn), tol=2e-5)


def test_interleaved_heads_are_made_contiguous(device, calls, monkeypatch):
    # AuraFlow's and Ideogram 4's call: (B, L, H*D) with 256-wide heads, a query length apart
    # from the keys'; each head copied into its own block, then two GEMMs a chunk of rows
    monkeypatch.setattr(wide, "SCORE_BYTES", 4 * 53 * 24)
    rng = np.random.default_rng(5)
    q, k, v = (random_array(rng, (2, n, 3 * 256), np.float32, -1.0, 1.0) for n in (37, 53, 53))
    got = _run(device, (q, k, v), heads=3, scale=0.07)
    assert calls == [(2, 3, 37, 53, 256)] and got.shape == (2, 37, 3 * 256)

    def split(x: np.ndarray) -> np.ndarray:
        return x.reshape(2, -1, 3, 256).transpose(0, 2, 1, 3)

    expected = reference(split(q), split(k), split(v), scale=0.07)
    assert_close(got, expected.transpose(0, 2, 1, 3).reshape(2, 37, 3 * 256), tol=2e-5)


def test_masks_causal_and_gpus_narrow_heads_keep_the_flash_kernel(device, calls):
    rng = np.random.default_rng(1)
    arrays = [random_array(rng, (1, 1, 40, 512), np.float32, -1.0, 1.0) for _ in range(3)]
    mask = rng.random((40, 40)) < 0.8
    assert_close(_run(device, arrays, mask=mask), reference(*arrays, attn_mask=torch.from_numpy(
        mask)), tol=2e-5)
    assert_close(_run(device, arrays, causal=True), reference(*arrays, is_causal=True),
                 tol=2e-5)
    narrow = [random_array(rng, (1, 2, 40, 160), np.float32, -1.0, 1.0) for _ in range(3)]
    _run(device, narrow)  # GPUs: the flash kernel; CPU adapters: every head past 32 is wide
    assert calls == ([(1, 2, 40, 40, 160)] if device.info.type == "cpu" else [])


def test_a_memory_cap_shrinks_the_chunks(device):
    # 128 MiB of scores a chunk: 2048 rows against 16,384 keys; under a 512 MiB cap (--max-vram)
    # a sixteenth of it, 32 MiB: 512 rows
    assert wide.chunk_rows(16384, 16384, device) == 2048
    assert wide.chunk_rows(100, 16384, device) == 100
    previous = device.memory_limit.bytes
    device.memory_limit.set(512 << 20)
    try:
        assert wide.chunk_rows(16384, 16384, device) == 512
    finally:
        device.memory_limit.set(previous)

    small = types.SimpleNamespace(limits={"max-storage-buffer-binding-size": 64 << 20},
                                  memory_limit=None)  # binds at most 64 MiB a buffer
    assert wide.chunk_rows(16384, 16384, small) == 1024

def test_scores_stored_straight_from_the_accumulators(f16_device, monkeypatch):
    # a product that fills its tile (aligned) stores its f32 sums with subgroupMatrixStore,
    # bit for bit what the staged epilogue writes (alpha 0.5 takes that branch: exact halves)
    device = matrix_device(f16_device)
    if not matrix_units.available(device):
        pytest.skip("no matrix units, real or emulated")
    rng = np.random.default_rng(5)
    m, n, k = 128, 256, 64
    a = Tensor.from_numpy(random_array(rng, (m, k), np.float16, -1.0, 1.0), device=device)
    b = Tensor.from_numpy(random_array(rng, (n, k), np.float16, -1.0, 1.0), device=device)
    kernels = []
    original = matrix_units._kernel

    def spy(tile, *args, **kwargs):
        kernels.append((tile.direct, kwargs.get("split")))
        return original(tile, *args, **kwargs)

    monkeypatch.setattr(matrix_units, "_kernel", spy)
    found = []
    for alpha in (1.0, 0.5):
        c = Tensor.empty((m, n), np.float32, device=device)
        matrix_units.record_gemm_f32_out(a.buffer, b.buffer, c.buffer, m=m, n=n, k=k,
                                         trans_b=True, alpha=alpha)
        found.append(c.numpy())
    assert kernels == [(True, True), (False, True)]  # the direct kernel, then the staged one
    assert np.array_equal(found[0] * 0.5, found[1])
    expected = a.numpy().astype(np.float64) @ b.numpy().astype(np.float64).T
    assert np.abs(found[0] - expected).max() <= 1e-5 * np.abs(expected).max()
