"""gpustd.nn.attention against torch's scaled_dot_product_attention computed in float64: the
flash kernel (shaders/nn/attention.wgsl) and its plans, on CPU adapters too (their own direct
kernel is test_attention_cpu.py's)."""

from __future__ import annotations

import dataclasses
import importlib
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import sweep_subset_elsewhere
from hypothesis import given, settings
from hypothesis import strategies as st
from support import assert_close, random_array

import gpucore
from gpucore import _kernel as kernel_store
from gpustd import Tensor
from gpustd.nn import _attention_wide as wide
from gpustd.nn.attention import attention

# gpustd.nn re-exports the function under the module's name.
attention_module = importlib.import_module("gpustd.nn.attention")
plans = importlib.import_module("gpustd.nn._attention_plan")
attention_cpu = importlib.import_module("gpustd.nn._attention_cpu")
F32_TOL = 2e-5  # float32 storage, float32 accumulation over up to ~150 keys


@pytest.fixture(scope="module", autouse=True)
def _flash_kernel_on_cpus_too():
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(attention_cpu, "DIRECT", False)
        yield


def reference(q, k, v, *, mask=None, causal=False, scale=None) -> np.ndarray:
    t = [torch.from_numpy(np.asarray(x, dtype=np.float64)) for x in (q, k, v)]
    m = None
    if mask is not None:
        shape = t[0].shape[:-1] + t[1].shape[-2:-1]  # torch broadcasts 1-D masks poorly
        m = torch.from_numpy(np.broadcast_to(np.asarray(mask), shape).copy())
        m = m if m.dtype == torch.bool else m.double()
    return F.scaled_dot_product_attention(*t, attn_mask=m, is_causal=causal,
                                          scale=scale).numpy()


def qkv(rng, b, h, lq, lk, d, dtype=np.float32, low=-2.0, high=2.0):
    return (random_array(rng, (b, h, lq, d), dtype, low, high),
            random_array(rng, (b, h, lk, d), dtype, low, high),
            random_array(rng, (b, h, lk, d), dtype, low, high))


def run(device, q, k, v, **kwargs) -> np.ndarray:
    tensors = [Tensor.from_numpy(x, device=device) for x in (q, k, v)]
    return attention(*tensors, **kwargs).numpy()


@settings(max_examples=12, deadline=None)
@given(b=st.integers(1, 2), h=st.integers(1, 3),
       lq=st.sampled_from([1, 2, 5, 17, 31, 64, 65, 97, 131, 150]),
       lk=st.sampled_from([1, 3, 13, 40, 63, 77, 101, 149]),
       d=st.sampled_from([1, 8, 24, 33, 40, 64, 80]),
       scale=st.sampled_from([None, 0.05, 1.0]),
       seed=st.integers(0, 2**31))
def test_matches_torch(device, b, h, lq, lk, d, scale, seed):
    rng = np.random.default_rng(seed)
    q, k, v = qkv(rng, b, h, lq, lk, d)
    assert_close(run(device, q, k, v, scale=scale), reference(q, k, v, scale=scale),
                 tol=F32_TOL)


@pytest.mark.parametrize("length", [1, 37, 130])
def test_causal(device, length):
    rng = np.random.default_rng(length)
    q, k, v = qkv(rng, 2, 3, length, length, 40)
    assert_close(run(device, q, k, v, causal=True), reference(q, k, v, causal=True),
                 tol=F32_TOL)


@pytest.mark.parametrize("shape", [(70, 77), (2, 1, 70, 77), (1, 3, 1, 77), (77,)])
def test_additive_mask_broadcasts(device, shape):
    rng = np.random.default_rng(len(shape))
    q, k, v = qkv(rng, 2, 3, 70, 77, 24)
    mask = random_array(rng, shape, np.float32, -4.0, 4.0)
    mask[..., 5] = -np.inf
    assert_close(run(device, q, k, v, mask=mask), reference(q, k, v, mask=mask), tol=F32_TOL)


