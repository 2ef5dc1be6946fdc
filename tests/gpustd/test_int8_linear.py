"""W8A8 linear layers (gpustd/nn/int8_linear.py): the activations' per-row quantization against
numpy, the GEMM's i32 sums against numpy's product of the same int8 operands (exact: the
results equal the exact sums' f16 epilogue to within one f16 step, the step an FMA in the
epilogue may take), the error against float64 of the unquantized operands, SmoothQuant's
factors. The portable kernel (shaders/quant/gemm_w8a8.wgsl) runs on every adapter; the
matrix-unit kernel (gpustd/gemm/int8_units.py) on emulated matrix units (conftest.matrix_device)
in its smallest tile, and on a GPU under Dawn in the shipped ones."""

from __future__ import annotations

import re

import numpy as np
import pytest
from conftest import matrix_device, sweep_subset_elsewhere

import gpucore
from gpucore import _wgsl
from gpustd import Tensor
from gpustd.gemm import int8_units
from gpustd.gemm.matrix_codegen import MatrixTile
from gpustd.nn import Linear
from gpustd.nn.int8_linear import (
    Int8Weight,
    int8_linear,
    quantize_rows,
    quantize_weight,
    smoothing_factors,
)

# The smallest i8 tile: 4 subgroups of one fragment, K steps of 32 (one fragment deep): the
# emulated kernel's compile stays a few seconds on CI.
SMALL = MatrixTile(1, 1, 2, 2, bk=32, prefetch=False, component="i8", acc="i32")


def _int8(words: Tensor, k: int) -> np.ndarray:
    return words.numpy().view(np.int8).reshape(words.shape[0], -1)[:, :k].astype(np.int64)


def _epilogue(sums: np.ndarray, sa: np.ndarray, sb: np.ndarray, extra: np.ndarray | None,
              dtype: np.dtype) -> np.ndarray:
    v = sums.astype(np.float32) * sa[:, None] * sb[None, :]
    return (v + extra if extra is not None else v).astype(dtype)


def _within_a_step(got: np.ndarray, want: np.ndarray) -> None:
    step = np.spacing(np.abs(want).astype(got.dtype)).astype(np.float64)
    off = np.abs(got.astype(np.float64) - want.astype(np.float64))
    assert (off <= step).all(), f"{int((off > step).sum())} outputs over a step off"
    assert (off == 0).mean() > 0.9  # mostly bit-exact: the sums are


@pytest.mark.nodevice
@pytest.mark.parametrize("tile", [*int8_units.TILES.values(), SMALL])
def test_generated_i8_kernel_interface(tile: MatrixTile) -> None:
    width = 1 if tile is SMALL else 4  # 32 rows of 8 words: 64 vector loads for 128 lanes
    source = int8_units.source(tile, width, width)
    signature = _wgsl.parse(source)
    assert [b.name for b in signature.storage] == ["a", "b", "scale_a", "scale_b", "bias", "c"]
    assert "subgroup_matrix_left<i8, 32, 16>" in source
    assert "subgroup_matrix_right<i8, 16, 32>" in source
    assert len(re.findall(r"var c_\d+_\d+: subgroup_matrix_result<i32", source)) == \
        tile.fm * tile.fn
    assert source.count("subgroupMatrixMultiplyAccumulate") == tile.fm * tile.fn * tile.bk // 32
    assert "array<i32," in source  # staged as words of four
    aligned = int8_units.source(tile, width, width, (tile.bm * 2, tile.bn, tile.step * 3))
    assert "params.m" not in aligned and "if (row >=" not in aligned


@pytest.mark.nodevice
def test_i8_tiles_refuse_what_they_cannot_hold() -> None:
    with pytest.raises(ValueError, match="i8 operands into f32"):
        MatrixTile(2, 2, 2, 2, bk=64, component="i8")
    with pytest.raises(ValueError, match="K steps of 16"):
        MatrixTile(2, 2, 2, 2, bk=16, component="i8", acc="i32")


