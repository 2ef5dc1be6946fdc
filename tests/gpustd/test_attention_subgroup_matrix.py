"""Flash attention on the matrix units (gpustd/nn/_attention_subgroup_matrix.py). Its kernels
compile only on Dawn adapters with subgroup matrices (the GPU machine, GPUCORE_RUNTIME=dawn);
here the generator is checked against gpucore's WGSL reader, and gpustd.nn.attention's f16
results against float64 wherever the kernel is available: everywhere, on adapters with
shader-f16 and subgroups, with the matrix units emulated (conftest.matrix_device)."""

from __future__ import annotations

import dataclasses
import math
import re

import numpy as np
import pytest
from conftest import emulated_subset, matrix_device

import gpucore
from gpucore import _wgsl
from gpustd import Tensor, nn
from gpustd.nn import _attention_subgroup_matrix as sm


@pytest.fixture
def device(device: gpucore.Device) -> gpucore.Device:
    """Here, the adapter's Device with subgroup matrices, emulated where it has none."""
    return matrix_device(device)


PLANS = [sm.SMPlan(40, 2, 2), sm.SMPlan(64, 1, 4), sm.SMPlan(80, 1, 4), sm.SMPlan(160, 1, 2),
         sm.SMPlan(10, 1, 2, 2), sm.SMPlan(40, 1, 2, 4, prefetch=True, regs=True),
         sm.SMPlan(80, 1, 1, 8, prefetch=True, rotate=True, regs=True),
         sm.SMPlan(48, 2, 2, 4, prefetch=True, regs=True),
         sm.SMPlan(40, 1, 2, 4, prefetch=True, regs=True, lean=True),
         sm.SMPlan(64, 1, 1, 8, prefetch=True, rotate=True, regs=True, lean=True)]
# split plans (subgroups sharing a row group), 4 lanes a softmax row: the emulated subset's
# first; a scalar-read D; q staged in column passes where BQ rows do not fit at once; runs of
# adjacent softmax columns (two of the last three, the last one in the emulated subset);
# choose_plan's at head dim 64 (the one before last)
SPLIT_PLANS = [sm.SMPlan(32, 1, 2, 8, prefetch=True, regs=True, lean=True, split=2),
               sm.SMPlan(30, 1, 2, 8, regs=True, split=2),
               sm.SMPlan(128, 1, 2, 8, prefetch=True, regs=True, lean=True, split=2),
               sm.SMPlan(64, 2, 2, 4, prefetch=True, regs=True, lean=True, split=2),
               sm.SMPlan(128, 1, 2, 16, prefetch=True, regs=True, lean=True, split=2),
               sm.SMPlan(64, 2, 2, 8, regs=True, lean=True, split=2),
               sm.SMPlan(128, 1, 2, 12, prefetch=True, regs=True, lean=True, split=2),
               sm.SMPlan(64, 1, 2, 8, prefetch=True, regs=True, lean=True, split=2, runs=True),
               sm.SMPlan(64, 1, 2, 8, prefetch=True, regs=True, lean=True, split=2),
               sm.SMPlan(16, 1, 2, 2, prefetch=True, regs=True, lean=True, runs=True),
               sm.SMPlan(256, 1, 2, 8, prefetch=True, regs=True, lean=True, split=2)]
_OFFSET = re.compile(r"subgroupMatrix(?:Load<[^>]*>>|Store)\(&sh_\w+, ([^,]+),")


@pytest.mark.parametrize("plan", PLANS + SPLIT_PLANS, ids=str)
def test_generated_kernel_interface(plan: sm.SMPlan) -> None:
    source = sm.source(plan)
    signature = _wgsl.parse(source)
    assert [b.name for b in signature.storage] == ["q", "k", "v", "out"]
    assert all(b.scalar == "f16" for b in signature.storage)
    assert signature.entry_points["main"].workgroup_size == (str(plan.threads),)
    # named matrices, never an array of them (that would live in local memory)
    assert "array<subgroup_matrix" not in source
    nd = plan.dp // 16
    zeroed = r"var o_\d+_\d+ = subgroup_matrix_result<f32, 16, 16>\(\)"
    # a split's subgroup keeps 1 / split of the output fragments
    assert len(re.findall(zeroed, source)) == plan.fq * nd // plan.split
    assert len(re.findall(r"let q_\d+_\d+ = subgroupMatrixLoad", source)) == plan.fq * nd
    # QK^T and PV: FQ x FK x ND fragment products each per key tile (shared out by a split)
    products = 2 * plan.fq * plan.fk * nd // plan.split
    assert source.count("subgroupMatrixMultiplyAccumulate") == products
    # Tint wants uniform matrix offsets: constants and the subgroup's bases only
    offsets = _OFFSET.findall(source)
    assert len(offsets) > products
    for offset in offsets:
        assert re.fullmatch(r"((qbase|sbase|pbase|kbase|vbase|scol) \+ )?\d+u", offset), offset


