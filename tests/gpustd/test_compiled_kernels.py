"""gpustd.elementwise_kernel / reduction_kernel: Python compiled to WGSL, against numpy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import mutually_broadcastable_shapes
from support import assert_close, random_array

import gpucore
import gpustd
from gpustd import KernelCompileError, Tensor, elementwise_kernel, reduction_kernel

SCALE = 2.5  # a module-level constant kernels read
HALF = np.float32(0.5)  # a typed numpy constant stays float32


def on(device, *arrays):
    return [Tensor.from_numpy(a, device=device) for a in arrays]


def signed(rng, shape, low=0.5, high=2.0):
    """Random float32 values with |x| in [low, high] and random signs (never zero)."""
    x = random_array(rng, shape, np.float32, low, high)
    return x * np.where(rng.random(shape) < 0.5, -1, 1).astype(np.float32)


# -- arithmetic, broadcasting, scalars ----------------------------------------------------
@elementwise_kernel
def fused(a, b, k):
    """Several operators, a local, a global and math.pi in one expression."""
    d = a - b
    d *= k
    return d / (1 + a * a) + SCALE * b ** 2 - math.pi * -a


@settings(max_examples=8, deadline=None)
@given(shapes=mutually_broadcastable_shapes(num_shapes=2, max_dims=4, max_side=6),
       seed=st.integers(0, 2**16), k=st.floats(-3, 3))
def test_broadcasts_like_numpy(device, shapes, seed, k) -> None:
    rng = np.random.default_rng(seed)
    sa, sb = shapes.input_shapes
    a, b = signed(rng, sa), signed(rng, sb)
    got = fused(*on(device, a, b), k)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    expected = (a64 - b64) * k / (1 + a64 * a64) + SCALE * b64 ** 2 + math.pi * a64
    assert got.dtype == np.float32 and got.shape == np.broadcast_shapes(sa, sb)
    assert_close(got.numpy(), expected)


def test_compiled_once_per_signature(device) -> None:
    @elementwise_kernel
    def axpy(a, x, y):
        return a * x + y

    rng = np.random.default_rng(1)
    for n in (5, 300, 1031):  # new sizes and scalar values reuse the kernel
        x, y = random_array(rng, (n,)), random_array(rng, (n,))
        assert_close(axpy(float(n), *on(device, x, y)).numpy(), n * x.astype(np.float64) + y)
    assert axpy.compile_count == 1
    x, y = random_array(rng, (3, 4)), random_array(rng, (4,))
    axpy(2.0, *on(device, x, y))  # broadcast: a second pattern
    axpy(2.0, *on(device, random_array(rng, (7, 9)), random_array(rng, (9,))))
    assert axpy.compile_count == 2
    xi = random_array(rng, (4,), np.int32, -9, 9)
    assert axpy(3, *on(device, xi, xi)).dtype == np.int32  # a third: other dtypes
    assert axpy.compile_count == 3


def test_several_outputs_scalars_and_host_arrays(device) -> None:
    @elementwise_kernel
    def polar(x, y):
        return math.hypot(x, y), math.atan2(y, x)

    @elementwise_kernel
    def one(x):
        return (x + 1,)

    rng = np.random.default_rng(2)
    x, y = signed(rng, (6, 5)), rng.uniform(-2, 2, 5)  # y is float64 on the host
    r, theta = polar(Tensor.from_numpy(x, device=device), y)
    assert_close(r.numpy(), np.hypot(x, y.astype(np.float32)))
    assert_close(theta.numpy(), np.arctan2(y.astype(np.float32), x))
    (plus,) = one(Tensor.from_numpy(x, device=device))
    assert_close(plus.numpy(), x.astype(np.float64) + 1)
    scalar = fused(1.5, 0.25, 2)  # all scalars: a 0-d result on the default device
    assert scalar.shape == () and abs(float(scalar.numpy()) - _fused_ref(1.5, 0.25, 2)) < 1e-5
    empty = fused(Tensor.from_numpy(np.zeros((0, 3), np.float32), device=device), 1.0, 2.0)
    assert empty.shape == (0, 3)


def _fused_ref(a: float, b: float, k: float) -> float:
    return (a - b) * k / (1 + a * a) + SCALE * b ** 2 + math.pi * a


# -- math functions -------------------------------------------------------------------------
@elementwise_kernel
def math_a(x):
    return math.sqrt(abs(x)), math.exp(x), math.log(abs(x)), math.sin(x), math.cos(x), \
        math.tan(x), math.tanh(x)


@elementwise_kernel
def math_b(x, y):
    return math.fabs(x), math.floor(x), math.ceil(x), math.pow(abs(x), y), min(x, y, 0.5), \
        max(x, y), math.atan2(x, y)


@elementwise_kernel
def math_c(x):
    return math.log1p(abs(x)), math.expm1(x), math.log2(abs(x)), math.log10(abs(x)), \
        np.arcsinh(x), math.erf(x), np.sign(x)


@elementwise_kernel
def math_d(x):
    u = x / 2.5
    return math.asin(u), math.acos(u), math.atan(x), math.sinh(x), math.cosh(x), \
        math.atanh(u), round(x * 3)


@elementwise_kernel
def math_e(x, y):
    return math.exp2(x), math.trunc(x * 3), math.fmod(x * 3, y), math.copysign(x, y), \
        np.clip(x, -0.75, HALF), math.erfc(x), math.degrees(x)


def test_math_functions_match_numpy(device) -> None:
    rng = np.random.default_rng(3)
    x, y = signed(rng, (257,)), signed(rng, (257,))
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    cases = [
        (math_a(t := on(device, x)[0]), [np.sqrt(abs(x64)), np.exp(x64), np.log(abs(x64)),
                                           np.sin(x64), np.cos(x64), np.tan(x64),
                                           np.tanh(x64)]),
        (math_b(t, on(device, y)[0]), [abs(x64), np.floor(x64), np.ceil(x64),
                                       abs(x64) ** y64, np.minimum(np.minimum(x64, y64), 0.5),
                                       np.maximum(x64, y64), np.arctan2(x64, y64)]),
        (math_c(t), [np.log1p(abs(x64)), np.expm1(x64), np.log2(abs(x64)),
                     np.log10(abs(x64)), np.arcsinh(x64), scipy.special.erf(x64),
                     np.sign(x64)]),
        (math_d(t), [np.arcsin(x64 / 2.5), np.arccos(x64 / 2.5), np.arctan(x64),
                     np.sinh(x64), np.cosh(x64), np.arctanh(x64 / 2.5), np.round(x * 3)]),
        (math_e(t, on(device, y)[0]), [np.exp2(x64), np.trunc(x * 3), np.fmod(x * 3, y),
                                       np.copysign(x, y), np.clip(x, -0.75, 0.5),
                                       scipy.special.erfc(x64), np.degrees(x64)]),
    ]
    names = ["sqrt exp log sin cos tan tanh", "fabs floor ceil pow min max atan2",
             "log1p expm1 log2 log10 asinh erf sign", "asin acos atan sinh cosh atanh round",
             "exp2 trunc fmod copysign clip erfc degrees"]
    for (got, expected), group in zip(cases, names, strict=True):
        for g, e, name in zip(got, expected, group.split(), strict=True):
            assert g.dtype == np.float32, name
            try:
                assert_close(g.numpy(), e, tol=2e-5)
            except AssertionError as exc:  # say which function (Dawn's math differs)
                raise AssertionError(f"{name}: {exc}") from None


def test_small_arguments_keep_their_digits(device) -> None:
    x = np.array([1e-10, -3e-8, 2e-6, 1e-3], np.float32)
    got = math_c(Tensor.from_numpy(x, device=device))
    assert_close(got[0].numpy(), np.log1p(np.abs(x.astype(np.float64))))
    assert_close(got[1].numpy(), np.expm1(x.astype(np.float64)))


# -- integers, bools, conditions --------------------------------------------------------------
@elementwise_kernel
def integer_ops(a, b):
    return a // b, a % b, a ** (b % 4), (a & b) ^ ~(a | 3), a << 2 >> 1, -a + abs(b), a / b


@pytest.mark.parametrize("dtype", [np.int32, np.uint32])
def test_integer_operators_are_exact(device, dtype) -> None:
    rng = np.random.default_rng(4)
    a = random_array(rng, (9, 13), dtype, -1000, 1000)
    b = random_array(rng, (13,), dtype, -40, 40)
    b[b == 0] = 7
    got = integer_ops(*on(device, a, b))
    with np.errstate(over="ignore"):
        expected = [a // b, a % b, a ** (b % 4), (a & b) ^ ~(a | 3), a << 2 >> 1, -a + np.abs(b)]
    for k, (g, e) in enumerate(zip(got, expected)):
        assert g.dtype == dtype, k
        np.testing.assert_array_equal(g.numpy(), e, err_msg=f"output {k}")
    assert got[-1].dtype == np.float32  # true division of integers
    assert_close(got[-1].numpy(), a.astype(np.float64) / b)
    zero = integer_ops(*on(device, a[0], np.zeros(13, dtype)))
    np.testing.assert_array_equal(zero[0].numpy(), 0)  # numpy's x // 0 == x % 0 == 0
    np.testing.assert_array_equal(zero[1].numpy(), 0)


@elementwise_kernel
def conditions(x, n, flag):
    big = (x > 0.5 and not n < 0) or flag
    clipped = -1.0 if x < -1 else (x if x < 1 else 1.0)
    return big, clipped, gpustd.where(n % 2 == 0, n, -n), 0 < x <= 1, math.isnan(x / x)


def test_division_by_zero_is_ieee(device) -> None:
    """numpy's x / 0: inf with the operands' signs, NaN for 0 / 0 and NaN / 0 (WGSL leaves it
    indeterminate; Dawn on NVIDIA gave a number for 0 / 0), a constant divisor too."""
    @elementwise_kernel
    def divide(a, b):
        return a / b, a / 0.0

    x = np.array([1.5, -2.0, 0.0, np.nan, 3.0, -0.0, 7.0], np.float32)
    y = np.array([0.0, 0.0, 0.0, 0.0, -0.0, -0.0, 2.0], np.float32)
    got, by_zero = divide(*on(device, x, y))
    with np.errstate(divide="ignore", invalid="ignore"):
        np.testing.assert_array_equal(got.numpy(), x / y)
        signed = ~np.isnan(x / y)  # a NaN's sign means nothing
        np.testing.assert_array_equal(np.signbit(got.numpy()[signed]), np.signbit((x / y)[signed]))
        np.testing.assert_array_equal(by_zero.numpy(), x / np.float32(0.0))


def test_comparisons_and_conditionals(device) -> None:
    rng = np.random.default_rng(5)
    x = rng.uniform(-2, 2, (4, 7)).astype(np.float32)
    x[0, 0] = 0.0  # 0 / 0 is NaN
    n = random_array(rng, (7,), np.int32, -5, 5)
    for flag in (False, True):
        big, clipped, sel, chain, nan = conditions(*on(device, x, n), flag)
        assert big.dtype == np.uint32 and clipped.dtype == np.float32 and sel.dtype == np.int32
        np.testing.assert_array_equal(big.numpy(), ((x > 0.5) & ~(n < 0)) | flag)
        np.testing.assert_array_equal(clipped.numpy(), np.clip(x, -1, 1))
        np.testing.assert_array_equal(sel.numpy(), np.broadcast_to(np.where(n % 2 == 0, n, -n),
                                                                    x.shape))
        np.testing.assert_array_equal(chain.numpy(), (0 < x) & (x <= 1))
        with np.errstate(invalid="ignore"):
            np.testing.assert_array_equal(nan.numpy(), np.isnan(x / x))


# -- types ---------------------------------------------------------------------------------------
@elementwise_kernel
def add(a, b):
    return a + b


@pytest.mark.parametrize("ta,tb,expected", [
    ("int32", "uint32", "int32"), ("int32", "float32", "float32"), ("uint32", 2, "uint32"),
    ("int32", 2.5, "float32"), ("float32", 2, "float32"), (1, 2, "int32"), (1, 2.0, "float32"),
    ("int32", HALF, "float32"), ("int32", True, "int32"),
])
def test_result_dtypes_follow_numpy_promotion(device, ta, tb, expected) -> None:
    def arg(spec):
        if isinstance(spec, str):
            return Tensor.from_numpy(np.arange(1, 4, dtype=spec), device=device)
        return spec
    a, b = arg(ta), arg(tb)
    got = add(a, b)
    assert got.dtype == np.dtype(expected)
    ref = np.asarray(a.numpy() if isinstance(a, Tensor) else a, np.float64) + \
        np.asarray(b.numpy() if isinstance(b, Tensor) else b, np.float64)
    assert_close(got.numpy(), np.broadcast_to(ref, got.shape))


def test_float16(f16_device) -> None:
    rng = np.random.default_rng(6)
    x = random_array(rng, (5, 31), np.float16, 0.5, 2.0)
    t = Tensor.from_numpy(x, device=f16_device)
    got = fused(t, Tensor.from_numpy(x[0], device=f16_device), 1.5)
    assert got.dtype == np.float16
    x64 = x.astype(np.float64)
    expected = (x64 - x64[0]) * 1.5 / (1 + x64 * x64) + SCALE * x64[0] ** 2 + math.pi * x64
    assert_close(got.numpy(), expected, dtype=np.float16)
    outs = math_a(t)
    assert all(o.dtype == np.float16 for o in outs)
    assert_close(outs[1].numpy(), np.exp(x64), dtype=np.float16)
    mixed = add(t, Tensor.from_numpy(x.astype(np.float32), device=f16_device))
    assert mixed.dtype == np.float32


# -- composition -------------------------------------------------------------------------------
def softplus(v):
    return math.log1p(math.exp(-abs(v))) + max(v, 0.0)


@elementwise_kernel
def mish(x):
    return x * math.tanh(softplus(x))


def test_calls_are_inlined(device) -> None:
    rng = np.random.default_rng(7)
    x = signed(rng, (100,), 0.01, 5.0)
    x64 = x.astype(np.float64)
    expected = x64 * np.tanh(np.logaddexp(0, x64))
    assert_close(mish(Tensor.from_numpy(x, device=device)).numpy(), expected)

    @elementwise_kernel
    def twice(v):
        return mish(v) * 2

    assert_close(twice(Tensor.from_numpy(x, device=device)).numpy(), 2 * expected)


# -- errors name the Python line ---------------------------------------------------------------
def bad_loop(x):
    for _ in range(3):  # error: for loop
        x = x * 2
    return x


def bad_if(x):
    if x > 0:  # error: if statement
        return x
    return -x


def bad_index(x):
    return x[0]  # error: indexing


def bad_string(x):
    return x * len("abc")  # error: string constant


def bad_call(x):
    y = x + 1
    return print(y)  # error: call to `print`


def bad_name(x):
    return x + undefined_name  # error: name 'undefined_name'  # noqa: F821


def bad_attribute(x):
    return x.real  # error: attribute access


def bad_bitwise(x):
    return x & 1  # error: & on f32


def _line(marker: str) -> int:
    with open(__file__, encoding="utf-8") as f:
        return next(k for k, line in enumerate(f, 1) if marker in line)


@pytest.mark.parametrize("fn,construct", [(bad_loop, "for loop"), (bad_if, "if statement"),
                                          (bad_index, "indexing"),
                                          (bad_string, "string constant")])
def test_unsupported_constructs_fail_at_definition(fn, construct) -> None:
    with pytest.raises(KernelCompileError) as info:
        elementwise_kernel(fn)
    assert info.value.lineno == _line(f"# error: {construct}")
    assert info.value.filename == __file__ and construct in str(info.value)
    assert f"{__file__}:{info.value.lineno}" in str(info.value)


@pytest.mark.parametrize("fn,construct", [(bad_call, "call to `print`"),
                                          (bad_name, "name 'undefined_name'"),
                                          (bad_attribute, "attribute access"),
                                          (bad_bitwise, "& on f32")])
def test_untranslatable_code_fails_at_the_first_call(device, fn, construct) -> None:
    kernel = elementwise_kernel(fn)
    with pytest.raises(KernelCompileError) as info:
        kernel(Tensor.from_numpy(np.ones(3, np.float32), device=device))
    assert info.value.lineno == _line(f"# error: {construct}")
    assert construct in str(info.value)


def test_a_builtin_a_library_replaced_is_no_kernel_function(device, monkeypatch) -> None:
    """Ray's tqdm replaces `print` with a Python function of its own (in a process that
    imported it, another test's): still a call to `print`, not Ray's code to inline."""
    import builtins

    def safe_print(*args, **kwargs):  # the shape of Ray's replacement
        return None

    monkeypatch.setattr(builtins, "print", safe_print)
    with pytest.raises(KernelCompileError) as info:
        elementwise_kernel(bad_call)(Tensor.from_numpy(np.ones(3, np.float32), device=device))
    assert info.value.lineno == _line("# error: call to `print`")


def test_bad_calls_explain_themselves(device) -> None:
    t = Tensor.from_numpy(np.ones(3, np.float32), device=device)
    with pytest.raises(TypeError, match="missing"):
        add(t)
    with pytest.raises(ValueError, match="cannot be broadcast"):
        add(t, Tensor.from_numpy(np.ones(4, np.float32), device=device))
    with pytest.raises(TypeError, match="<U1"):
        add(t, np.array(["a"]))
    with pytest.raises(KernelCompileError, match="defaults"):
        elementwise_kernel(lambda x, y=1: x + y)
    too_big = elementwise_kernel(lambda v: v + 2 ** 31)  # folded in Python, as numpy would
    with pytest.raises(OverflowError, match="2147483648"):
        too_big(Tensor.from_numpy(np.ones(3, np.int32), device=device))
    with pytest.raises(TypeError, match="two values"):
        reduction_kernel(reduce=lambda a: a, identity=0)(lambda v: v)


# -- reductions -----------------------------------------------------------------------------------
@reduction_kernel(post=lambda s, n: math.sqrt(s / n))
def rms(x):
    return x * x


@reduction_kernel(reduce="max")
def max_abs_diff(x, y):
    return abs(x - y)


def log_add_exp(a, b):
    m = max(a, b)
    return m + math.log1p(math.exp(min(a, b) - m))


@reduction_kernel(reduce=log_add_exp, identity=-1e30)
def logsumexp(x):
    return x


@reduction_kernel
def count_positive(x):
    return x > 0


@reduction_kernel(reduce="prod")
def product(x):
    return x


@pytest.mark.parametrize("axis", [None, 0, 1, 2, (1, 2), -1])
def test_reductions_over_axes(device, axis) -> None:
    rng = np.random.default_rng(8)
    x = signed(rng, (3, 2500, 5))  # 2500 rows: the long axis takes two passes
    y = signed(rng, (5,))
    t, u = on(device, x, y)
    x64 = x.astype(np.float64)
    assert_close(rms(t, axis=axis).numpy(), np.sqrt(np.mean(x64 ** 2, axis=axis)))
    np.testing.assert_array_equal(max_abs_diff(t, u, axis=axis).numpy(),
                                  np.abs(x - y).max(axis=axis))
    assert_close(logsumexp(t, axis=axis, keepdims=True).numpy(),
                 scipy.special.logsumexp(x64, axis=axis, keepdims=True))
    counted = count_positive(t, axis=axis)
    assert counted.dtype == np.int32
    np.testing.assert_array_equal(counted.numpy(), (x > 0).sum(axis=axis))


def test_reduction_dtypes_and_edges(device) -> None:
    rng = np.random.default_rng(9)
    ints = random_array(rng, (7, 6), np.int32, -3, 3)
    got = product(Tensor.from_numpy(ints, device=device), axis=0)
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got.numpy(), np.prod(ints, axis=0))
    assert product.compile_count == 1
    product(Tensor.from_numpy(ints[:3], device=device), axis=0)  # new sizes, same kernels
    assert product.compile_count == 1
    none = rms(Tensor.from_numpy(np.zeros((4, 0), np.float32), device=device), axis=0)
    assert none.shape == (0,)
    with pytest.raises(ValueError, match="adjacent"):
        rms(Tensor.from_numpy(np.ones((2, 3, 4), np.float32), device=device), axis=(0, 2))
    with pytest.raises(ValueError, match="identity"):
        reduction_kernel(reduce=log_add_exp)(lambda x: x)


def test_reduction_float16(f16_device) -> None:
    rng = np.random.default_rng(10)
    x = random_array(rng, (40, 33), np.float16, 0.5, 2.0)
    got = rms(Tensor.from_numpy(x, device=f16_device), axis=1)
    assert got.dtype == np.float16
    assert_close(got.numpy(), np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=1)),
                 dtype=np.float16)


def test_casts_constants_and_lambdas(device) -> None:
    offset = 0.125  # a closure variable is a constant too

    @elementwise_kernel
    def casts(x):
        return int(x * 10), float(int(x)), bool(x), np.uint32(abs(x) * 4), x * HALF + offset

    rng = np.random.default_rng(11)
    x = signed(rng, (33,))
    got = casts(Tensor.from_numpy(x, device=device))
    assert [g.dtype for g in got] == [np.int32, np.float32, np.uint32, np.uint32, np.float32]
    np.testing.assert_array_equal(got[0].numpy(), (x * 10).astype(np.int32))
    np.testing.assert_array_equal(got[1].numpy(), np.trunc(x))
    np.testing.assert_array_equal(got[2].numpy(), x != 0)
    np.testing.assert_array_equal(got[3].numpy(), (np.abs(x) * 4).astype(np.uint32))
    assert_close(got[4].numpy(), x.astype(np.float64) * 0.5 + offset)
    halve = elementwise_kernel(lambda v: v / 2)
    assert_close(halve(Tensor.from_numpy(x, device=device)).numpy(), x.astype(np.float64) / 2)


def test_float16_needs_the_feature(device) -> None:
    half = elementwise_kernel(lambda v: v * np.float16(0.5))
    x = Tensor.from_numpy(np.arange(4, dtype=np.float32), device=device)
    if device.has_f16:
        assert half(x).dtype == np.float32  # f16 with f32 is f32
        assert_close(half(x).numpy(), np.arange(4) * 0.5)
    else:
        with pytest.raises(gpucore.FeatureError, match="shader-f16"):
            half(x)