def test_boolean_mask_and_fully_masked_rows(device):
    rng = np.random.default_rng(1)
    q, k, v = qkv(rng, 1, 2, 45, 66, 33)
    keep = rng.random((2, 45, 66)) < 0.3
    keep[1, 7] = False  # a row with no key left: torch gives 0
    expected = reference(q, k, v, mask=keep)
    assert_close(run(device, q, k, v, mask=keep), expected, tol=F32_TOL)
    assert np.all(expected[0, 1, 7] == 0)
    as_uint = Tensor.from_numpy(keep, device=device)  # bool uploads as uint32
    assert as_uint.dtype == np.uint32
    assert_close(run(device, q, k, v, mask=as_uint), expected, tol=F32_TOL)
    additive = Tensor.from_numpy(np.where(keep, 0.0, -np.inf).astype(np.float32), device=device)
    assert_close(run(device, q, k, v, mask=additive), expected, tol=F32_TOL)


def test_mask_with_causal(device):
    rng = np.random.default_rng(2)
    q, k, v = qkv(rng, 1, 1, 50, 50, 8)
    mask = random_array(rng, (50, 50), np.float32)
    # torch refuses attn_mask with is_causal; fold the triangle into the reference mask.
    both = np.where(np.tril(np.ones((50, 50), bool)), mask, -np.inf)
    assert_close(run(device, q, k, v, mask=mask, causal=True), reference(q, k, v, mask=both),
                 tol=F32_TOL)


def test_cross_attention_heads_layout(device):
    # The UNet's cross-attention: 8 heads of 40 over 77 text tokens, (B, L, H*D) tensors.
    rng = np.random.default_rng(3)
    b, heads, d, lq, lk = 2, 8, 40, 100, 77
    q = random_array(rng, (b, lq, heads * d))
    k, v = random_array(rng, (b, lk, heads * d)), random_array(rng, (b, lk, heads * d))
    got = attention(*(Tensor.from_numpy(x, device=device) for x in (q, k, v)), heads=heads)
    assert got.shape == (b, lq, heads * d)

    def split(x):
        return x.reshape(b, -1, heads, d).transpose(0, 2, 1, 3)

    expected = reference(split(q), split(k), split(v)).transpose(0, 2, 1, 3)
    assert_close(got.numpy(), expected.reshape(b, lq, heads * d), tol=F32_TOL)


def test_clip_causal_heads_layout(device):
    # CLIP's text encoder: 77 tokens, 12 heads of 64, causal, (B, L, H*D) tensors.
    rng = np.random.default_rng(8)
    x = [random_array(rng, (1, 77, 12 * 64)) for _ in range(3)]
    got = attention(*(Tensor.from_numpy(a, device=device) for a in x), heads=12, causal=True)
    split = [a.reshape(1, 77, 12, 64).transpose(0, 2, 1, 3) for a in x]
    expected = reference(*split, causal=True).transpose(0, 2, 1, 3).reshape(1, 77, 768)
    assert_close(got.numpy(), expected, tol=F32_TOL)


@pytest.mark.parametrize("d", [160, 512])
def test_large_head_dims(device, d, monkeypatch):
    # Head dims past one 64-dim chunk (SD 2's 160, the VAE's single 512-wide head) in the
    # flash kernel (wide heads take two GEMMs by default: test_attention_wide.py).
    monkeypatch.setattr(wide, "WIDE_FROM", 10**6)
    rng = np.random.default_rng(d)
    q, k, v = qkv(rng, 1, 1, 70, 66, d, low=-0.5, high=0.5)
    assert_close(run(device, q, k, v), reference(q, k, v), tol=F32_TOL)


@pytest.mark.parametrize("lq,lk,d,causal", [(64, 77, 40, False), (33, 33, 64, True),
                                            (10, 19, 24, False)])
def test_float16(f16_device, lq, lk, d, causal):
    rng = np.random.default_rng(d)
    q, k, v = qkv(rng, 2, 2, lq, lk, d, np.float16)
    got = run(f16_device, q, k, v, causal=causal)
    assert got.dtype == np.float16
    assert_close(got, reference(q, k, v, causal=causal), dtype=np.float16)


