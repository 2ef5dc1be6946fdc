"""The direct attention of CPU adapters (gpustd/nn/_attention_cpu.py,
shaders/nn/attention_cpu.wgsl) against torch's scaled_dot_product_attention in float64: head
dims of every slot count and some not a multiple of 4 (scalar reads), query and key counts
past its blocks of 4 rows and 4 keys, masks, causal rows, (B, L, H*D) tensors and float16. A
GPU adapter runs it too, taken for a CPU here (the kernel is portable WGSL); adapters after
the first run the sweep's fixed cases only."""

from __future__ import annotations

import contextlib
import dataclasses
import importlib

import numpy as np
import pytest
from conftest import sweep_subset_elsewhere
from hypothesis import given, settings
from hypothesis import strategies as st
from support import assert_close, random_array
from test_attention import F32_TOL, qkv, reference, run

from gpucore import _kernel as kernel_store
from gpustd import Tensor
from gpustd.nn.attention import attention

attention_cpu = importlib.import_module("gpustd.nn._attention_cpu")


@contextlib.contextmanager
def as_cpu(device):
    """`device` as a CPU adapter (it is one on CI), so attention() takes the direct kernel."""
    with pytest.MonkeyPatch.context() as patch:
        if device.info.type != "cpu":
            patch.setattr(device, "info", dataclasses.replace(device.info, type="cpu"))
        yield device


@pytest.fixture
def cpu(device):
    with as_cpu(device):
        yield device


@settings(max_examples=10, deadline=None)
@given(b=st.integers(1, 2), h=st.integers(1, 3),
       lq=st.sampled_from([1, 3, 5, 31, 33, 77, 97]),
       lk=st.sampled_from([1, 2, 7, 40, 77, 101]),
       d=st.sampled_from([1, 3, 8, 10, 16, 24, 29, 32]),
       scale=st.sampled_from([None, 0.05, 1.0]),
       seed=st.integers(0, 2**31))
def test_matches_torch(device, b, h, lq, lk, d, scale, seed):
    sweep_subset_elsewhere(device, False)
    q, k, v = qkv(np.random.default_rng(seed), b, h, lq, lk, d)
    with as_cpu(device):
        got = run(device, q, k, v, scale=scale)
    assert_close(got, reference(q, k, v, scale=scale), tol=F32_TOL)


@pytest.mark.parametrize("length,d", [(1, 8), (37, 32), (66, 10)])
def test_causal_with_a_mask(cpu, length, d):
    rng = np.random.default_rng(length)
    q, k, v = qkv(rng, 2, 3, length, length, d)
    assert_close(run(cpu, q, k, v, causal=True), reference(q, k, v, causal=True), tol=F32_TOL)
    mask = random_array(rng, (length, length), np.float32, -4.0, 4.0)
    both = np.where(np.tril(np.ones((length, length), bool)), mask, -np.inf)
    assert_close(run(cpu, q, k, v, mask=mask, causal=True), reference(q, k, v, mask=both),
                 tol=F32_TOL)


def test_masks_broadcast_and_fully_masked_rows(cpu):
    rng = np.random.default_rng(1)
    q, k, v = qkv(rng, 2, 2, 45, 66, 30)
    additive = random_array(rng, (2, 1, 45, 66), np.float32, -4.0, 4.0)
    additive[..., 5] = -np.inf
    assert_close(run(cpu, q, k, v, mask=additive), reference(q, k, v, mask=additive),
                 tol=F32_TOL)
    keep = rng.random((2, 45, 66)) < 0.3
    keep[1, 7] = False  # a row with no key left: torch gives 0
    expected = reference(q, k, v, mask=keep)
    assert np.all(expected[:, 1, 7] == 0)
    assert_close(run(cpu, q, k, v, mask=keep), expected, tol=F32_TOL)
    row = random_array(rng, (66,), np.float32, -4.0, 4.0)  # one mask for every query
    assert_close(run(cpu, q, k, v, mask=row), reference(q, k, v, mask=row), tol=F32_TOL)


