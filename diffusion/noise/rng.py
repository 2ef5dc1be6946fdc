"""torch's CPU random generator in numpy: a seed gives the noise `torch.randn` gives.

diffusers pipelines called with `generator=torch.Generator("cpu").manual_seed(seed)`, and the
WebUI with its "Random number generator source: CPU" setting (infotext `RNG: CPU`), draw their
initial noise with torch's CPU generator. `TorchCPUGenerator` reproduces those draws bit for
bit without torch, so a seed means the same starting latents here as there.

What torch does (ATen sources of torch 2.x, checked against torch 2.13):

- Engine: MT19937 (`ATen/core/MT19937RNGEngine.h`), seeded with the seed's low 32 bits by
  the reference `init_genrand` recurrence — not numpy's `MT19937(seed)` seeding, which hashes
  the seed. We compute that state and hand it to numpy's MT19937 bit generator, whose twist
  and tempering are the reference algorithm, so the 32-bit stream is the same.
- float32 uniforms: 24 bits of one 32-bit draw, `(u & 0xffffff) * 2**-24`.
- `randn` of at least 16 elements (`normal_fill`, `DistributionTemplates.h`): all uniforms
  first, then Box-Muller in blocks of 16 on pairs (i, i + 8); if the size is not a multiple of
  16, 16 fresh uniforms redo the last 16 elements. The block transform of x86-64 builds with
  AVX2 (AVX-512 machines get the same kernel) uses `avx_mathfun.h`'s Cephes-style float32
  log/sincos. Release wheels are built by GCC, which fuses a multiply into the add that uses
  it (-ffp-contract=fast), so some steps are one FMA rounding, not two; `_fma` does those.
- `randn` of fewer than 16 elements: `normal_distribution<double>` per element — two 53-bit
  uniforms from two 32-bit draws each, Box-Muller in double through libm (Python's `math` calls
  the same libm), the sine half cached in the generator for the next such element.

Scope: matches torch's x86-64 Linux wheels (the AVX2/AVX-512 CPU kernels). torch on CPUs
without AVX2, on ARM (Apple silicon) or built by MSVC rounds some values 1-2 ulp differently.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["RNG_SOURCES", "TorchCPUGenerator", "make_generator"]

RNG_SOURCES = ("numpy", "torch")  # generate(rng=...): numpy's PCG64, or torch's CPU generator

_DEFAULT_SEED = 67280421310721  # torch's default_rng_seed_val
_f32 = np.float32

# avx_mathfun.h constants (Cephes), written as the C source writes them
_LOG_P = [_f32(v) for v in (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1,
                            -1.2420140846e-1, 1.4249322787e-1, -1.6668057665e-1,
                            2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1)]
_LOG_Q1, _LOG_Q2 = _f32(-2.12194440e-4), _f32(0.693359375)
_SQRT_HALF = _f32(0.707106781186547524)
_MINUS_DP = [_f32(-0.78515625), _f32(-2.4187564849853515625e-4),
             _f32(-3.77489497744594108e-8)]  # -pi/4 split in three for exact reduction
_SIN_P = [_f32(-1.9515295891e-4), _f32(8.3321608736e-3), _f32(-1.6666654611e-1)]
_COS_P = [_f32(2.443315711809948e-5), _f32(-1.388731625493765e-3), _f32(4.166664568298827e-2)]
_FOUR_OVER_PI = _f32(1.27323954473516)
_TWO_PI = _f32(2.0 * math.pi)


def _fma(a: Any, b: Any, c: Any) -> np.ndarray:
    """float32 a * b + c rounded once, as the FMA instruction does.

    The float32 product is exact in float64; the float64 sum is rounded to odd (sticky last
    bit) so that rounding it on to float32 cannot round twice the wrong way.
    """
    p = np.asarray(a, np.float64) * np.asarray(b, np.float64)
    c = np.asarray(c, np.float64)
    s = p + c
    t = s - p
    err = (p - (s - t)) + (c - t)  # Knuth's TwoSum: s + err == p + c exactly
    inexact_even = (err != 0) & ((s.view(np.int64) & 1) == 0)
    s = np.where(inexact_even, np.nextafter(s, np.copysign(np.inf, err)), s)
    return s.astype(np.float32)


def _log(x: np.ndarray) -> np.ndarray:
    """avx_mathfun's log256_ps for x in (0, 1]: float32 in, float32 out."""
    bits = x.view(np.uint32)
    e = ((bits >> 23).astype(np.int32) - 127).astype(np.float32) + _f32(1)
    m = ((bits & np.uint32(0x807FFFFF)) | np.uint32(0x3F000000)).view(np.float32)  # [0.5, 1)
    small = m < _SQRT_HALF
    x = (m - _f32(1)) + np.where(small, m, _f32(0))
    e = e - np.where(small, _f32(1), _f32(0))
    z = x * x
    y = _fma(_LOG_P[0], x, _LOG_P[1])
    for p in _LOG_P[2:]:
        y = _fma(y, x, p)
    y = _fma(y * x, z, e * _LOG_Q1)  # GCC fuses y * z here, leaving e * q1 rounded
    y = y - z * _f32(0.5)  # z / 2 is exact, so fusing this or not rounds once either way
    return _fma(e, _LOG_Q2, x + y)


