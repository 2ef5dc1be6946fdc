"""gpustd.nn.conv2d (implicit GEMM, split-K, 1x1 via linalg) against torch CPU in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import sweep_subset_elsewhere
from hypothesis import given, settings
from hypothesis import strategies as st
from support import assert_close, random_array

import gpucore
from gpustd import Tensor
from gpustd.nn import _conv_cpu as conv_cpu
from gpustd.nn import conv as conv_module
from gpustd.nn import conv2d

F32_TOL = 1e-4  # K up to a few thousand products accumulated in float32


def _reference(x, w, b, **kw) -> np.ndarray:
    t = [None if a is None else torch.from_numpy(np.asarray(a, np.float64)) for a in (x, w, b)]
    return F.conv2d(*t, **kw).numpy()


def _run(device, x_shape, w_shape, *, bias=True, dtype=np.float32, seed=0, plan=None,
         tol=F32_TOL, **kw) -> None:
    rng = np.random.default_rng(seed)
    x = random_array(rng, x_shape, dtype)
    w = random_array(rng, w_shape, dtype)
    b = random_array(rng, (w_shape[0],), dtype) if bias else None
    up = [None if a is None else Tensor.from_numpy(a, device=device) for a in (x, w, b)]
    out = conv2d(*up, _plan_override=plan, **kw)
    assert out.dtype == dtype
    assert_close(out.numpy(), _reference(x, w, b, **kw), dtype=dtype,
                 tol=tol if dtype == np.float32 else None)


# (x shape, weight shape, options): scaled-down SD 1.5 layers and awkward geometry.
CASES = [
    ((2, 32, 16, 16), (32, 32, 3, 3), dict(padding=1)),  # UNet 3x3 (320@64x64 scaled)
    ((2, 4, 16, 16), (32, 4, 3, 3), dict(padding=1)),  # conv_in: K = 36, not a tile multiple
    ((1, 16, 15, 17), (24, 16, 3, 3), dict(stride=2, padding=1)),  # downsampler, odd sizes
    ((1, 8, 11, 9), (12, 4, 3, 3), dict(padding=2, dilation=2, groups=2)),
    ((2, 6, 7, 13), (5, 6, 1, 3), dict(stride=(2, 1), padding=(0, 1))),
    ((1, 3, 1, 1), (7, 3, 1, 1), {}),  # a single pixel
    ((3, 5, 6, 6), (130, 5, 2, 2), {}),  # more channels than one 128-row tile
]


@pytest.mark.parametrize("x_shape,w_shape,kw", CASES)
def test_conv2d_matches_torch(device: gpucore.Device, x_shape, w_shape, kw) -> None:
    _run(device, x_shape, w_shape, **kw)


def test_conv2d_without_bias(device: gpucore.Device) -> None:
    _run(device, (2, 5, 9, 11), (7, 5, 3, 3), bias=False, padding=1)


@pytest.mark.parametrize("via_linalg", [True, False])
def test_conv2d_1x1(device: gpucore.Device, monkeypatch, via_linalg: bool) -> None:
    monkeypatch.setattr(conv_module, "ONE_BY_ONE_VIA_LINALG", via_linalg)
    _run(device, (2, 24, 7, 5), (40, 24, 1, 1))


# (BM, BN, splits, BK): each invocation loads 4, 8 or 16 weights and patch values per step.
@pytest.mark.parametrize("plan", [(128, 128, 3, 16), (64, 64, 2, 8), (64, 128, 1, 8),
                                  (128, 64, 2, 8), (64, 64, 1, 16), (128, 128, 1, 8)])
def test_conv2d_tile_plans(device: gpucore.Device, plan) -> None:
    """Every tile shape and split-K give the same answer (plans are a speed choice only): all
    six on the first adapter; on the others one split and one unsplit plan, BK 16 and 8."""
    sweep_subset_elsewhere(device, plan in {(128, 128, 3, 16), (64, 128, 1, 8)})
    _run(device, (2, 20, 10, 9), (70, 20, 3, 3), plan=plan, padding=1)


def test_conv2d_planner_tiles() -> None:
    # 64-row tiles where they waste fewer channel rows (320 = 5 x 64), 128 x 64 otherwise;
    # a layer that fills the GPU is not split (partial sums would only cost memory).
    assert conv_module._plan(320, 8192, 1, 2880)[:2] == (64, 128)
    assert conv_module._plan(640, 2048, 1, 5760)[:2] == (128, 64)
    assert conv_module._plan(512, 16384, 1, 4608)[2] == 1


def test_conv2d_split_k_chosen_for_deep_small_layers(device: gpucore.Device) -> None:
    # 1280@8x8-like: few output tiles, long K, so the planner splits K.
    assert conv_module._plan(128, 32, 1, 2304)[2] > 1
    _run(device, (2, 256, 4, 4), (128, 256, 3, 3), padding=1, tol=2e-4)


def test_conv2d_splits_k_only_on_gpus(device: gpucore.Device) -> None:
    # splits fill a GPU's multiprocessors; on a CPU adapter (lavapipe) they only add a pass
    if not device.has_timestamps:
        pytest.skip(f"{device.info.label} has no timestamp queries to list its passes")
    rng = np.random.default_rng(0)
    x, w = (Tensor.from_numpy(rng.standard_normal(s).astype(np.float32), device=device)
            for s in ((2, 256, 4, 4), (128, 256, 3, 3)))
    with device.profile() as prof:
        conv_module.conv2d(x, w, padding=1).numpy()
    split = any(name.startswith("nn/conv2d_splitk") for name, _ in prof.records)
    assert split == (device.info.type != "cpu"), prof.summary()


def test_conv2d_on_a_cpu_is_two_kernels(first_device: gpucore.Device) -> None:
    """On a CPU adapter conv2d runs gpustd/nn/_conv_cpu.py's direct conv (lavapipe compiles
    each kernel at its first dispatch, 1-2 s of CPU): the layers whose kernel rows come in
    threes at stride 1 or 2 share one kernel, every other layer a second, and all match
    torch."""
    if first_device.info.type != "cpu":
        pytest.skip(f"{first_device.info.label} is a GPU: the planner's tiles apply")
    rng = np.random.default_rng(3)
    x = random_array(rng, (2, 10, 13, 11))
    threes = [((12, 10, 3, 3), dict(padding=1)), ((9, 10, 3, 3), dict(stride=2, padding=1)),
              ((17, 10, 3, 6), dict(padding=(1, 2))), ((8, 10, 3, 3), dict(stride=(3, 2)))]
    others = [((12, 10, 5, 5), dict(padding=2)), ((7, 10, 1, 1), dict(stride=2)),
              ((12, 5, 3, 3), dict(padding=2, dilation=2, groups=2)),
              ((6, 10, 2, 3), dict(stride=3, padding=(1, 0)))]
    for layers in (threes, others):
        built = None
        for w_shape, kw in layers:
            w, b = random_array(rng, w_shape), random_array(rng, w_shape[:1])
            got = conv2d(*(Tensor.from_numpy(a, device=first_device) for a in (x, w, b)),
                         **kw).numpy()
            assert_close(got, _reference(x, w, b, **kw), tol=F32_TOL)
            if built is not None:  # the layer's kind was built by the first of its list
                assert first_device.pipelines_created == built, (w_shape, kw)
            built = first_device.pipelines_created


@pytest.mark.parametrize("per_channel", [False, True])
def test_conv2d_add_after_on_a_cpu(first_device: gpucore.Device, monkeypatch,
                                   per_channel: bool) -> None:
    """On a CPU adapter a float32 conv's add is a pass after it, not a kernel of its own
    (lavapipe compiles each), and the sum is the fused epilogue's, bit for bit."""
    if first_device.info.type != "cpu":
        pytest.skip(f"{first_device.info.label} is a GPU: the add stays in the epilogue")
    rng = np.random.default_rng(4)
    shapes = ((2, 12, 7, 9), (20, 12, 3, 3), (20,), (2, 20, 1, 1) if per_channel else (2, 20, 7, 9))
    x, w, b, add = (Tensor.from_numpy(rng.standard_normal(s).astype(np.float32),
                                      device=first_device) for s in shapes)
    fused = conv2d(x, w, b, padding=1, add=add, _plan_override=(64, 64, 1, 8)).numpy()
    modes: list[int] = []
    built = conv_cpu.kernel
    monkeypatch.setattr(conv_cpu, "kernel", lambda name, *a, **kw: (
        modes.append(kw["ADD"]) if name == "conv2d_cpu" else None, built(name, *a, **kw))[1])
    got = conv2d(x, w, b, padding=1, add=add).numpy()
    assert modes == [0] and np.array_equal(got, fused)
    assert not np.array_equal(got, conv2d(x, w, b, padding=1).numpy())  # the add counts


