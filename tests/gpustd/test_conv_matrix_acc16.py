"""The matrix-unit conv2d with f16 accumulators (gpustd/nn/_conv_subgroup_matrix.py's
CONV_TILES_ACC16, taken where gpustd.gemm.accumulate.conv_accumulation says "f16":
GPUSTD_CONV_ACCUMULATE=f16): the tiles,
the rule and the tuner's classes everywhere (nothing compiles); the route through conv2d and
the results against float64 wherever the kernel is available: on Dawn GPUs, and on adapters
with shader-f16 and subgroups with the matrix units emulated (conftest.matrix_device; they sum
in f32, so there the tests check the routing, not the f16 rounding)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from conftest import emulated_subset, emulated_tile, matrix_device

import gpucore
from gpucore import _wgsl
from gpustd import Tensor
from gpustd.gemm import accumulate as acc_setting
from gpustd.gemm import matrix_codegen as sm
from gpustd.gemm import matrix_units
from gpustd.gemm.matrix_tuning import tile_name
from gpustd.nn import _conv_matrix_tuning as conv_tune
from gpustd.nn import _conv_subgroup_matrix as csm
from gpustd.nn import conv2d

pytestmark = pytest.mark.usefixtures("cache_home")  # conftest: private cache, tuning off
_real_conv2d_matrix = csm.conv2d_matrix


@pytest.fixture
def device(device: gpucore.Device) -> gpucore.Device:
    """Here, the adapter's Device with subgroup matrices, emulated where it has none."""
    return matrix_device(device)


def _fake_device(storage: int = 48 * 1024) -> Any:
    return SimpleNamespace(limits={"max-compute-workgroup-storage-size": storage,
                                   "max-compute-invocations-per-workgroup": 1024,
                                   "max-compute-workgroups-per-dimension": 65535})


@pytest.mark.parametrize("name", csm.CONV_TILES_ACC16)
def test_acc16_tiles_generate_f16_accumulators(name: str) -> None:
    tile = csm.CONV_TILES_ACC16[name]
    source = csm.source(tile, 3, 3, sm.load_width(tile, 2880, ()))
    assert [b.name for b in _wgsl.parse(source).storage] == ["x", "weight", "bias", "add", "out"]
    assert "subgroup_matrix_result<f16, 16, 16>" in source
    assert "subgroup_matrix_result<f32" not in source
    assert tile.shared_bytes() <= 48 * 1024 and tile.threads % tile.bn == 0
    if name in csm.CONV_TILES:  # the f32 tiles' twins
        assert tile == replace(csm.CONV_TILES[name], acc="f16")
    else:  # the larger ones f32 accumulators cannot hold
        assert tile.fm * tile.fn >= 16