def _sincos(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """avx_mathfun's sincos256_ps for x >= 0: (sin, cos), float32."""
    j = (x * _FOUR_OVER_PI).astype(np.int32)  # cvttps: truncation
    j = (j + 1) & ~1
    y = j.astype(np.float32)
    for dp in _MINUS_DP:
        x = _fma(y, dp, x)
    z = x * x
    cos_poly = _fma(_COS_P[0], z, _COS_P[1])
    cos_poly = _fma(cos_poly, z, _COS_P[2]) * z
    cos_poly = _fma(cos_poly, z, -(z * _f32(0.5))) + _f32(1)
    sin_poly = _fma(_SIN_P[0], z, _SIN_P[1])
    sin_poly = _fma(sin_poly, z, _SIN_P[2]) * z
    sin_poly = _fma(sin_poly, x, x)
    first_octant_pair = (j & 2) == 0
    sin = np.where(first_octant_pair, sin_poly, cos_poly)
    cos = np.where(first_octant_pair, cos_poly, sin_poly)
    return (np.where((j & 4) != 0, -sin, sin),
            np.where(((j - 2) & 4) == 0, -cos, cos))


def _box_muller_16(uniforms: np.ndarray) -> np.ndarray:
    """torch's NormalFill16 (AVX2) on (blocks, 16) float32 uniforms: u1 = 1 - u[:, :8],
    u2 = u[:, 8:], out[:, :8] = r cos(2 pi u2), out[:, 8:] = r sin(2 pi u2)."""
    radius = np.sqrt(_f32(-2) * _log(_f32(1) - uniforms[:, :8]))
    sin, cos = _sincos(_TWO_PI * uniforms[:, 8:])
    return np.concatenate([radius * cos, radius * sin], axis=1)


def _shape(size: int | Sequence[int] | None) -> tuple[int, ...]:
    if size is None:
        return ()
    if isinstance(size, (int, np.integer)):
        size = (size,)
    shape = tuple(operator.index(n) for n in size)
    if any(n < 0 for n in shape):
        raise ValueError(f"shape {shape} has a negative dimension")
    return shape


def _mt19937_key(seed: int) -> np.ndarray:
    """The 624-word MT19937 state of init_genrand(seed & 0xffffffff) (Matsumoto & Nishimura
    2002), as torch seeds its engine. Each word depends on the one before: a loop."""
    key = [seed & 0xFFFFFFFF]
    for i in range(1, 624):
        prev = key[-1]
        key.append((1812433253 * (prev ^ (prev >> 30)) + i) & 0xFFFFFFFF)
    return np.array(key, np.uint32)


class TorchCPUGenerator:
    """`torch.Generator("cpu")` in numpy: the same seed gives the same `randn` / `rand` values,
    and successive calls advance the state as torch's do.

    Also usable where the pipeline and schedulers take a numpy Generator: `standard_normal`
    draws like `torch.randn` and returns float64 (holding float32 values).
    """

    def __init__(self, seed: int = _DEFAULT_SEED) -> None:
        self._bits = np.random.MT19937()
        self.manual_seed(seed)

    def manual_seed(self, seed: int) -> TorchCPUGenerator:
        """Reseed (as `torch.Generator.manual_seed`): any int in [-2**63, 2**64); negative
        seeds wrap to unsigned 64 bits. Only the low 32 bits reach MT19937, as in torch."""
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
            raise TypeError(f"seed must be an int, got {type(seed).__name__}")
        seed = int(seed)
        if not -(2**63) <= seed < 2**64:
            raise ValueError(f"seed {seed} is out of torch's range [-2**63, 2**64)")
        self._seed = seed % 2**64
        self._bits.state = {"bit_generator": "MT19937",
                            "state": {"key": _mt19937_key(self._seed), "pos": 624}}
        self._cached_normal: float | None = None  # torch's next_double_normal_sample
        return self

    def initial_seed(self) -> int:
        """The seed last set, as an unsigned 64-bit int (`torch.Generator.initial_seed`)."""
        return self._seed

    def _uniform24(self, n: int) -> np.ndarray:
        return (self._bits.random_raw(n) & 0xFFFFFF).astype(np.float32) * _f32(2.0**-24)

    def _uniform53(self) -> float:
        hi, lo = (int(v) for v in self._bits.random_raw(2))  # random64: first draw is high
        return (((hi << 32) | lo) & (2**53 - 1)) * 2.0**-53

    def rand(self, size: int | Sequence[int] | None = None) -> np.ndarray:
        """Uniform float32 in [0, 1) of shape `size`: `torch.rand(size, generator=g)`."""
        shape = _shape(size)
        return self._uniform24(math.prod(shape)).reshape(shape)

    def randn(self, size: int | Sequence[int] | None = None) -> np.ndarray:
        """Standard normal float32 of shape `size`: `torch.randn(size, generator=g)`."""
        shape = _shape(size)
        n = math.prod(shape)
        if n < 16:
            return np.array([self._scalar_normal() for _ in range(n)], np.float32).reshape(shape)
        out = self._uniform24(n)
        whole = n // 16 * 16
        out[:whole] = _box_muller_16(out[:whole].reshape(-1, 16)).reshape(-1)
        if n % 16:  # torch redoes the last 16 from fresh uniforms
            out[n - 16:] = _box_muller_16(self._uniform24(16).reshape(1, 16)).reshape(-1)
        return out.reshape(shape)

    def _scalar_normal(self) -> float:
        """One `at::normal_distribution<double>` sample (torch's path below 16 elements)."""
        if self._cached_normal is not None:
            value, self._cached_normal = self._cached_normal, None
            return value
        u1 = self._uniform53()
        u2 = self._uniform53()
        radius = math.sqrt(-2.0 * math.log1p(-u2))
        theta = 2.0 * math.pi * u1
        self._cached_normal = radius * math.sin(theta)
        return radius * math.cos(theta)

    def standard_normal(self, size: int | Sequence[int] | None = None) -> np.ndarray:
        """`randn(size)` as float64, for code written against `np.random.Generator`."""
        return self.randn(size).astype(np.float64)

    def __repr__(self) -> str:
        return f"TorchCPUGenerator(seed={self._seed})"


def make_generator(source: str, seed: int) -> np.random.Generator | TorchCPUGenerator:
    """The random source for `seed`: "numpy" gives `np.random.default_rng(seed)`, "torch"
    gives `TorchCPUGenerator(seed)` (torch.Generator("cpu").manual_seed(seed)'s draws).
    Both have `standard_normal(shape)`, which is all the pipeline and schedulers call."""
    if source == "numpy":
        return np.random.default_rng(seed)
    if source == "torch":
        return TorchCPUGenerator(seed)
    raise ValueError(f"unknown random source {source!r}; use one of {list(RNG_SOURCES)}")