def test_no_score_matrix_allocated(device, monkeypatch):
    # 4096 tokens attending to 4096: the score matrix alone would be 64 MiB of float32.
    # Count every Buffer created while attention records its dispatch: only the output
    # may appear. The kernel binds q, k, v, mask and out and nothing else (its workgroup
    # memory holds one BQ x BK tile), so no hidden scratch exists on the GPU either.
    rng = np.random.default_rng(4)
    length, d = 4096, 1
    q, k, v = (Tensor.from_numpy(random_array(rng, (1, 1, length, d)), device=device)
               for _ in range(3))
    tiny = Tensor.from_numpy(random_array(rng, (1, 1, 3, d)), device=device)
    attention(tiny, tiny, tiny)  # first use creates the per-device mask placeholder
    created = []
    original = gpucore.Buffer.__init__

    def counting(self, *args, **kwargs):
        original(self, *args, **kwargs)
        created.append(self.nbytes)

    monkeypatch.setattr(gpucore.Buffer, "__init__", counting)
    before = device.buffers_created
    out = attention(q, k, v)
    monkeypatch.undo()
    # one Buffer (the output); the pool may serve it from a freed allocation
    assert len(created) == 1 and device.buffers_created - before <= 1
    assert sum(created) == out.nbytes == length * d * 4
    assert sum(created) * 1000 < length * length * 4
    # The result is right too: check a few query rows against all the keys.
    rows = [0, 1, 2049, length - 1]
    qn, kn, vn = (x.numpy() for x in (q, k, v))
    assert_close(out.numpy()[:, :, rows], reference(qn[:, :, rows], kn, vn), tol=F32_TOL)


def test_plans_fit_every_head_dim():
    # Every D up to 512 gets a plan within 32 KiB (lavapipe) and 48 KiB (H100) that keeps
    # the shader's invariants (Plan checks them on construction), for small and large grids,
    # with and without subgroups.
    for budget, subgroup in ((32768, 0), (49152, 32)):
        for d in range(1, 513):
            found = plans.candidates(d, budget, 256, subgroup)  # once: the grid is cost's
            for rows, heads in ((77, 1), (16384, 16)):
                best = min(found, key=lambda p: plans.cost(p, rows, heads))
                assert best.workgroup_bytes() <= budget and best.RG * best.CS <= 256
                assert not best.subgroups or best.CS <= subgroup


@pytest.mark.parametrize("d,plan,subgroups", [
    (40, (4, 3, 5, 2, 40, 12), False),  # fewer invocations than rows, v in 1 block
    (24, (8, 3, 2, 3, 8, 4), False),  # q/k chunks of 8 dims (3), v in 3 blocks of 4 keys
    (64, (2, 16, 1, 16, 20, 8), False),  # chunks not dividing D, idle output invocations
    (80, (4, 4, 5, 4, 80, 8), True),  # subgroup reductions over 4 lanes
    (33, (8, 2, 5, 2, 12, 4), True),
])
def test_other_tile_plans(device, d, plan, subgroups, monkeypatch):
    # Shapes the cost model may pick on other devices, including the subgroup reductions
    # (lavapipe's subgroups have 8 lanes, so 2 and 4 fit; OpenGL has none). Every plan on
    # the first adapter, the first plan on the others (conftest.sweep_subset_elsewhere).
    sweep_subset_elsewhere(device, d == 40)
    if subgroups and not device.has_subgroups:
        pytest.skip(f"{device.backend} adapter {device.name!r} has no subgroups")
    p = plans.Plan(d, *plan, subgroups=subgroups)
    monkeypatch.setattr(attention_module, "plan_for", lambda *args: p)
    rng = np.random.default_rng(d)
    q, k, v = qkv(rng, 1, 2, 45, 37, d)
    mask = random_array(rng, (45, 37), np.float32)
    assert_close(run(device, q, k, v, mask=mask), reference(q, k, v, mask=mask), tol=F32_TOL)
    assert_close(run(device, q[:, :, :37], k, v, causal=True),
                 reference(q[:, :, :37], k, v, causal=True), tol=F32_TOL)


