"""gpustd.signal.convolve / correlate against numpy in float64, on every adapter."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import assert_close

import gpucore
from gpustd import Tensor, signal

MODES = ("full", "same", "valid")
METHODS = ("direct", "fft")
PAIRS = ((signal.convolve, np.convolve), (signal.correlate, np.correlate))


def _check(device: gpucore.Device, n: int, m: int, seed: int, method: str) -> None:
    rng = np.random.default_rng(seed)
    a = rng.uniform(-1, 1, n).astype(np.float32)
    v = rng.uniform(-1, 1, m).astype(np.float32)
    a64, v64 = a.astype(np.float64), v.astype(np.float64)
    for ours, theirs in PAIRS:
        for mode in MODES:
            got = ours(Tensor.from_numpy(a, device=device), v, mode, method=method, device=device)
            assert got.dtype == np.float32
            expected = theirs(a64, v64, mode)
            if mode == "full":  # its ends are single products: no output set cancels out
                assert_close(got.numpy(), expected)
            # Each output is a sum of products: its float32 error scales with the sum of their
            # magnitudes, not with the result, which cancels (a "valid" output of equal lengths
            # is one sum, and can be near zero: 2e-5 of itself at n = m = 272, seed 67037).
            scale = theirs(np.abs(a64), np.abs(v64), mode).max()
            assert np.abs(got.numpy() - expected).max() <= 1e-5 * scale


@settings(max_examples=12, deadline=None)
@given(n=st.integers(1, 300), m=st.integers(1, 300), seed=st.integers(0, 2**31))
def test_both_methods_match_numpy(device: gpucore.Device, n: int, m: int, seed: int) -> None:
    for method in METHODS:
        _check(device, n, m, seed, method)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("n, m", [(1, 1), (2, 1), (1, 5), (4099, 3), (3, 2053), (3000, 700),
                                  (1025, 257), (256, 256)])
def test_awkward_sizes(device: gpucore.Device, method: str, n: int, m: int) -> None:
    # 1024 outputs and 256 taps per workgroup chunk in the direct kernel: straddle both.
    _check(device, n, m, n * 7 + m, method)


def test_auto_picks_direct_for_short_kernels_and_fft_for_long_ones() -> None:
    assert signal._choose("auto", 10**6, 10**6, signal.DIRECT_TAPS) == "direct"
    assert signal._choose("auto", 1000, 1000, 500) == "direct"  # too small to pay for FFTs
    assert signal._choose("auto", 10**6, 10**6, 1000) == "fft"
    assert signal._choose("fft", 10, 10, 3) == "fft"
    assert signal._choose("direct", 10**6, 10**6, 10**5) == "direct"


def test_auto_matches_numpy(device: gpucore.Device) -> None:
    rng = np.random.default_rng(5)
    a, v = rng.uniform(-1, 1, 20000), rng.uniform(-1, 1, 4000)
    assert signal._choose("auto", len(a) + len(v) - 1, len(a), len(v)) == "fft"
    assert_close(signal.convolve(a, v, device=device).numpy(), np.convolve(a, v))
    assert_close(signal.correlate(v, a[:100], "same", device=device).numpy(),
                 np.correlate(v, a[:100], "same"))


def test_bad_arguments(device: gpucore.Device) -> None:
    a = Tensor.from_numpy(np.ones(8, np.float32), device=device)
    with pytest.raises(ValueError, match="mode"):
        signal.convolve(a, a, "circular")
    with pytest.raises(ValueError, match="method"):
        signal.correlate(a, a, method="winograd")
    with pytest.raises(ValueError, match="empty"):
        signal.convolve(a, np.ones(0), device=device)
    with pytest.raises(ValueError, match="1-D"):
        signal.correlate(np.ones((2, 3)), a, device=device)
    with pytest.raises(TypeError, match="real"):
        signal.convolve(np.ones(3) + 1j, a, device=device)
    with pytest.raises(TypeError, match="float32"):
        signal.convolve(a, Tensor.from_numpy(np.ones(3, np.int32), device=device))