@pytest.mark.parametrize("heads,d,causal", [(8, 32, False), (4, 8, True), (3, 10, False)])
def test_heads_layout(cpu, heads, d, causal):
    # (B, L, H*D) tensors, as linear layers give them: CLIP's causal text attention, a UNet's
    # cross-attention over 77 tokens, and a head dim whose rows are not 16-byte aligned
    rng = np.random.default_rng(d)
    b, lq, lk = 2, 77 if causal else 100, 77
    x = [random_array(rng, (b, n, heads * d)) for n in (lq, lk, lk)]
    got = attention(*(Tensor.from_numpy(a, device=cpu) for a in x), heads=heads, causal=causal)
    split = [a.reshape(b, -1, heads, d).transpose(0, 2, 1, 3) for a in x]
    expected = reference(*split, causal=causal).transpose(0, 2, 1, 3).reshape(b, lq, -1)
    assert_close(got.numpy(), expected, tol=F32_TOL)


@pytest.mark.parametrize("lq,lk,d,causal", [(64, 77, 32, False), (33, 33, 16, True)])
def test_float16(f16_device, lq, lk, d, causal):
    q, k, v = qkv(np.random.default_rng(d), 2, 2, lq, lk, d, np.float16)
    with as_cpu(f16_device):
        got = run(f16_device, q, k, v, causal=causal)
    assert got.dtype == np.float16
    assert_close(got, reference(q, k, v, causal=causal), dtype=np.float16)


def test_head_dims_to_32_share_one_kernel_and_wider_ones_take_the_flash_kernel(cpu,
                                                                              monkeypatch):
    # A tiny model's head dims (its text encoder's 8, its UNet's 16, its VAE's 32) run one
    # kernel: each kernel more is a second or more of llvmpipe compiling in every process.
    # Past 32 an odd head dim takes the flash kernel's plans (even ones: the next test).
    built: list = []
    cached = kernel_store.Kernel.cached
    monkeypatch.setattr(kernel_store.Kernel, "cached", lambda *a, **kw: (
        built.append((a[0], repr(kw))), cached(*a, **kw))[1])
    rng = np.random.default_rng(5)
    for d in (8, 16, 24, 32, 33):
        q, k, v = qkv(rng, 1, 2, 37, 29, d)
        assert_close(run(cpu, q, k, v), reference(q, k, v), tol=F32_TOL)
    names = [name for name, _ in built if name.startswith("nn/attention")]
    assert names == ["nn/attention_cpu"] * 4 + ["nn/attention"]
    assert len({args for name, args in built if name == "nn/attention_cpu"}) == 1


def test_even_head_dims_past_32_take_the_two_gemms(cpu, monkeypatch):
    # A small VAE's one 64-wide head runs as two GEMMs around a row softmax on CPU adapters,
    # on GEMM kernels a picture builds anyway, not the flash kernel (2 s of llvmpipe compiling
    # in every process); so do (B, H, L, D) heads, one batch entry at a time. Masks, causal
    # rows and (B, L, H*D) heads keep the flash kernel.
    built: list = []
    cached = kernel_store.Kernel.cached
    monkeypatch.setattr(kernel_store.Kernel, "cached", lambda *a, **kw: (
        built.append(a[0]), cached(*a, **kw))[1])
    rng = np.random.default_rng(6)
    for b, h, d in ((2, 1, 64), (1, 2, 34)):
        q, k, v = qkv(rng, b, h, 37, 29, d)
        assert_close(run(cpu, q, k, v), reference(q, k, v), tol=F32_TOL)
    assert {name for name in built if name.startswith("nn/attention")} == {"nn/attention_rows"}
    assert "linalg/gemm_cpu" in built
    q, k, v = qkv(rng, 1, 1, 29, 29, 64)
    assert_close(run(cpu, q, k, v, causal=True), reference(q, k, v, causal=True), tol=F32_TOL)
    assert built[-1] == "nn/attention"