@pytest.mark.parametrize("d,plan,subgroups,slices,prefetch", [
    (40, (16, 8, 5, 2, 40, 32), True, 4, 1),  # every invocation busy in the output phase
    (24, (4, 8, 3, 2, 8, 8), False, 2, 0),  # idle invocations, 3 q/k chunks, v in 4 blocks
    (24, (8, 4, 3, 2, 24, 16), False, 2, 1),  # prefetch with workgroup-memory reductions
])
def test_key_slices_and_prefetch(device, d, plan, subgroups, slices, prefetch, monkeypatch):
    # Output phases split over KS key slices whose partial sums are added after the last
    # tile, and k/v fetched into registers a phase ahead (PF); one call with a mask and
    # causal rows, over several tiles (one pipeline each: compiling is the slow part).
    # Every case on the first adapter, the last (both, without subgroups) on the others.
    sweep_subset_elsewhere(device, prefetch == 1 and not subgroups)
    if subgroups and not device.has_subgroups:
        pytest.skip(f"{device.backend} adapter {device.name!r} has no subgroups")
    p = plans.Plan(d, *plan, subgroups=subgroups, KS=slices, PF=prefetch)
    monkeypatch.setattr(attention_module, "plan_for", lambda *args: p)
    rng = np.random.default_rng(d)
    q, k, v = qkv(rng, 2, 2, 73, 73, d)
    mask = random_array(rng, (73, 73), np.float32)
    both = np.where(np.tril(np.ones((73, 73), bool)), mask, -np.inf)
    assert_close(run(device, q, k, v, mask=mask, causal=True), reference(q, k, v, mask=both),
                 tol=F32_TOL)


def test_kernels_are_cached(device):
    rng = np.random.default_rng(5)
    q, k, v = qkv(rng, 1, 1, 9, 9, 8)
    run(device, q, k, v)
    count = len(kernel_store._loaded)
    run(device, *qkv(rng, 1, 1, 9, 9, 8))
    assert len(kernel_store._loaded) == count


def test_errors(device):
    rng = np.random.default_rng(6)
    t = {name: Tensor.from_numpy(random_array(rng, shape), device=device)
         for name, shape in (("q", (1, 2, 5, 8)), ("k", (1, 2, 7, 8)), ("k4", (1, 2, 7, 4)),
                             ("x3", (1, 5, 16)))}
    with pytest.raises(ValueError, match=r"\(1, 2, 5, 8\).*\(1, 2, 7, 4\)"):
        attention(t["q"], t["k4"], t["k4"])
    with pytest.raises(ValueError, match=r"\(1, 2, 7, 8\).*\(1, 2, 5, 8\)"):
        attention(t["q"], t["k"], t["q"])  # v shorter than k
    with pytest.raises(ValueError, match="Lq == Lk"):
        attention(t["q"], t["k"], t["k"], causal=True)
    with pytest.raises(ValueError, match=r"\(B, H, L, D\)"):
        attention(t["x3"], t["x3"], t["x3"])
    with pytest.raises(ValueError, match="divisible by 3"):
        attention(t["x3"], t["x3"], t["x3"], heads=3)
    with pytest.raises(ValueError, match="does not broadcast"):
        attention(t["q"], t["k"], t["k"], mask=np.zeros((5, 6), np.float32))
    with pytest.raises(TypeError, match="gpustd Tensor"):
        attention(t["q"].numpy(), t["k"], t["k"])
    with pytest.raises(TypeError, match="mask has dtype int64"):
        attention(t["q"], t["k"], t["k"], mask=np.zeros((5, 7), np.int64))
    empty_k = Tensor.from_numpy(np.zeros((1, 2, 0, 8), np.float32), device=device)
    with pytest.raises(ValueError, match="Lk >= 1"):
        attention(t["q"], empty_k, empty_k)
    ints = Tensor.from_numpy(np.ones((1, 2, 5, 8), np.int32), device=device)
    with pytest.raises(TypeError, match="float32 or float16"):
        attention(ints, t["k"], t["k"])


def test_default_scale_is_inverse_sqrt_d(device):
    rng = np.random.default_rng(7)
    q, k, v = qkv(rng, 1, 1, 6, 6, 24)
    assert_close(run(device, q, k, v), run(device, q, k, v, scale=1 / math.sqrt(24)),
                 tol=1e-6)