def test_conv2d_split_k_partials_over_a_binding_run_unsplit(device: gpucore.Device,
                                                            monkeypatch) -> None:
    # 4 splits of a 2x70x5x7 output: 78 KB of f32 partial sums over a 64 KB binding limit
    # (a VAE tile at 1024 px on a 128 MiB one) would fail the dispatch: one split instead.
    monkeypatch.setitem(device.limits, "max-storage-buffer-binding-size", 64 << 10)
    _run(device, (2, 20, 5, 7), (70, 20, 3, 3), plan=(64, 64, 4, 8), padding=1)


# (x, weight, plan): implicit GEMM unsplit, split-K (the add moves to the finishing pass),
# and a 1x1 conv (which leaves the linalg route to fuse the add).
@pytest.mark.parametrize("x_shape,w_shape,plan", [
    ((2, 6, 9, 11), (13, 6, 3, 3), None),
    ((2, 20, 5, 7), (70, 20, 3, 3), (64, 64, 3, 8)),
    ((2, 24, 7, 5), (40, 24, 1, 1), None),
])
@pytest.mark.parametrize("per_channel", [False, True])
def test_conv2d_fused_add(device: gpucore.Device, x_shape, w_shape, plan, per_channel) -> None:
    """add= (a residual, or one value per image and channel) equals conv2d(...) + add."""
    rng = np.random.default_rng(11)
    x, w = random_array(rng, x_shape), random_array(rng, w_shape)
    b = random_array(rng, (w_shape[0],))
    pad = w_shape[2] // 2
    ref = _reference(x, w, b, padding=pad)
    add = random_array(rng, (*ref.shape[:2], 1, 1) if per_channel else ref.shape)
    up = [Tensor.from_numpy(a, device=device) for a in (x, w, b, add)]
    out = conv2d(*up[:3], padding=pad, add=up[3], _plan_override=plan)
    assert_close(out.numpy(), ref + add, tol=F32_TOL)
    assert_close(up[3].numpy(), add, tol=0)  # the addend is read, never written
    with pytest.raises(ValueError, match="add must have"):
        conv2d(*up[:3], padding=pad, add=Tensor.from_numpy(add[:1], device=device))