def test_f32_stays_the_default() -> None:
    assert all(t.acc == "f32" for t in csm.CONV_TILES.values())
    for batch, c_in, size, c_out, stride in conv_tune.SD_CONVS:
        pixels, k_total = batch * (size // stride) ** 2, c_in * 9
        tile = csm.choose_conv_tile(c_out, pixels, k_total)
        assert tile == csm.choose_conv_tile(c_out, pixels, k_total, accumulate="f32")
        assert tile in csm.CONV_TILES.values()
        assert csm.split_count(c_out, pixels, k_total) == csm.tile_splits(
            c_out, pixels, k_total, tile)


def test_acc16_rule_takes_acc16_tiles() -> None:
    for batch, c_in, size, c_out, stride in conv_tune.SD_CONVS:
        pixels, k_total = batch * (size // stride) ** 2, c_in * 9
        tile = csm.choose_conv_tile(c_out, pixels, k_total, accumulate="f16")
        assert tile.acc == "f16" and tile in csm.CONV_TILES_ACC16.values()
        small = csm.choose_conv_tile(c_out, pixels, k_total, storage=32 * 1024,
                                     accumulate="f16")
        assert small.shared_bytes() <= 32 * 1024
    tiles = csm.CONV_TILES_ACC16

    def rule(c_out: int, pixels: int, k_total: int) -> sm.MatrixTile:
        return csm.choose_conv_tile(c_out, pixels, k_total, accumulate="f16")

    # SDXL: 320 x 128 for 320 and 640 channels over a wave of them, unsplit
    assert rule(320, 2 * 128 * 128, 2880) == rule(320, 2 * 128 * 128, 8640) == tiles["320x128"]
    assert rule(640, 2 * 64 * 64, 5760) == rule(640, 2 * 64 * 64, 17280) == tiles["320x128"]
    # 1280 channels: 256 x 128 in the f32 rule's K splits (7 at 32 x 32, 9 at 16 x 16)
    assert rule(1280, 2 * 32 * 32, 11520) == tiles["256x128"]
    assert csm.split_count(1280, 2 * 32 * 32, 11520) == 7
    assert rule(1280, 2 * 16 * 16, 11520) == tiles["256x128"]
    assert csm.split_count(1280, 2 * 16 * 16, 11520) == 9
    # SD 1.5: 320 x 64 for 640 at 32 x 32 and 320 at 64 x 64 (64 tiles of 320 x 128 lose)
    assert rule(640, 2 * 32 * 32, 5760) == rule(320, 2 * 64 * 64, 2880) == tiles["320x64"]
    # elsewhere the f32 rule's tile with f16 accumulators: conv_in, the VAEs' channels
    for c_out, pixels, k_total in [(320, 2 * 64 * 64, 36), (512, 128 * 128, 4608),
                                   (256, 256 * 256, 2304), (1280, 2 * 8 * 8, 11520)]:
        assert rule(c_out, pixels, k_total) == replace(
            csm.choose_conv_tile(c_out, pixels, k_total), acc="f16")
    assert rule(320, 2 * 128 * 128, 2880) != csm.choose_conv_tile(
        320, 2 * 128 * 128, 2880, storage=32 * 1024, accumulate="f16")


def test_tuner_classes_and_candidates_by_accumulation(first_device: gpucore.Device,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    f32 = conv_tune.conv_class(3, 3, (1, 1), 1280, 11520, 2048)
    assert conv_tune.conv_class(3, 3, (1, 1), 1280, 11520, 2048, "f16") == f32 + "/acc16"
    names = conv_tune.conv_candidates(_fake_device(), 1280, 2048, "f16")
    assert set(conv_tune.conv_candidates(_fake_device(), 1280, 2048)) < set(names)
    assert all(csm.CONV_TILES_ACC16[name].acc == "f16" for name in names)
    assert "256x256" not in conv_tune.conv_candidates(_fake_device(40960), 1280, 2048, "f16")
    device = matrix_device(first_device)
    if not matrix_units.available(device) or \
            device.info.matrix_config("f16", "f16", 16, 16, 16) is None:
        pytest.skip(f"{device.info.label} has no f16 result fragments, not even emulated")
    monkeypatch.setenv(acc_setting.CONV_ACCUMULATE_ENV, "f16")
    problems = conv_tune.problems(device)
    assert problems and all(p.shape_class.endswith("/acc16") for p in problems)
    assert all(csm.CONV_TILES_ACC16[p.default].acc == "f16" for p in problems)
    tile = conv_tune.conv_tile(device, (2, 1280, 16, 16), (1280, 1280, 3, 3), (1, 1), (1, 1),
                               (1, 1), (16, 16))
    storage = device.limits["max-compute-workgroup-storage-size"]
    assert tile == csm.choose_conv_tile(1280, 512, 11520, storage=storage, accumulate="f16")
    monkeypatch.delenv(acc_setting.CONV_ACCUMULATE_ENV)
    assert conv_tune.conv_tile(device, (2, 1280, 16, 16), (1280, 1280, 3, 3), (1, 1), (1, 1),
                               (1, 1), (16, 16)).acc == "f32"
    # the GEMMs' setting (--fp16-accumulation's block, the GEMM's variable) leaves the convs
    monkeypatch.setenv(acc_setting.ACCUMULATE_ENV, "f16")
    with acc_setting.accumulating("f16"):
        assert conv_tune.conv_tile(device, (2, 1280, 16, 16), (1280, 1280, 3, 3), (1, 1),
                                   (1, 1), (1, 1), (16, 16)).acc == "f32"


def _bound(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(float64 conv, the f16 accumulation's error bound per element): K / 16 roundings of
    the running sum (one per 16-deep fragment product) and two more (inside the product, the
    bias), each within 2^-10 of sum |x w| + |b| (2^-10: a truncating unit too), and the
    result's rounding to f16 (2^-11 of it)."""
    torch = pytest.importorskip("torch")
    tx, tw, tb = (torch.from_numpy(v.astype(np.float64)) for v in (x, w, b))
    conv = torch.nn.functional.conv2d
    expected = conv(tx, tw, tb, padding=1).numpy()
    k_total = w.shape[1] * w.shape[2] * w.shape[3]
    magnitude = conv(tx.abs(), tw.abs(), tb.abs(), padding=1).numpy()
    return expected, (k_total / 16 + 2) * 2.0 ** -10 * magnitude + 2.0 ** -11 * np.abs(expected)


# (x shape, C_out): 528 tiles of 64 x 64 (MIN_TILES and up), and a deep K over 4 tiles (split)
ROUTED = [((1, 16, 130, 130), 64), ((1, 480, 10, 10), 70)]


@pytest.mark.parametrize(("x_shape", "c_out"), ROUTED)
@pytest.mark.parametrize("accumulate", ["f32", "f16"])
def test_conv2d_takes_the_accumulation_and_meets_the_bound(
        device: gpucore.Device, monkeypatch: pytest.MonkeyPatch, x_shape: tuple[int, ...],
        c_out: int, accumulate: str) -> None:
    if not matrix_units.available(device) or \
            device.info.matrix_config("f16", "f16", 16, 16, 16) is None:
        pytest.skip(f"{device.info.label} has no f16 result fragments (Dawn on a GPU has)")
    monkeypatch.setenv(acc_setting.CONV_ACCUMULATE_ENV, accumulate)
    tiles = []

    def spy(*args: Any, **kwargs: Any) -> Tensor:
        tiles.append(kwargs["tile"])  # run in 32 x 32 on emulated units (4 cases: 26 -> 12 s)
        return _real_conv2d_matrix(*args, **{**kwargs,
                                             "tile": emulated_tile(device, kwargs["tile"])})

    monkeypatch.setattr(csm, "conv2d_matrix", spy)
    rng = np.random.default_rng(x_shape[1])
    x = rng.standard_normal(x_shape).astype(np.float16)
    w = (rng.standard_normal((c_out, x_shape[1], 3, 3)) / np.sqrt(9 * x_shape[1])).astype(
        np.float16)
    b = rng.standard_normal(c_out).astype(np.float16)
    got = conv2d(*(Tensor.from_numpy(v, device=device) for v in (x, w, b)), padding=1).numpy()
    expected, bound = _bound(x, w, b)
    pixels, k_total = x_shape[0] * x_shape[2] * x_shape[3], w[0].size
    storage = device.limits["max-compute-workgroup-storage-size"]
    assert tiles == [csm.choose_conv_tile(c_out, pixels, k_total, storage=storage,
                                          accumulate=accumulate)]
    assert tiles[0].acc == accumulate
    error = np.abs(got - expected)
    assert (error <= bound).all(), float((error / bound).max())
    assert error.max() / np.abs(expected).max() < (1e-2 if accumulate == "f16" else 2e-3)


@pytest.mark.parametrize("name", [n for n in csm.CONV_TILES_ACC16 if n not in csm.CONV_TILES])
def test_larger_acc16_tiles_meet_the_bound_where_available(device: gpucore.Device,
                                                          name: str) -> None:
    """Each tile of 4 x 4 or 5 x 4 fragments on a conv ragged in C_out, pixels and K."""
    if not matrix_units.available(device) or \
            device.info.matrix_config("f16", "f16", 16, 16, 16) is None:
        pytest.skip(f"{device.info.label} has no f16 result fragments (Dawn on a GPU has)")
    emulated_subset(device, False)  # past lavapipe's 32 KiB of workgroup memory
    rng = np.random.default_rng(5)
    x = rng.standard_normal((2, 150, 19, 23)).astype(np.float16)
    w = (rng.standard_normal((330, 150, 3, 3)) / 37).astype(np.float16)
    b = rng.standard_normal(330).astype(np.float16)
    got = csm.conv2d_matrix(*(Tensor.from_numpy(v, device=device) for v in (x, w, b)),
                            stride=(1, 1), padding=(1, 1), dilation=(1, 1), out_hw=(19, 23),
                            tile=csm.CONV_TILES_ACC16[name]).numpy()
    expected, bound = _bound(x, w, b)
    error = np.abs(got - expected)
    assert (error <= bound).all(), float((error / bound).max())


def test_acc16_candidates_are_bitwise_the_default_where_available(
        device: gpucore.Device) -> None:
    """The tuner's promise with f16 accumulators: each candidate adds the same fragment
    products in the same order into f16 (gpustd/gemm/matrix_tuning.py's docstring)."""
    if not matrix_units.available(device) or \
            device.info.matrix_config("f16", "f16", 16, 16, 16) is None:
        pytest.skip(f"{device.info.label} has no f16 result fragments (Dawn on a GPU has)")
    if any(c.emulated for c in device.info.matrix_configs):  # 15 s of CI's compiles
        pytest.skip("emulated matrix units sum in f32: an f16 sum's order shows on a GPU only")
    rng = np.random.default_rng(4)
    n, c_in, h, w, c_out = 2, 40, 23, 21, 70  # K 360: no multiple of 32
    x = Tensor.from_numpy(rng.standard_normal((n, c_in, h, w)).astype(np.float16), device=device)
    weight = Tensor.from_numpy((rng.standard_normal((c_out, c_in, 3, 3)) / 19).astype(
        np.float16), device=device)

    def run(name: str) -> bytes:
        return csm.conv2d_matrix(x, weight, None, stride=(1, 1), padding=(1, 1),
                                 dilation=(1, 1), out_hw=(h, w),
                                 tile=csm.CONV_TILES_ACC16[name]).numpy().tobytes()

    pixels = n * h * w
    default = tile_name(csm.CONV_TILES_ACC16, csm.choose_conv_tile(
        c_out, pixels, c_in * 9, storage=device.limits["max-compute-workgroup-storage-size"],
        accumulate="f16"))
    names = conv_tune.conv_candidates(device, c_out, pixels, "f16")
    if any(c.emulated for c in device.info.matrix_configs):
        names = tuple(n for n in names if n in ("64x64", "128x128", "32x32"))
    expected = run(default)
    for name in names:
        assert run(name) == expected, f"tile {name} changed the result"