def test_split_plans_name_and_refuse_what_they_cannot_divide() -> None:
    plan = sm.SMPlan(128, 1, 2, 16, prefetch=True, regs=True, lean=True, split=2)
    assert (plan.name, plan.bq, plan.threads, plan.lanes_per_row) == ("1x2x16psl-c2", 128, 512, 4)
    assert plan.q_width < plan.dp  # 128 rows of q do not fit the K/V area at once
    assert sm.SMPlan(128, 1, 2, 8, regs=True, split=2).q_width == 128
    for bad in ({"d": 40}, {"fk": 1}, {"rotate": True}, {"regs": False}):
        args = {"d": 64, "fq": 1, "fk": 2, "sg": 8, "regs": True, "split": 2, **bad}
        with pytest.raises(ValueError, match="split 2 must divide"):
            sm.SMPlan(**args)  # type: ignore[arg-type]
    assert sm.SMPlan(64, prefetch=True, regs=True, split=2).name == "2x2x4ps-c2"
    assert sm.SMPlan(64, 1, regs=True, runs=True, split=2).name == "1x2x4su-c2"
    with pytest.raises(ValueError, match="runs needs regs without rotate"):
        sm.SMPlan(64, rotate=True, regs=True, runs=True)


def test_plan_choice_fits_and_routes_by_head_dim() -> None:
    class Fake:
        def __init__(self, budget: int, invocations: int = 256) -> None:
            self.limits = {"max-compute-workgroup-storage-size": budget,
                           "max-compute-workgroups-per-dimension": 65535,
                           "max-compute-invocations-per-workgroup": invocations}

    device = Fake(49152)
    for d in (40, 64, 80, 10, 96, 160):
        plan = sm.choose_plan(d, 4096, 4096, 16, device)  # type: ignore[arg-type]
        assert plan is not None and plan.d == d and plan.shared_bytes() <= 49152
        assert plan.dp >= d and plan.dp % 16 == 0
        assert sm.supports(d, 4096, 4096, 16, device)  # type: ignore[arg-type]
    # over D 160 (not measured): no plan, attention stays on the portable kernel; D 256
    # (AuraFlow, Ideogram 4): eight subgroups split two where their 47.5 KiB fit
    assert sm.choose_plan(176, 256, 256, 16, device) is None  # type: ignore[arg-type]
    for fake in (device, Fake(49152, 1024)):
        plan = sm.choose_plan(256, 4360, 4360, 12, fake)  # type: ignore[arg-type]
        assert plan is not None and (plan.name, plan.bq) == ("1x2x8psl-c2-h15", 64)
    assert sm.choose_plan(256, 4360, 4360, 12, Fake(32768)) is None  # type: ignore[arg-type]
    assert sm.choose_plan(256, 4360, 4360, 12, Fake(49152, 128)) is None  # type: ignore
    assert not sm.supports(176, 256, 256, 16, device)  # type: ignore[arg-type]
    assert not sm.supports(64, 4096, 4096, 16, Fake(8192))  # type: ignore[arg-type]
    assert sm.SMPlan(64, 1, 2, 8).shared_bytes() <= 49152 < sm.SMPlan(80, 1, 2, 8).shared_bytes()
    # head dims 96 and 128 (the DiTs; Lumina 2's 96): 16 subgroups split two to a row group
    # where 512 invocations and its 46 KiB fit; otherwise the four-subgroup plan
    for d in (128, 120, 96, 90):
        plan = sm.choose_plan(d, 4608, 4608, 24, Fake(49152, 1024))  # type: ignore[arg-type]
        assert plan is not None and (plan.name, plan.bq) == ("1x2x16psl-c2-h15", 128)
    for fake in (Fake(49152), Fake(32768, 1024)):
        plan = sm.choose_plan(128, 4608, 4608, 24, fake)  # type: ignore[arg-type]
        assert plan is not None and plan.name == "1x2x4pslu-h15"
    # head dim 64 (SDXL, SD 3.5): eight subgroups split two, 64 query rows in 24 KiB
    for fake in (Fake(49152), Fake(49152, 1024), Fake(24576)):
        plan = sm.choose_plan(64, 4096, 4096, 16, fake)  # type: ignore[arg-type]
        assert plan is not None and (plan.name, plan.bq) == ("1x2x8psl-c2-h15", 64)
    plan = sm.choose_plan(64, 4096, 4096, 16, Fake(49152, 128))  # type: ignore[arg-type]
    assert plan is not None and plan.name == "1x2x4pslu-h15"  # where 256 invocations do not
    # every plan raises a row's max only past 15 (log2): fewer rescales where later keys
    # score higher
    for d in (10, 40, 64, 80, 128, 160):
        for fake in (Fake(49152), Fake(49152, 1024), Fake(16384)):
            plan = sm.choose_plan(d, 4096, 4096, 16, fake)  # type: ignore[arg-type]
            assert plan is None or plan.headroom == 15