# The fused-add test's kernels (unsplit and split K): no compile of their own.
@pytest.mark.parametrize("x_shape,w_shape,plan", [
    ((5, 6, 9, 11), (13, 6, 3, 3), None),
    ((5, 20, 5, 7), (70, 20, 3, 3), (64, 64, 3, 8)),
    ((5, 24, 7, 5), (40, 24, 1, 1), None),  # test_conv2d_1x1's GEMM
])
def test_conv2d_images_read_in_place(device: gpucore.Device, x_shape, w_shape, plan) -> None:
    """images=(start, count) convolves x[start:start + count] where it lies: bit for bit the
    conv of a copy of those images (a plain 1x1 conv, which goes to the GEMM, takes a copy)."""
    rng = np.random.default_rng(12)
    x, w = random_array(rng, x_shape), random_array(rng, w_shape)
    b = random_array(rng, (w_shape[0],))
    pad = w_shape[2] // 2
    add = random_array(rng, (2, w_shape[0], *x_shape[2:])) if w_shape[2] > 1 else None
    up = [None if a is None else Tensor.from_numpy(a, device=device) for a in (x, w, b, add)]
    got = conv2d(*up[:3], padding=pad, add=up[3], images=(2, 2), _plan_override=plan).numpy()
    copied = conv2d(Tensor.from_numpy(x[2:4], device=device), *up[1:3], padding=pad,
                    add=up[3], _plan_override=plan).numpy()
    np.testing.assert_array_equal(got, copied)
    assert_close(got, _reference(x[2:4], w, b, padding=pad) + (0 if add is None else add),
                 tol=F32_TOL)
    for bad in ((4, 2), (0, 0), (-1, 2), 2):
        with pytest.raises(ValueError, match="images"):
            conv2d(*up[:3], padding=pad, images=bad)


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 2), cin=st.integers(1, 9), cout=st.integers(1, 19),
       h=st.integers(1, 12), w=st.integers(1, 12), k=st.sampled_from([1, 2, 3]),
       stride=st.integers(1, 2), padding=st.integers(0, 1), dilation=st.integers(1, 2),
       groups=st.sampled_from([1, 2]), seed=st.integers(0, 2**16))
