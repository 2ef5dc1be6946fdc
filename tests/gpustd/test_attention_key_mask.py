"""Key masks on the matrix-unit flash attention (gpustd/nn/_attention_subgroup_matrix.py,
SMPlan.mask): a bias per (batch[, head], key), the same for every query row — the padding
mask of a batch of prompts of unequal lengths — added to the scores on the matrix units
instead of sending the call to the scalar kernel. Against float64 numpy, with the matrix
units emulated where the device has none (conftest.matrix_device)."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pytest
from conftest import emulated_subset, matrix_device

import gpucore
from gpucore import _wgsl
from gpustd import Tensor, nn
from gpustd.nn import _attention_subgroup_matrix as sm
from gpustd.nn.attention import _mask

SM_LABEL = "nn/attention_subgroup_matrix:main"


@pytest.fixture
def device(device: gpucore.Device) -> gpucore.Device:
    """Here, the adapter's Device with subgroup matrices, emulated where it has none."""
    return matrix_device(device)


@pytest.mark.parametrize("plan", [
    sm.SMPlan(64, 1, 2, 8, prefetch=True, regs=True, lean=True, split=2, headroom=15),
    sm.SMPlan(128, 1, 2, 4, prefetch=True, regs=True, lean=True, runs=True),
    sm.SMPlan(10, 1, 2, 2)], ids=lambda p: p.name)
@pytest.mark.parametrize("kind", [1, 2])
def test_masked_kernels_bind_the_mask_and_hold_a_bias_tile(plan: sm.SMPlan, kind: int) -> None:
    masked = dataclasses.replace(plan, mask=kind)
    signature = _wgsl.parse(sm.source(masked))
    assert [b.name for b in signature.storage] == ["q", "k", "v", "out", "mask"]
    assert signature.storage[-1].scalar == ("f32" if kind == 1 else "u32")
    assert masked.name == f"{plan.name}-m{kind}"
    # one f32 a key of the tile beside the unmasked plan's workgroup memory
    assert masked.shared_bytes() == plan.shared_bytes() + 4 * plan.bk
    assert f"sh_bias: array<f32, {plan.bk}>" in sm.source(masked)
    assert "sh_bias" not in sm.source(plan) and "mask" not in [
        b.name for b in _wgsl.parse(sm.source(plan)).storage]
    with pytest.raises(ValueError, match="mask must be 0, 1 or 2"):
        dataclasses.replace(plan, mask=3)


def _reference(q: np.ndarray, k: np.ndarray, v: np.ndarray, bias: np.ndarray,
               scale: float) -> np.ndarray:
    """float64 softmax(q k^T scale + bias) v; rows whose every key is -inf give 0."""
    s = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64), k.astype(np.float64)) * scale + bias
    top = s.max(-1, keepdims=True)
    p = np.exp(s - np.where(np.isfinite(top), top, 0.0))
    total = p.sum(-1, keepdims=True)
    p = np.divide(p, total, out=np.zeros_like(p), where=total > 0)
    return np.einsum("bhqk,bhkd->bhqd", p, v.astype(np.float64))