def _reference(q: np.ndarray, k: np.ndarray, v: np.ndarray, scale: float) -> np.ndarray:
    """float64 softmax(q k^T scale) v over the last two dims."""
    s = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64), k.astype(np.float64)) * scale
    p = np.exp(s - s.max(-1, keepdims=True))
    return np.einsum("bhqk,bhkd->bhqd", p / p.sum(-1, keepdims=True), v.astype(np.float64))


def _inputs(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, ...]:
    """Random f16 q, k, v; keys grow along the sequence so that later tiles raise the row
    maxima (the lazy-rescaling path), and scores span tens of units."""
    b, h, lq, lk, d = shape
    rng = np.random.default_rng(seed)
    q = (2.0 * rng.standard_normal((b, h, lq, d))).astype(np.float16)
    ramp = np.linspace(0.5, 3.0, lk)[None, None, :, None]
    k = (ramp * rng.standard_normal((b, h, lk, d))).astype(np.float16)
    v = rng.standard_normal((b, h, lk, d)).astype(np.float16)
    return q, k, v


@pytest.mark.parametrize("shape", [(1, 2, 77, 77, 40), (2, 1, 100, 77, 64), (1, 1, 33, 130, 80),
                                   (1, 2, 20, 45, 160), (1, 1, 17, 1, 10), (1, 1, 70, 300, 16),
                                   (1, 3, 150, 140, 128), (1, 2, 90, 150, 256)],
                         ids=str)
def test_matches_float64_where_available(device: gpucore.Device,
                                         shape: tuple[int, ...]) -> None:
    if not sm.available(device):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices (Dawn on a GPU has)")
    emulated_subset(device, shape in ((1, 2, 77, 77, 40), (1, 1, 70, 300, 16)))
    b, h, lq, lk, d = shape
    q, k, v = _inputs(shape, seed=lq * lk + d)
    scale = 0.7 / math.sqrt(d)
    expected = _reference(q, k, v, scale)
    tensors = [Tensor.from_numpy(x, device=device) for x in (q, k, v)]
    out = Tensor.empty(q.shape, np.float16, device=device)
    rows_q, rows_kv = (h * lq * d, lq * d, d), (h * lk * d, lk * d, d)
    plan = sm.choose_plan(d, lq, lk, b * h, device) or sm.SMPlan(d, 1, 2, 4)
    sm.record_attention_sm(*tensors, out, shape=shape, scale=scale, plan=plan,
                           strides=(rows_q, rows_kv, rows_kv, rows_q))
    # f16 P and the f16 result's rounding (2^-11 relative) are what remains
    assert np.abs(out.numpy() - expected).max() / np.abs(expected).max() < 3e-3
    # the (B, L, H*D) layout of linear projections
    def packed(x: np.ndarray) -> Tensor:
        return Tensor.from_numpy(np.ascontiguousarray(x.transpose(0, 2, 1, 3)).reshape(
            b, x.shape[2], h * d), device=device)

    got = nn.attention(packed(q), packed(k), packed(v), heads=h).numpy()
    expected = _reference(q, k, v, 1 / math.sqrt(d)).transpose(0, 2, 1, 3).reshape(b, lq, h * d)
    assert np.abs(got - expected).max() / np.abs(expected).max() < 3e-3


@pytest.mark.parametrize("plan", PLANS, ids=str)
def test_every_plan_matches_float64_where_available(device: gpucore.Device,
                                                    plan: sm.SMPlan) -> None:
    if not sm.available(device):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices (Dawn on a GPU has)")
    if plan.shared_bytes() > device.limits["max-compute-workgroup-storage-size"]:
        pytest.skip(f"{plan.name} needs more workgroup memory than {device.info.label} has")
    emulated_subset(device, plan in (PLANS[4], PLANS[5]))
    shape = (2, 1, plan.bq + 5, 3 * plan.bk + 7, plan.d)
    q, k, v = _inputs(shape, seed=plan.d)
    expected = _reference(q, k, v, 1 / math.sqrt(plan.d))
    tensors = [Tensor.from_numpy(x, device=device) for x in (q, k, v)]
    out = Tensor.empty(q.shape, np.float16, device=device)
    _, h, lq, lk, d = shape
    rows_q, rows_kv = (h * lq * d, lq * d, d), (h * lk * d, lk * d, d)
    sm.record_attention_sm(*tensors, out, shape=shape, scale=1 / math.sqrt(d), plan=plan,
                           strides=(rows_q, rows_kv, rows_kv, rows_q))
    assert np.abs(out.numpy() - expected).max() / np.abs(expected).max() < 3e-3


