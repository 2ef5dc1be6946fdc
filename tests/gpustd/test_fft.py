"""gpustd.fft against numpy.fft in float64, on every adapter."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import sweep_subset_elsewhere
from hypothesis import given, settings
from hypothesis import strategies as st
from support import assert_close

import gpucore
from gpustd import Tensor
from gpustd import _fft_plan as plan
from gpustd import fft as gfft

PRIMES = [2, 3, 5, 7, 17, 97, 251, 1009]


def _close(actual: Tensor, expected: np.ndarray, tol: float = 1e-5) -> None:
    """Complex results compared as (real, imag) pairs, relative to the largest magnitude."""
    a = actual.numpy()
    if np.iscomplexobj(expected):
        assert a.dtype == np.complex64, f"dtype {a.dtype}, expected complex64"
        a, expected = np.stack([a.real, a.imag], -1), np.stack([expected.real, expected.imag], -1)
    else:
        assert a.dtype == np.float32, f"dtype {a.dtype}, expected float32"
    assert_close(a, expected, tol=tol)


def _complex(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    return rng.uniform(-1, 1, shape) + 1j * rng.uniform(-1, 1, shape)


# -- planning (no device) -----------------------------------------------------------------------
@pytest.mark.parametrize("bits", range(1, 31))
def test_pass_lengths_cover_n_and_respect_the_tile(bits: int) -> None:
    lengths = plan.pass_lengths(1 << bits, 4096)
    assert np.prod(lengths) == 1 << bits
    assert all(4096 // length >= plan.MIN_COLUMNS for length in lengths) or len(lengths) == 1
    assert len(lengths) == (1 if bits <= 12 else -(-bits // 10))


def test_tiles_hold_one_pass_of_4096_and_2048_otherwise(device: gpucore.Device) -> None:
    assert plan.tile_for(device, 4096) == 4096  # 32 KiB: every adapter we run on grants it
    assert plan.tile_for(device, 1024) == plan.tile_for(device, 1 << 20) == 2048


# -- complex transforms -------------------------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 300), batch=st.integers(1, 3), seed=st.integers(0, 2**31))
def test_fft_any_length(device: gpucore.Device, n: int, batch: int, seed: int) -> None:
    x = _complex(np.random.default_rng(seed), (batch, n))
    _close(gfft.fft(x, device=device), np.fft.fft(x))
    _close(gfft.ifft(x, device=device), np.fft.ifft(x))


@pytest.mark.parametrize("n", [1, *PRIMES, 10007])
def test_fft_primes_and_one(device: gpucore.Device, n: int) -> None:
    x = _complex(np.random.default_rng(n), (2, n))
    _close(gfft.fft(Tensor.from_numpy(x, device=device)), np.fft.fft(x))
    _close(gfft.ifft(x, device=device), np.fft.ifft(x))


@pytest.mark.parametrize("bits", range(1, 17))
def test_fft_powers_of_two(device: gpucore.Device, bits: int) -> None:
    n = 1 << bits
    x = _complex(np.random.default_rng(bits), (max(1, 4096 // n), n))
    _close(gfft.fft(x, device=device), np.fft.fft(x))
    _close(gfft.ifft(x, device=device), np.fft.ifft(x))


@pytest.mark.parametrize("n", [1 << 18, 1 << 21])  # two and three Stockham passes
def test_fft_multi_pass(device: gpucore.Device, n: int) -> None:
    x = _complex(np.random.default_rng(n), (n,))
    _close(gfft.fft(x, device=device), np.fft.fft(x))


@pytest.mark.parametrize("shape", [(3, 5, 4), (2, 8192, 3), (6, 1, 2), (4, 17, 33)])
def test_fft_every_axis(device: gpucore.Device, shape: tuple[int, ...]) -> None:
    x = _complex(np.random.default_rng(sum(shape)), shape)
    t = Tensor.from_numpy(x, device=device)
    for axis in range(-3, 3):
        _close(gfft.fft(t, axis=axis), np.fft.fft(x, axis=axis))
    _close(gfft.ifft(t, axis=0), np.fft.ifft(x, axis=0))


def test_gpu_kernel_on_the_first_adapter(device: gpucore.Device,
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """stockham.wgsl, which CPU adapters leave for stockham_cpu.wgsl (the tests above check
    what each adapter runs): every last stage of one pass (n = 2 .. 2048) and two strided
    passes, in one 2048-point tile: one compile of seconds on lavapipe."""
    sweep_subset_elsewhere(device, in_subset=False)
    monkeypatch.setattr(plan, "ROLLED", False)
    rng = np.random.default_rng(1)
    for bits in range(1, 12):
        x = _complex(rng, (3, 1 << bits))
        _close(gfft.fft(x, device=device), np.fft.fft(x))
    x = _complex(rng, (2, 8192, 3))
    _close(gfft.ifft(x, axis=1, device=device), np.fft.ifft(x, axis=1))


@pytest.mark.parametrize("norm", [None, "backward", "ortho", "forward"])
def test_fft_norms(device: gpucore.Device, norm: str | None) -> None:
    x = _complex(np.random.default_rng(0), (3, 24))
    _close(gfft.fft(x, norm=norm, device=device), np.fft.fft(x, norm=norm))
    _close(gfft.ifft(x, norm=norm, device=device), np.fft.ifft(x, norm=norm))


@pytest.mark.parametrize("n", [1, 7, 16, 40, 64])
def test_fft_crops_and_pads_with_n(device: gpucore.Device, n: int) -> None:
    rng = np.random.default_rng(n)
    x, r = _complex(rng, (3, 20)), rng.uniform(-1, 1, (20, 3)).astype(np.float32)
    _close(gfft.fft(x, n, device=device), np.fft.fft(x, n))
    _close(gfft.fft(r, n, axis=0, device=device), np.fft.fft(r.astype(np.float64), n, axis=0))


def test_fft_of_real_input_is_promoted(device: gpucore.Device) -> None:
    r = np.random.default_rng(1).uniform(-1, 1, (4, 33)).astype(np.float32)
    _close(gfft.fft(Tensor.from_numpy(r, device=device)), np.fft.fft(r.astype(np.float64)))
    _close(gfft.ifft(r, device=device), np.fft.ifft(r.astype(np.float64)))


def test_fft_out_is_reused_and_checked(device: gpucore.Device) -> None:
    x = _complex(np.random.default_rng(2), (2, 64))
    t = Tensor.from_numpy(x, device=device)
    out = Tensor.empty((2, 64), np.complex64, device=device)
    assert gfft.fft(t, out=out) is out
    _close(out, np.fft.fft(x))
    with pytest.raises(ValueError, match="shape"):
        gfft.fft(t, out=Tensor.empty((2, 65), np.complex64, device=device))
    with pytest.raises(ValueError, match="out of place"):
        gfft.fft(t, out=t)


# -- real transforms ----------------------------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(n=st.integers(1, 300), seed=st.integers(0, 2**31))
def test_rfft_irfft_round_trip(device: gpucore.Device, n: int, seed: int) -> None:
    r = np.random.default_rng(seed).uniform(-1, 1, (2, n)).astype(np.float32)
    spectrum = gfft.rfft(r, device=device)
    _close(spectrum, np.fft.rfft(r.astype(np.float64)))
    back = gfft.irfft(spectrum, n)
    _close(back, np.fft.irfft(np.fft.rfft(r.astype(np.float64)), n))
    assert_close(back.numpy(), r.astype(np.float64))


@pytest.mark.parametrize("n", [None, 1, 2, 9, 10, 31, 32, 4096, 4097, 1 << 14])
def test_irfft_with_n(device: gpucore.Device, n: int | None) -> None:
    # Imaginary parts at DC and Nyquist must be ignored, as numpy does.
    x = _complex(np.random.default_rng(n or 0), (3, 17))
    _close(gfft.irfft(x, n, device=device), np.fft.irfft(x, n))
    _close(gfft.rfft(x.real, n, device=device), np.fft.rfft(x.real, n))


@pytest.mark.parametrize("n", [6, 7])
def test_real_transforms_along_other_axes(device: gpucore.Device, n: int) -> None:
    rng = np.random.default_rng(n)
    r = rng.uniform(-1, 1, (3, n, 5)).astype(np.float32)
    x = _complex(rng, (3, n, 5))
    for norm in (None, "ortho", "forward"):
        _close(gfft.rfft(r, axis=1, norm=norm, device=device),
               np.fft.rfft(r.astype(np.float64), axis=1, norm=norm))
        _close(gfft.irfft(x, n, axis=0, norm=norm, device=device),
               np.fft.irfft(x, n, axis=0, norm=norm))
        _close(gfft.irfft(x, 2 * n - 1, norm=norm, device=device),
               np.fft.irfft(x, 2 * n - 1, norm=norm))


def test_irfft_accepts_a_real_spectrum(device: gpucore.Device) -> None:
    s = np.random.default_rng(3).uniform(-1, 1, (2, 9)).astype(np.float32)
    _close(gfft.irfft(s, device=device), np.fft.irfft(s.astype(np.float64)))


# -- 2-D and N-D --------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(8, 16), (5, 7), (1, 12), (3, 64, 48), (30, 1)])
def test_fft2_matches_numpy(device: gpucore.Device, shape: tuple[int, ...]) -> None:
    x = _complex(np.random.default_rng(len(shape)), shape)
    _close(gfft.fft2(x, device=device), np.fft.fft2(x))
    _close(gfft.ifft2(x, device=device), np.fft.ifft2(x))
    _close(gfft.fft2(x, (6, 9), device=device), np.fft.fft2(x, (6, 9)))


def test_fftn_axes_and_s(device: gpucore.Device) -> None:
    x = _complex(np.random.default_rng(4), (4, 6, 5))
    _close(gfft.fftn(x, device=device), np.fft.fftn(x))
    _close(gfft.ifftn(x, s=(8, 3), axes=(2, 0), device=device), np.fft.ifftn(x, (8, 3), (2, 0)))
    _close(gfft.fft2(x, axes=(0, 2), norm="ortho", device=device),
           np.fft.fft2(x, axes=(0, 2), norm="ortho"))


# -- errors -------------------------------------------------------------------------------------
def test_bad_arguments_raise_before_gpu_work(device: gpucore.Device) -> None:
    x = Tensor.from_numpy(np.ones((2, 8), np.complex64), device=device)
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="number of FFT data points"):
            gfft.fft(x, bad)
    with pytest.raises(ValueError, match="number of FFT data points"):
        gfft.fft(np.ones((3, 0)), device=device)
    with pytest.raises(ValueError, match="number of FFT data points"):
        gfft.irfft(np.ones(1, np.complex64), device=device)  # default n = 2 * (1 - 1)
    with pytest.raises(ValueError, match="axis"):
        gfft.fft(x, axis=2)
    with pytest.raises(ValueError, match="norm"):
        gfft.ifft(x, norm="unitary")
    with pytest.raises(ValueError, match="0-d"):
        gfft.fft(np.float32(1.0), device=device)
    with pytest.raises(ValueError, match="entries"):
        gfft.fft2(x, s=(4,))
    with pytest.raises(TypeError, match="real"):
        gfft.rfft(x)
    with pytest.raises(TypeError, match="float32 or complex64"):
        gfft.fft(Tensor.from_numpy(np.ones(4, np.int32), device=device))


def test_empty_batch_gives_an_empty_result(device: gpucore.Device) -> None:
    out = gfft.fft(np.ones((0, 8), np.complex64), device=device)
    assert out.shape == (0, 8) and out.dtype == np.complex64