def _keep(b: int, lk: int) -> np.ndarray:
    """(b, 1, 1, lk) keep-masks of a ragged batch: entry 0 drops a block in the middle,
    entry 1 keeps a prefix (a padded prompt), entry 2 keeps nothing (its rows give 0)."""
    keep = np.ones((b, 1, 1, lk), bool)
    keep[0, ..., lk // 4: lk // 2 + 3] = False
    keep[1, ..., 2 * lk // 3:] = False
    keep[2:] = False
    return keep


def _dispatches(device: gpucore.Device, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    labels: list[str] = []
    record = device.record_dispatch

    def watch(*args: Any) -> Any:
        labels.append(args[-1])
        return record(*args)

    monkeypatch.setattr(device, "record_dispatch", watch)
    return labels


# (mask kind, B, H, Lq, Lk, D, scale factor, on emulated matrix units): Lk never a multiple
# of the tiles' 32 keys; D 64 takes a split plan (4 lanes a softmax row), D 16 the
# four-subgroup plan of runs (D 128's on CI's lavapipe); D 128's plans (16 subgroups on a
# GPU) run under Dawn. A masked plan's softmax takes any scale (the lean one's needs > 0).
CASES = [("bool", 3, 2, 37, 75, 64, 1.0, True), ("additive", 2, 3, 50, 45, 16, 1.0, True),
         ("uint32", 3, 1, 20, 70, 16, -0.5, True), ("bool", 3, 2, 140, 150, 128, 1.0, False),
         ("additive", 2, 2, 70, 333, 128, 1.0, False),
         ("uint32", 3, 2, 65, 100, 64, 1.0, False)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c[0]}-d{c[5]}-s{c[6]}")
def test_key_masks_run_on_the_matrix_units(device: gpucore.Device,
                                           monkeypatch: pytest.MonkeyPatch,
                                           case: tuple[Any, ...]) -> None:
    kind, b, h, lq, lk, d, factor, in_subset = case
    if not sm.available(device):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices (Dawn on a GPU has)")
    emulated_subset(device, in_subset)
    rng = np.random.default_rng(lq + lk + d)
    q = (2.0 * rng.standard_normal((b, h, lq, d))).astype(np.float16)
    k, v = (rng.standard_normal((2, b, h, lk, d))).astype(np.float16)
    keep = _keep(b, lk)
    mask: Any = keep
    bias = np.where(keep, 0.0, -np.inf)
    if kind == "additive":  # per head: finite biases of a few units, -inf where dropped
        bias = np.where(keep, 3.0 * rng.standard_normal((b, h, 1, lk)), -np.inf)
        mask = Tensor.from_numpy(bias.astype(np.float32), device=device)
    elif kind == "uint32":
        mask = Tensor.from_numpy(keep.astype(np.uint32), device=device)
    scale = factor / math.sqrt(d)
    expected = _reference(q, k, v, bias, scale)
    # the mask matters: unmasked, the kept rows are far off, the dropped entry's far from 0
    assert np.abs(_reference(q, k, v, np.zeros(lk), scale) - expected).max() > 0.1
    labels = _dispatches(device, monkeypatch)
    got = nn.attention(*(Tensor.from_numpy(x, device=device) for x in (q, k, v)),
                       mask=mask, scale=scale).numpy()
    assert labels == [SM_LABEL]
    # f16 P and the f16 result's rounding: 3.0e-4 to 4.1e-4 of the largest value measured
    # (emulated matrix units; the unmasked kernel's on an H100: 4.3e-4 to 4.7e-4)
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-3
    if b > 2:  # the entry with every key dropped: exactly 0, as the scalar kernel gives
        assert not got[2].any()


def test_loop_softmax_takes_the_mask(device: gpucore.Device) -> None:
    """The plans without scores in registers add the bias in their loops."""
    if not sm.available(device):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices (Dawn on a GPU has)")
    plan = sm.SMPlan(10, 1, 2, 2)  # test_attention_subgroup_matrix's emulated loop plan
    shape = (3, 1, 40, 77, 10)
    b, h, lq, lk, d = shape
    rng = np.random.default_rng(5)
    q = (2.0 * rng.standard_normal((b, h, lq, d))).astype(np.float16)
    k, v = rng.standard_normal((2, b, h, lk, d)).astype(np.float16)
    keep = _keep(b, lk)
    tensors = [Tensor.from_numpy(x, device=device) for x in (q, k, v)]
    mask = Tensor.from_numpy(keep.astype(np.uint32), device=device)
    rows_q, rows_kv = (h * lq * d, lq * d, d), (h * lk * d, lk * d, d)
    out = Tensor.empty(q.shape, np.float16, device=device)
    sm.record_attention_sm(*tensors, out, shape=shape, scale=0.5, plan=plan,
                           strides=(rows_q, rows_kv, rows_kv, rows_q),
                           mask=(mask, 2, (lk, 0, 1)))
    expected = _reference(q, k, v, np.where(keep, 0.0, -np.inf), 0.5)
    assert np.abs(out.numpy() - expected).max() / np.abs(expected).max() < 1e-3
    assert not out.numpy()[2].any()


def test_query_masks_stay_on_the_scalar_kernel(device: gpucore.Device,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A mask with a query dimension (one bias per query row and key) is not a key mask."""
    if not sm.available(device):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices (Dawn on a GPU has)")
    rng = np.random.default_rng(9)
    q, k, v = (rng.standard_normal((1, 2, n, 16)).astype(np.float16) for n in (30, 40, 40))
    keep = rng.random((1, 1, 30, 40)) < 0.7
    labels = _dispatches(device, monkeypatch)
    got = nn.attention(*(Tensor.from_numpy(x, device=device) for x in (q, k, v)),
                       mask=keep).numpy()
    assert labels and SM_LABEL not in labels
    expected = _reference(q, k, v, np.where(keep, 0.0, -np.inf), 0.25)
    assert np.abs(got - expected).max() / np.abs(expected).max() < 1e-3


def test_host_masks_that_keep_every_key_are_no_mask(device: gpucore.Device) -> None:
    shape = (2, 3, 5, 7)
    for keep_all in (np.ones((2, 1, 1, 7), bool), np.zeros((7,), np.float32),
                     np.full((2, 3, 5, 7), -0.0)):
        _, kind, strides = _mask(keep_all, shape, device)
        assert (kind, strides) == (0, [0, 0, 0, 0])
    _, kind, strides = _mask(np.eye(1, 7, 3, dtype=bool), shape, device)
    assert (kind, strides) == (1, [0, 0, 0, 1])  # one key kept: a mask
    with pytest.raises(ValueError, match="does not broadcast"):
        _mask(np.ones((3, 1, 1, 7), bool), shape, device)
    # a mask already on the GPU is taken as it is (telling would need a read-back)
    ones = Tensor.from_numpy(np.ones(7, np.uint32), device=device)
    assert _mask(ones, shape, device)[1] == 2