def test_cpu_adapters_keep_loops_and_skip_prefetch(first_device, monkeypatch):
    # On a CPU adapter (lavapipe, llvmpipe) the kernel keeps its loops as loops, fetches k
    # and v in place and reads its key slices, head dim, chunk, dim groups and v block from
    # the params (LOOPS=1, PF=0: less code for llvmpipe to compile at the first dispatch, one
    # kernel for plans of one (RG, CS, NV)), and its output is the GPU kernel's bit for bit:
    # the plan, data and mask of test_key_slices_and_prefetch's last case (key slices summed
    # after the last tile, workgroup-memory reductions, causal rows over several tiles), and
    # a head dim of two ragged chunks whose v rows end inside a dim group.
    device = first_device
    if device.info.type != "cpu":
        pytest.skip(f"{device.info.label} is a GPU: it runs the plan's kernel as it is")
    p = plans.Plan(24, 8, 4, 3, 2, 24, 16, KS=2, PF=1)
    p2 = plans.Plan(40, 8, 4, 3, 4, 20, 8)
    chosen = [p, dataclasses.replace(p, KS=1, PF=0), p2, p, p2]
    monkeypatch.setattr(attention_module, "plan_for", lambda *args: chosen.pop(0))
    built: list = []
    kernel = attention_module._kernel
    monkeypatch.setattr(attention_module, "_kernel", lambda *a, **kw: (
        built.append(kernel(*a, **kw)), built[-1])[1])
    rng = np.random.default_rng(24)
    q, k, v = qkv(rng, 2, 2, 73, 73, 24)
    mask = random_array(rng, (73, 73), np.float32)
    q2, k2, v2 = qkv(rng, 1, 2, 37, 29, 40)
    mask2 = random_array(rng, (37, 29), np.float32)
    both = np.where(np.tril(np.ones((73, 73), bool)), mask, -np.inf)
    on_cpu = run(device, q, k, v, mask=mask, causal=True)
    one_slice = run(device, q, k, v, mask=mask, causal=True)
    assert_close(one_slice, reference(q, k, v, mask=both), tol=F32_TOL)
    second_on_cpu = run(device, q2, k2, v2, mask=mask2)
    assert_close(second_on_cpu, reference(q2, k2, v2, mask=mask2), tol=F32_TOL)
    monkeypatch.setattr(device, "info", dataclasses.replace(device.info, type="discrete"))
    on_gpu = run(device, q, k, v, mask=mask, causal=True)
    second_on_gpu = run(device, q2, k2, v2, mask=mask2)
    assert [(c.constants.get("LOOPS", 0), c.constants["PF"], c.constants["KS"])
            for c in built] == [(1, 0, 1)] * 3 + [(0, 1, 2), (0, 0, 1)]
    assert built[0] is built[1] is built[2]
    assert np.array_equal(on_cpu, on_gpu) and np.array_equal(second_on_cpu, second_on_gpu)
    assert np.abs(on_cpu).max() > 0.5 and np.abs(second_on_cpu).max() > 0.5


def test_a_cpu_runs_every_head_dim_to_64_in_one_small_kernel(first_device):
    # A CPU adapter's plan (cpu_plan): 64 invocations a workgroup rather than the GPU's 128,
    # and one kernel for the head dims a tiny model mixes (its text encoder's 8, its UNet's 16,
    # its VAE's 64): each one more kernel is seconds of llvmpipe compiling in every process.
    device = first_device
    if device.info.type != "cpu":
        pytest.skip(f"{device.info.label} is a GPU: it takes the cost model's plan")
    dims = (8, 16, 40, 64)
    chosen = [plans.plan_for(d, device, 77, 2, 77) for d in dims]
    assert all(p.RG * p.CS == 64 for p in chosen)
    budget = device.limits["max-compute-workgroup-storage-size"]
    built = {id(attention_module._kernel(np.dtype(np.float32), 0, p, cpu_budget=budget))
             for p in chosen}
    assert len(built) == 1
    rng = np.random.default_rng(8)
    for d in dims:
        q, k, v = qkv(rng, 1, 2, 37, 29, d)
        assert_close(run(device, q, k, v), reference(q, k, v), tol=F32_TOL)