@pytest.mark.parametrize("plan", SPLIT_PLANS, ids=str)
@pytest.mark.parametrize("scale", [1.0, -0.5], ids=["lean", "negative-scale"])
def test_split_plans_match_float64_where_available(device: gpucore.Device, plan: sm.SMPlan,
                                                   scale: float) -> None:
    """Keys that grow along the sequence raise the row maxima on later tiles, so the
    rescale factors travel between a row group's subgroups (sh_alpha); a negative scale
    takes the softmax without the lean tree (record_attention_sm's fallback)."""
    if not sm.available(device):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices (Dawn on a GPU has)")
    if plan.shared_bytes() > device.limits["max-compute-workgroup-storage-size"]:
        pytest.skip(f"{plan.name} needs more workgroup memory than {device.info.label} has")
    emulated_subset(device, plan in (SPLIT_PLANS[0], SPLIT_PLANS[-1]) and scale > 0)
    # key tiles: 4 with the last partial, 2, or 1
    for lk in (3 * plan.bk + 5, plan.bk + 1, plan.bk - 3):
        _check_plan(device, plan, (2, 2, plan.bq + 9, lk, plan.d), scale)


def _check_plan(device: gpucore.Device, plan: sm.SMPlan, shape: tuple[int, ...],
                scale: float) -> None:
    q, k, v = _inputs(shape, seed=plan.d + plan.sg)
    scale = scale / math.sqrt(plan.d)
    expected = _reference(q, k, v, scale)
    tensors = [Tensor.from_numpy(x, device=device) for x in (q, k, v)]
    out = Tensor.empty(q.shape, np.float16, device=device)
    _, h, lq, lk, d = shape
    rows_q, rows_kv = (h * lq * d, lq * d, d), (h * lk * d, lk * d, d)
    sm.record_attention_sm(*tensors, out, shape=shape, scale=scale, plan=plan,
                           strides=(rows_q, rows_kv, rows_kv, rows_q))
    assert np.abs(out.numpy() - expected).max() / np.abs(expected).max() < 3e-3


def test_causal_falls_back_where_available(device: gpucore.Device) -> None:
    if not sm.available(device):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices (Dawn on a GPU has)")
    q, k, v = _inputs((1, 2, 50, 50, 40), seed=3)
    s = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64), k.astype(np.float64)) / math.sqrt(40)
    s = np.where(np.tril(np.ones((50, 50), bool)), s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    expected = np.einsum("bhqk,bhkd->bhqd", p / p.sum(-1, keepdims=True), v.astype(np.float64))
    got = nn.attention(*(Tensor.from_numpy(x, device=device) for x in (q, k, v)),
                       causal=True).numpy()
    assert np.abs(got - expected).max() / np.abs(expected).max() < 3e-3


@pytest.mark.parametrize("plan", [
    sm.SMPlan(16, 1, 2, 2, prefetch=True, regs=True, lean=True, headroom=15),
    sm.SMPlan(128, 1, 2, 16, prefetch=True, regs=True, lean=True, split=2, headroom=15)],
    ids=str)
def test_headroom_takes_large_p_before_raising_where_available(device: gpucore.Device,
                                                               plan: sm.SMPlan) -> None:
    """SMPlan.headroom 15: a row's running max is raised only where a tile passes it by more
    than 15 (log2), so P reaches 2^15 in f16; keys that grow along the sequence take rows
    past the first tile's max by 8 to 15 (no raise) and by more (raised)."""
    assert plan.name.endswith("-h15") and "+ 15.0) {" in sm.source(plan)
    assert "+ 8.0) {" in sm.source(dataclasses.replace(plan, headroom=8))
    with pytest.raises(ValueError, match="headroom must be 1 to 15"):
        dataclasses.replace(plan, headroom=16)  # P up to 2^16 would pass f16's 65504
    if not sm.available(device):
        pytest.skip(f"{device.info.label} has no f16 subgroup matrices (Dawn on a GPU has)")
    if plan.shared_bytes() > device.limits["max-compute-workgroup-storage-size"]:
        pytest.skip(f"{plan.name} needs more workgroup memory than {device.info.label} has")
    emulated_subset(device, plan.d == 16)
    shape = (1, 2, plan.bq + 9, 4 * plan.bk + 5, plan.d)
    q, k, _ = _inputs(shape, seed=plan.d + plan.sg)  # _check_plan's inputs
    s = np.einsum("bhqd,bhkd->bhqk", q.astype(np.float64), k.astype(np.float64))
    s *= math.log2(math.e) / math.sqrt(plan.d)
    tiles = [s[..., t:t + plan.bk].max(-1) for t in range(0, shape[3], plan.bk)]
    growth = np.max(tiles, axis=0) - tiles[0]
    assert ((growth > 8) & (growth <= 15)).any() and (growth > 15).any()
    _check_plan(device, plan, shape, 1.0)