@pytest.mark.nodevice
def test_tile_rule() -> None:
    """The H100's fastest tiles (int8_units.choose_tile's measurements), within the device's
    workgroup memory and invocations; 64 x 64 below two waves."""
    assert int8_units.choose_tile(4096, 4096, 4096) == int8_units.TILES["128x128k128"]
    assert int8_units.choose_tile(4608, 12288, 3072) == int8_units.TILES["256x128"]
    assert int8_units.choose_tile(4608, 12288, 3072, invocations=256) == \
        int8_units.TILES["128x128k128"]
    assert int8_units.choose_tile(4096, 4096, 4096, storage=32 * 1024) == \
        int8_units.TILES["128x128"]
    assert int8_units.choose_tile(300, 200, 4096) == int8_units.TILES["64x64"]


@pytest.mark.nodevice
def test_smoothing_factors() -> None:
    s = smoothing_factors(np.array([4.0, 0.0, 9.0]), np.array([1.0, 2.0, 0.25]))
    np.testing.assert_allclose(s, [2.0, 1.0, 6.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_quantize_rows_matches_numpy(device: gpucore.Device, dtype: type) -> None:
    if dtype == np.float16 and not device.has_f16:
        pytest.skip(f"{device.name} has no shader-f16")
    rng = np.random.default_rng(1)
    x = rng.standard_normal((9, 37)).astype(dtype) * 3
    x[4] = 0  # a zero row: scale 0, levels 0
    words, scales = quantize_rows(Tensor.from_numpy(x, device=device))
    assert words.shape == (9, 10)
    raw = words.numpy().view(np.int8).reshape(9, 40)
    assert (raw[:, 37:] == 0).all()  # K padded with zeros to whole words
    peak = np.abs(x.astype(np.float32)).max(1)
    np.testing.assert_allclose(scales.numpy(), peak / 127, rtol=1e-6)
    with np.errstate(divide="ignore", invalid="ignore"):
        want = np.clip(np.rint(x.astype(np.float32) * np.where(peak > 0, 127 / peak, 0)[:, None]),
                       -127, 127)
    got = raw[:, :37].astype(np.float32)
    assert np.abs(got - want).max() <= 1  # a tie may round the other way (f32 division)
    assert (got == want).mean() > 0.98
    assert np.abs(got).max() == 127 and (got[4] == 0).all()


def _check_linear(device: gpucore.Device, m: int, k: int, n: int, *, bias: bool,
                  add: bool, dtype: type = np.float16) -> None:
    rng = np.random.default_rng(m * k + n)
    x = rng.standard_normal((m, k)).astype(dtype)
    w = (rng.standard_normal((n, k)) / np.sqrt(k)).astype(dtype)
    b = rng.standard_normal(n).astype(dtype) if bias else None
    base = rng.standard_normal((m, n)).astype(dtype) if add else None
    xt = Tensor.from_numpy(x, device=device)
    weight = quantize_weight(Tensor.from_numpy(w, device=device))
    acc = Tensor.from_numpy(base, device=device) if base is not None else None
    out = int8_linear(xt, weight, Tensor.from_numpy(b, device=device) if b is not None else None,
                      add_to=acc).numpy()
    words, sa = quantize_rows(xt)
    sums = _int8(words, k) @ _int8(weight.words, k).T
    extra = None
    if base is not None or b is not None:
        extra = np.zeros((m, n), np.float32)
        extra += base.astype(np.float32) if base is not None else 0
        extra += b.astype(np.float32) if b is not None else 0
    _within_a_step(out, _epilogue(sums, sa.numpy(), weight.scales.numpy(), extra,
                                  np.dtype(dtype)))
    exact = x.astype(np.float64) @ w.astype(np.float64).T + (extra if extra is not None else 0)
    error = np.abs(out - exact).max() / np.abs(exact).max()
    assert error < 0.03, error  # int8 of normal values: about 1% of the largest output


@pytest.mark.parametrize(("m", "k", "n", "bias", "add"),
                         [(37, 53, 70, True, False), (130, 200, 67, False, True),
                          (1, 9, 5, True, True)])
def test_portable_w8a8_gemm_is_exact(device: gpucore.Device, m: int, k: int, n: int,
                                     bias: bool, add: bool) -> None:
    sweep_subset_elsewhere(device, (m, k) == (37, 53))
    dtype = np.float16 if device.has_f16 else np.float32
    _check_linear(device, m, k, n, bias=bias, add=add, dtype=dtype)


def test_bytes_dot_equals_packed_dot(device: gpucore.Device,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """The i32-arithmetic dot4 (quant/dot4_bytes) for runtimes without dot4I8Packed."""
    sweep_subset_elsewhere(device, False)
    monkeypatch.setattr(int8_units, "PACKED_DOT", False)
    _check_linear(device, 33, 70, 19, bias=True, add=False,
                  dtype=np.float16 if device.has_f16 else np.float32)


def test_matrix_unit_w8a8_gemm_is_exact(device: gpucore.Device,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """The matrix-unit kernel in its smallest tile (emulated on wgpu-native: a few seconds to
    compile), ragged M, N, K."""
    sweep_subset_elsewhere(device, False)
    device = matrix_device(device)
    if not int8_units.available(device):
        pytest.skip(f"{device.name} has no i8 subgroup matrices, emulated or real")
    monkeypatch.setattr(int8_units, "choose_tile", lambda *args, **kwargs: SMALL)
    _check_linear(device, 45, 100, 37, bias=True, add=True)


def test_smoothing_moves_an_outlier_channel_into_the_weight(device: gpucore.Device) -> None:
    """One input channel 50x the others: per-row scales spend the int8 range on it; SmoothQuant
    (alpha 0.5) brings the error down, and the weight it quantizes stands for W times s."""
    sweep_subset_elsewhere(device, False)
    dtype = np.float16 if device.has_f16 else np.float32
    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, 48)).astype(np.float32)
    x[:, 7] *= 50
    w = (rng.standard_normal((24, 48)) / 7).astype(np.float32)
    exact = x.astype(np.float64) @ w.astype(np.float64).T
    xt = Tensor.from_numpy(x.astype(dtype), device=device)
    wt = Tensor.from_numpy(w.astype(dtype), device=device)
    errors = []
    for act in (None, np.abs(x).max(0)):
        weight = quantize_weight(wt, act_absmax=act)
        out = int8_linear(xt, weight).numpy()
        errors.append(np.abs(out - exact).max() / np.abs(exact).max())
        np.testing.assert_allclose(weight.dequantize(), w, atol=np.abs(w).max() / 20)
    assert errors[1] < 0.6 * errors[0], errors


def test_linear_layer_takes_an_int8_weight(device: gpucore.Device) -> None:
    sweep_subset_elsewhere(device, False)
    dtype = np.float16 if device.has_f16 else np.float32
    layer = Linear(20, 12, dtype=dtype, device=device)
    rng = np.random.default_rng(2)
    w = rng.standard_normal((12, 20)).astype(dtype)
    layer.load_state_dict({"weight": w, "bias": np.ones(12, dtype)})
    x = Tensor.from_numpy(rng.standard_normal((3, 5, 20)).astype(dtype), device=device)
    want = layer(x).numpy()
    layer.weight = quantize_weight(layer.weight)  # type: ignore[assignment]
    assert isinstance(layer.weight, Int8Weight)
    got = layer(x).numpy()
    assert got.shape == (3, 5, 12)
    assert np.abs(got - want).max() < 0.05 * np.abs(want).max()


def test_bad_input_says_what_to_do(device: gpucore.Device) -> None:
    sweep_subset_elsewhere(device, False)
    dtype = np.float16 if device.has_f16 else np.float32
    weight = quantize_weight(Tensor.from_numpy(np.ones((4, 8), dtype), device=device))
    with pytest.raises(ValueError, match="must end in the weight's 8 input features"):
        int8_linear(Tensor.from_numpy(np.ones((2, 7), dtype), device=device), weight)
    with pytest.raises(ValueError, match="act_absmax must have 8 values"):
        quantize_weight(Tensor.from_numpy(np.ones((4, 8), dtype), device=device),
                        act_absmax=np.ones(3))