def test_conv2d_random_shapes(device: gpucore.Device, n, cin, cout, h, w, k, stride, padding,
                              dilation, groups, seed) -> None:
    cin, cout = cin * groups, cout * groups
    if h + 2 * padding < dilation * (k - 1) + 1 or w + 2 * padding < dilation * (k - 1) + 1:
        return  # no output pixel; covered by the error test
    _run(device, (n, cin, h, w), (cout, cin // groups, k, k), seed=seed, stride=stride,
         padding=padding, dilation=dilation, groups=groups)


@pytest.mark.parametrize("w_shape", [(32, 16, 3, 3), (24, 16, 1, 1)])
def test_conv2d_float16(f16_device: gpucore.Device, w_shape) -> None:
    _run(f16_device, (2, 16, 12, 12), w_shape, dtype=np.float16, padding=w_shape[-1] // 2)


@pytest.mark.parametrize("plan", [None, (128, 64, 3, 8)])
def test_conv2d_float16_scalar_weights(f16_device: gpucore.Device, plan) -> None:
    # K = 27: weight rows are not whole vec4s, so they load one by one; split-K sums in f32.
    _run(f16_device, (2, 3, 13, 11), (20, 3, 3, 3), dtype=np.float16, padding=1, plan=plan)


def test_conv2d_errors(device: gpucore.Device) -> None:
    def t(shape, dtype=np.float32):
        return Tensor.from_numpy(np.ones(shape, dtype), device=device)

    x, w = t((1, 4, 8, 8)), t((6, 4, 3, 3))
    with pytest.raises(ValueError, match="4 channels"):
        conv2d(x, t((6, 3, 3, 3)))
    with pytest.raises(ValueError, match="4-D"):
        conv2d(t((4, 8, 8)), w)
    with pytest.raises(ValueError, match="bias must have shape"):
        conv2d(x, w, t((5,)))
    with pytest.raises(ValueError, match="not divisible by groups"):
        conv2d(t((1, 4, 8, 8)), t((5, 2, 3, 3)), groups=2)
    with pytest.raises(ValueError, match="does not fit"):
        conv2d(t((1, 4, 2, 2)), w)
    with pytest.raises(ValueError, match="stride"):
        conv2d(x, w, stride=0)
    with pytest.raises(TypeError, match="gpustd Tensor"):
        conv2d(np.ones((1, 4, 8, 8), np.float32), w)
    with pytest.raises(TypeError, match="int32"):
        conv2d(t((1, 4, 8, 8), np.int32), w)
    if device.has_f16:
        with pytest.raises(TypeError, match="float16"):
            conv2d(x, t((6, 4, 3, 3), np.float16))


@pytest.mark.parametrize(("slope", "scale", "with_add"), [(0.2, 1.0, False), (None, 0.2, True),
                                                          (0.1, 0.5, True)])
def test_conv2d_leaky_and_scaled_residual(device: gpucore.Device, slope, scale,
                                          with_add) -> None:
    # ESRGAN's dense-block tails: leaky_relu(conv), then 0.2 * conv + x
    rng = np.random.default_rng(7)
    x = random_array(rng, (1, 6, 11, 9), np.float32)
    w, b = random_array(rng, (5, 6, 3, 3), np.float32), random_array(rng, (5,), np.float32)
    add = random_array(rng, (1, 5, 11, 9), np.float32) if with_add else None
    y = torch.from_numpy(_reference(x, w, b, padding=1))
    y = y if slope is None else F.leaky_relu(y, slope)
    expected = scale * y.numpy() + (0.0 if add is None else add)
    up = [None if a is None else Tensor.from_numpy(a, device=device) for a in (x, w, b, add)]
    got = conv2d(*up[:3], padding=1, add=up[3], negative_slope=slope, scale=scale).numpy()
    assert np.abs(expected).max() > 1 and (expected < 0).any()  # the slope and scale matter
    assert_close(got, expected, dtype=np.float32, tol=F32_TOL)


def test_conv2d_reads_the_first_in_channels(device: gpucore.Device) -> None:
    # a dense block's growing features in one tensor: each conv reads a prefix of them
    rng = np.random.default_rng(8)
    x = random_array(rng, (2, 9, 7, 6), np.float32)
    w, b = random_array(rng, (4, 5, 3, 3), np.float32), random_array(rng, (4,), np.float32)
    up = [Tensor.from_numpy(a, device=device) for a in (x, w, b)]
    got = conv2d(*up, padding=1, in_channels=5).numpy()
    assert_close(got, _reference(x[:, :5], w, b, padding=1), dtype=np.float32, tol=F32_TOL)
    for bad in (0, 10, 2.5):
        with pytest.raises(ValueError, match="in_channels must be"):
            conv2d(*up, padding=1, in_channels=bad)
