"""gpustd.elementwise / gpustd.unary against float64 numpy, scipy and torch references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes
from support import assert_close, random_array

import gpucore
from gpustd import Tensor, elementwise, unary

SETTINGS = settings(max_examples=12, deadline=None)
BINARY = {"add": np.add, "subtract": np.subtract, "multiply": np.multiply,
          "divide": np.divide, "power": np.power, "maximum": np.maximum,
          "minimum": np.minimum}
AWKWARD = [((1,), (1,)), ((257,), (257,)), ((1031,), ()), ((), (13, 1)), ((3, 1, 67), (5, 1)),
           ((2, 1, 3, 1, 5, 7, 1), (1, 4, 1, 6, 1, 1, 3)), ((65537,), (1,))]


def operands(rng: np.random.Generator, op: str, shape: tuple[int, ...],
             dtype: type = np.float32) -> np.ndarray:
    """Inputs for which the float64 reference is well conditioned."""
    if op == "power":
        return random_array(rng, shape, dtype, 0.5, 2.0)
    x = random_array(rng, shape, dtype, 0.5, 2.0)
    return x * np.where(rng.random(shape) < 0.5, -1, 1).astype(dtype)


def check_binary(device: gpucore.Device, op: str, sa: tuple, sb: tuple, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    a, b = operands(rng, op, sa), operands(rng, op, sb)
    got = getattr(elementwise, op)(Tensor.from_numpy(a, device=device).reshape(sa),
                                   Tensor.from_numpy(b, device=device).reshape(sb))
    assert got.dtype == np.float32
    assert_close(got.numpy(), BINARY[op](a.astype(np.float64), b.astype(np.float64)))


# -- binary ops ---------------------------------------------------------------------------
@pytest.mark.parametrize("op", BINARY)
@SETTINGS
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=7),
       seed=st.integers(0, 2**16))
def test_binary_broadcasts_like_numpy(device, op, shapes, seed) -> None:
    check_binary(device, op, *shapes.input_shapes, seed=seed)


@pytest.mark.parametrize("sa,sb", AWKWARD)
def test_binary_awkward_shapes(device, sa, sb) -> None:
    for op in ("add", "divide"):
        check_binary(device, op, sa, sb)


@pytest.mark.parametrize("op", BINARY)
def test_python_scalars_on_either_side(device, op) -> None:
    rng = np.random.default_rng(1)
    a = operands(rng, op, (5, 33))
    t = Tensor.from_numpy(a, device=device)
    ref = BINARY[op]
    assert_close(getattr(elementwise, op)(t, 1.75).numpy(), ref(a.astype(np.float64), 1.75))
    assert_close(getattr(elementwise, op)(1.75, t).numpy(), ref(1.75, a.astype(np.float64)))


def test_host_arrays_adopt_the_tensor_dtype(device) -> None:
    rng = np.random.default_rng(2)
    a, b = random_array(rng, (4, 3)), rng.uniform(-1, 1, 3)  # b is float64 on the host
    got = elementwise.add(Tensor.from_numpy(a, device=device), b)
    assert got.dtype == np.float32 and got.device is device
    assert_close(got.numpy(), a.astype(np.float64) + b.astype(np.float32))


def test_power_special_cases(device) -> None:
    nan = np.nan  # a NaN base gave 0 on lavapipe, 0**nan 0 and 1**nan NaN
    base = Tensor.from_numpy(np.array([0.0, 0.0, 0.0, -2.0, -2.0, -8.0, 3.0, nan, nan, nan,
                                       0.0, 1.0, 2.0], np.float32), device=device)
    exponent = Tensor.from_numpy(np.array([0.0, 2.0, -1.0, 3.0, 2.0, 1 / 3, 0.0, 2.0, 3.0,
                                           0.0, nan, nan, nan], np.float32), device=device)
    got = elementwise.power(base, exponent).numpy()
    np.testing.assert_array_equal(got, [1.0, 0.0, np.inf, -8.0, 4.0, nan, 1.0, nan, nan, 1.0,
                                        nan, 1.0, nan])


@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_maximum_minimum_propagate_nan(device, op) -> None:
    # GPU max/min return the other operand for a NaN; numpy's keep the NaN. (Which zero a
    # tie of -0.0 and 0.0 gives is the compiler's: it may turn the select into max.)
    special = np.array([np.nan, -0.0, 0.0, 1.0, -np.inf, np.inf], np.float32)
    a, b = np.meshgrid(special, special)
    ta, tb = Tensor.from_numpy(a, device=device), Tensor.from_numpy(b, device=device)
    for got, want in [(getattr(elementwise, op)(ta, tb), BINARY[op](a, b)),
                      (getattr(elementwise, op)(ta, np.nan), BINARY[op](a, np.float32(np.nan))),
                      (getattr(elementwise, op)(-0.0, tb), BINARY[op](np.float32(-0.0), b))]:
        np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("dtype", [np.int32, np.uint32])
def test_integer_ops_are_exact(device, dtype) -> None:
    rng = np.random.default_rng(3)
    a = random_array(rng, (7, 11), dtype, -50, 50)
    b = random_array(rng, (11,), dtype, -50, 50)
    ta, tb = Tensor.from_numpy(a, device=device), Tensor.from_numpy(b, device=device)
    for op in ("add", "subtract", "multiply", "maximum", "minimum"):
        got = getattr(elementwise, op)(ta, tb)
        assert got.dtype == dtype
        np.testing.assert_array_equal(got.numpy(), BINARY[op](a, b), err_msg=op)
    exps = random_array(rng, (11,), dtype, 0, 5)
    np.testing.assert_array_equal(elementwise.power(ta, exps).numpy(), np.power(a, exps))
    nonzero = b + (b == 0).astype(dtype)
    divided = elementwise.divide(ta, nonzero)  # true division of integers: float32
    assert divided.dtype == np.float32
    assert_close(divided.numpy(), a.astype(np.float64) / nonzero)


def test_integer_tensor_with_float_scalar_promotes(device) -> None:
    a = np.arange(-3, 4, dtype=np.int32)
    got = elementwise.multiply(Tensor.from_numpy(a, device=device), 0.5)
    assert got.dtype == np.float32
    assert_close(got.numpy(), a * 0.5)


@pytest.mark.parametrize("dtype", [np.int32, np.int64, np.uint8, np.bool_])
@pytest.mark.parametrize("op", ["add", "subtract", "multiply", "divide", "power", "maximum"])
def test_integer_host_data_with_float_scalar_promotes(device, dtype, op) -> None:
    # Host data alone (no Tensor) used to keep the integer dtype and refuse the float.
    a = np.arange(1, 6).astype(dtype)
    for got, want in [(getattr(elementwise, op)(a, 0.5), BINARY[op](a, 0.5)),
                      (getattr(elementwise, op)(1.5, list(a)), BINARY[op](1.5, a)),
                      (getattr(elementwise, op)(a, np.array(0.5)), BINARY[op](a, 0.5))]:
        assert got.dtype == np.float32
        assert_close(got.numpy(), want)
    where = elementwise.where(a > 2, a, 0.25)
    assert where.dtype == np.float32
    np.testing.assert_array_equal(where.numpy(), np.where(a > 2, a, 0.25))


def test_where_broadcasts_three_ways(device) -> None:
    rng = np.random.default_rng(4)
    cond = rng.random((3, 1, 5)) < 0.5
    a, b = random_array(rng, (4, 5)), random_array(rng, (3, 4, 1))
    got = elementwise.where(cond, Tensor.from_numpy(a, device=device),
                            Tensor.from_numpy(b, device=device))
    np.testing.assert_array_equal(got.numpy(), np.where(cond, a, b))
    on_gpu = Tensor.from_numpy(rng.uniform(-1, 1, 5).astype(np.float32), device=device)
    got = elementwise.where(on_gpu, 2.5, Tensor.from_numpy(b, device=device))
    np.testing.assert_array_equal(got.numpy(), np.where(on_gpu.numpy() != 0, np.float32(2.5), b))


def test_where_condition_nan_is_true(device) -> None:
    cond = np.array([np.nan, 0.0, -0.0, 1.0, -np.nan, np.inf, 1e-45], np.float32)
    for on in (Tensor.from_numpy(cond, device=device), cond):  # on the GPU, on the host
        got = elementwise.where(on, 1.0, Tensor.from_numpy(-cond, device=device))
        np.testing.assert_array_equal(got.numpy(), np.where(cond, np.float32(1.0), -cond))


def test_all_scalar_operands(device) -> None:
    assert elementwise.where(True, 2, 3).shape == ()
    assert elementwise.add(2, 3).numpy() == 5


def test_tensor_operators(device) -> None:
    rng = np.random.default_rng(5)
    a = random_array(rng, (3, 4), np.float32, 0.5, 2.0)
    t = Tensor.from_numpy(a, device=device)
    a64 = a.astype(np.float64)
    assert_close(((1 - t) * 2 / (t + 1) ** 2 - t).numpy(), (1 - a64) * 2 / (a64 + 1) ** 2 - a64)
    assert_close((2.0 ** -t).numpy(), 2.0 ** -a64)
    assert_close(abs(t - 1.25).numpy(), np.abs(a64 - 1.25))
    assert_close((t / np.full(4, 3.0)).numpy(), a64 / 3)


def test_empty_shapes(device) -> None:
    t = Tensor.from_numpy(np.zeros((0, 3), np.float32), device=device)
    assert elementwise.add(t, np.ones(3)).shape == (0, 3)
    assert unary.exp(t).shape == (0, 3)


def test_grid_folding_past_65535_workgroups(device) -> None:
    n = 65535 * 256 + 1000  # one more workgroup row than a dimension allows
    x = np.random.default_rng(6).uniform(-1, 1, n).astype(np.float32)
    got = elementwise.add(Tensor.from_numpy(x, device=device), 1.5).numpy()
    np.testing.assert_array_equal(got, x + np.float32(1.5))


# -- errors -------------------------------------------------------------------------------
def test_incompatible_shapes_name_both(device) -> None:
    a = Tensor.from_numpy(np.ones((2, 3), np.float32), device=device)
    with pytest.raises(ValueError, match=r"\(2, 3\).*\(4,\)"):
        elementwise.add(a, np.ones(4, np.float32))


def test_dtype_mismatch_raises(device) -> None:
    a = Tensor.from_numpy(np.ones(3, np.float32), device=device)
    b = Tensor.from_numpy(np.ones(3, np.int32), device=device)
    with pytest.raises(TypeError, match="dtype mismatch"):
        elementwise.multiply(a, b)


def test_complex_tensors_are_refused(device) -> None:
    z = Tensor.from_numpy(np.ones(3, np.complex64), device=device)
    with pytest.raises(TypeError, match="complex64"):
        elementwise.add(z, 1.0)
    with pytest.raises(TypeError, match="complex64"):
        unary.exp(z)


def test_out_of_range_scalar_raises(device) -> None:
    a = Tensor.from_numpy(np.ones(3, np.uint32), device=device)
    with pytest.raises(OverflowError):
        elementwise.add(a, -1)


def test_too_many_broadcast_dims_raises(device) -> None:
    a = Tensor.from_numpy(np.ones((2, 1) * 4, np.float32), device=device)
    with pytest.raises(ValueError, match="independent dimensions"):
        elementwise.add(a, np.ones((1, 2) * 4, np.float32))


def test_bad_unary_options_raise(device) -> None:
    t = Tensor.from_numpy(np.ones(3, np.float32), device=device)
    with pytest.raises(ValueError, match="approximate"):
        unary.gelu(t, approximate="erf")
    with pytest.raises(ValueError, match="a_min or a_max"):
        unary.clip(t, None, None)


# -- unary ops ----------------------------------------------------------------------------
def gelu_reference(x: np.ndarray, approximate: str) -> np.ndarray:
    return torch.nn.functional.gelu(torch.from_numpy(x), approximate=approximate).numpy()


UNARY = {
    "exp": (np.exp, -10, 10), "log": (np.log, 1e-3, 50), "sqrt": (np.sqrt, 0, 100),
    "rsqrt": (lambda v: 1 / np.sqrt(v), 1e-2, 100), "tanh": (np.tanh, -12, 12),
    "sigmoid": (scipy.special.expit, -30, 30), "silu": (lambda v: v * scipy.special.expit(v),
                                                        -30, 30),
    "gelu": (lambda v: gelu_reference(v, "none"), -12, 12),
    "gelu_tanh": (lambda v: gelu_reference(v, "tanh"), -12, 12),
    "abs": (np.abs, -5, 5), "negative": (np.negative, -5, 5),
}


def call_unary(name: str, t: Tensor) -> Tensor:
    if name == "gelu_tanh":
        return unary.gelu(t, approximate="tanh")
    return getattr(unary, name)(t)


@pytest.mark.parametrize("name", UNARY)
@pytest.mark.parametrize("n", [1, 256, 1009])
def test_unary_matches_reference(device, name, n) -> None:
    ref, low, high = UNARY[name]
    x = random_array(np.random.default_rng(n), (n,), np.float32, low, high)
    got = call_unary(name, Tensor.from_numpy(x, device=device))
    assert_close(got.numpy(), ref(x.astype(np.float64)))


@pytest.mark.parametrize("name", ["tanh", "sigmoid", "silu", "gelu", "gelu_tanh"])
def test_saturating_ops_stay_finite_for_huge_inputs(device, name) -> None:
    x = np.array([-3e38, -1e30, -1e4, -100.0, -88.8, 88.8, 100.0, 1e4, 1e30, 3e38], np.float32)
    got = call_unary(name, Tensor.from_numpy(x, device=device)).numpy()
    with np.errstate(over="ignore", invalid="ignore"):
        expected = {"tanh": np.sign(x), "sigmoid": (x > 0).astype(np.float32)}.get(
            name, np.where(x > 0, x, 0))
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-30)


def test_nan_stays_nan_through_unary_ops(device) -> None:
    # numpy gives NaN; tanh's sign() made it 0, and clip's max() made it the lower bound.
    x = Tensor.from_numpy(np.array([np.nan, 0.5, -np.nan], np.float32), device=device)
    for got in (unary.tanh(x), unary.clip(x, -1, 0.25), unary.clip(x, None, 0.25),
                unary.sigmoid(x)):
        np.testing.assert_array_equal(got.numpy()[[0, 2]], [np.nan, np.nan])


def test_tanh_is_relatively_accurate_near_zero(device) -> None:
    x = np.array([1e-7, -3e-5, 2e-3, 0.3, -0.6], np.float32)
    got = unary.tanh(Tensor.from_numpy(x, device=device)).numpy()
    np.testing.assert_allclose(got, np.tanh(x.astype(np.float64)), rtol=3e-7)


def test_gelu_negative_tail_is_relatively_accurate(device) -> None:
    x = np.linspace(-9, -3, 61).astype(np.float32)
    got = unary.gelu(Tensor.from_numpy(x, device=device)).numpy()
    expected = x * 0.5 * scipy.special.erfc(-x.astype(np.float64) / np.sqrt(2))
    np.testing.assert_allclose(got, expected, rtol=2e-5)


@SETTINGS
@given(lo=st.one_of(st.none(), st.floats(-2, 2)), hi=st.one_of(st.none(), st.floats(-2, 2)))
def test_clip_scalar_bounds(device, lo, hi) -> None:
    if lo is None and hi is None:
        return
    x = random_array(np.random.default_rng(7), (37,), np.float32, -3, 3)
    got = unary.clip(Tensor.from_numpy(x, device=device), lo, hi).numpy()
    expected = np.clip(x, np.float32(-np.inf if lo is None else lo),
                       np.float32(np.inf if hi is None else hi))
    np.testing.assert_array_equal(got, expected)


def test_clip_array_bounds_and_integers(device) -> None:
    rng = np.random.default_rng(8)
    x = random_array(rng, (4, 6), np.float32, -3, 3)
    lo = random_array(rng, (6,), np.float32, -2, 0)
    got = unary.clip(Tensor.from_numpy(x, device=device), lo, 1.0).numpy()
    np.testing.assert_array_equal(got, np.clip(x, lo, np.float32(1.0)))
    i = np.array([-7, -2, 0, 3, 9, -2**31], np.int32)
    ti = Tensor.from_numpy(i, device=device)
    np.testing.assert_array_equal(unary.clip(ti, -3, 5).numpy(), np.clip(i, -3, 5))
    np.testing.assert_array_equal(unary.abs(ti).numpy(), np.abs(i))
    np.testing.assert_array_equal(unary.negative(ti).numpy(), np.negative(i))


# -- float16 ------------------------------------------------------------------------------
@pytest.mark.parametrize("op", BINARY)
def test_float16_binary(f16_device, op) -> None:
    rng = np.random.default_rng(9)
    a, b = operands(rng, op, (3, 1, 129), np.float16), operands(rng, op, (5, 1), np.float16)
    got = getattr(elementwise, op)(Tensor.from_numpy(a, device=f16_device),
                                   Tensor.from_numpy(b, device=f16_device))
    assert got.dtype == np.float16
    expected = BINARY[op](a.astype(np.float64), b.astype(np.float64))
    assert_close(got.numpy(), expected, dtype=np.float16)
    scaled = getattr(elementwise, op)(Tensor.from_numpy(a, device=f16_device), 1.5)
    assert_close(scaled.numpy(), BINARY[op](a.astype(np.float64), 1.5), dtype=np.float16)


@pytest.mark.parametrize("name", UNARY)
def test_float16_unary(f16_device, name) -> None:
    ref, low, high = UNARY[name]
    x = random_array(np.random.default_rng(10), (301,), np.float16, low, high)
    got = call_unary(name, Tensor.from_numpy(x, device=f16_device))
    assert got.dtype == np.float16
    assert_close(got.numpy(), ref(x.astype(np.float64)), dtype=np.float16)


def test_float16_where(f16_device) -> None:
    rng = np.random.default_rng(11)
    a = random_array(rng, (6, 7), np.float16)
    cond = rng.random(7) < 0.5
    got = elementwise.where(cond, Tensor.from_numpy(a, device=f16_device), -1.5)
    np.testing.assert_array_equal(got.numpy(), np.where(cond, a, np.float16(-1.5)))
    halves = np.array([np.nan, 0.0, -0.0, 2.0, 6e-8, 0.0, 1.0], np.float16)
    got = elementwise.where(Tensor.from_numpy(halves, device=f16_device), 1.0, a)
    np.testing.assert_array_equal(got.numpy(), np.where(halves, np.float16(1.0), a))
