"""Step caching for the diffusion transformers (FLUX, SD3, Chroma, Z-Image): a denoising step
that would change little reuses what the transformer's blocks added at an earlier step instead
of running them.

Three methods; the first two exactly as diffusers' hooks run them (`diffusers.hooks`), the
third as its authors' FLUX code does (diffusers has no TeaCache hook):

- **First Block Cache** ("fbc"; `FirstBlockCacheConfig(threshold)`, ParaAttention's dynamic
  cache): the first block always runs. When the mean absolute change of its residual (output
  minus input) since the last fully computed step, relative to that residual's mean absolute
  value, is at most `threshold`, the other blocks are skipped and their residual of that step
  is added instead. Works for any transformer; ComfyUI's users run FLUX at 0.08-0.12.
- **MagCache** ("magcache"; `MagCacheConfig(threshold, max_skip_steps=3, retention_ratio=0.2,
  mag_ratios=FLUX_MAG_RATIOS)`): the decision comes from the schedule alone. The per-step ratios
  of the residual's magnitude measured on FLUX (MagCache's published table, `FLUX_MAG_RATIOS`)
  are multiplied while steps are skipped; the accumulated |1 - ratio| past `threshold`, more than
  `max_skip_steps` skipped in a row, or the first `retention_ratio` of the steps compute. A
  skipped step adds the last computed residual (final image tokens minus the first block's
  input) to the input. FLUX only: its ratios are FLUX's.
- **TeaCache** ("teacache"; https://github.com/ali-vilab/TeaCache, `teacache_flux.py`): the
  relative L1 change of the first block's modulated input since the previous call, rescaled by
  a polynomial fitted on FLUX (`TEACACHE_FLUX_COEFFICIENTS`), is accumulated; while the sum
  stays under `threshold` the blocks are skipped and the last computed residual (final image
  tokens minus the blocks' input) added; the first and last steps always compute. Its users
  run FLUX at 0.25 (about 1.5x), 0.4 (1.8x), 0.6 (2x) or 0.8 (2.25x). FLUX, and Wan 2.1 as
  `TeaCache4Wan2.1` runs it: the time embedding measured instead, its Wan polynomials
  (`TEACACHE_WAN_COEFFICIENTS`); its users run Wan at 0.05-0.3. Its retention mode
  ("teacache-ret", `--use_ret_steps`) measures the embedding's projection (the blocks'
  modulation) with its own polynomials (`TEACACHE_WAN_RET_COEFFICIENTS`), computes the first
  `TEACACHE_RETENTION_STEPS` steps and lets the last be skipped.

A `StepCache` is one generation's setting; every model input that is predicted separately (a
guidance branch, diffusers' `cache_context("cond")` / `("uncond")`) takes its own `branch()`,
which the transformer's `forward(..., cache=branch)` runs its blocks through (`run_blocks`).
The blocks' stream is the image tokens, or a tuple of streams (LTX-2's video and audio tokens):
the first decides, as diffusers' hook decides on `hidden_states`, and each is cached.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

import gpustd
from gpustd import Tensor

__all__ = ["CACHE_KINDS", "FLUX_MAG_RATIOS", "TEACACHE_FLUX_COEFFICIENTS",
           "TEACACHE_RETENTION_STEPS", "TEACACHE_WAN_COEFFICIENTS",
           "TEACACHE_WAN_RET_COEFFICIENTS", "CacheSpec",
           "FirstBlockCache", "MagCache", "StepCache", "TeaCache", "run_blocks"]

# The blocks' stream: a Tensor (the image tokens), or a tuple of them whose first decides
Streams = Any
# Head: the first block, (image, text) -> (image, text); tail: every other block and what
# follows them up to the final norm, (image, text) -> image tokens. The text stream may end
# inside the blocks (SD3's last block returns None for it).
Head = Callable[[Streams, Any], tuple[Streams, Any]]
Tail = Callable[[Streams, Any], Streams]
# Probe: the first block's modulated image input (TeaCache's measure), from the blocks' input
Probe = Callable[[Tensor], Tensor]

# MagCache's magnitude ratios of FLUX.1 (28 steps; diffusers' `FLUX_MAG_RATIOS`, from
# https://github.com/Zehong-Ma/MagCache), stretched to other step counts by nearest index
FLUX_MAG_RATIOS = (
    1.0, 1.21094, 1.11719, 1.07812, 1.0625, 1.03906, 1.03125, 1.03906, 1.02344, 1.03125,
    1.02344, 0.98047, 1.01562, 1.00781, 1.0, 1.00781, 1.0, 1.00781, 1.0, 1.0, 0.99609, 0.99609,
    0.98047, 0.98828, 0.96484, 0.95703, 0.93359, 0.89062)

# TeaCache's rescaling polynomial for FLUX (highest power first, numpy.poly1d's order)
TEACACHE_FLUX_COEFFICIENTS = (4.98651651e02, -2.83781631e02, 5.58554382e01, -3.82021401e00,
                              2.64230861e-01)

# TeaCache's polynomials for Wan 2.1 (TeaCache4Wan2.1, without retention steps): the
# text-to-video 1.3B and 14B, the image-to-video 14B 480P and 720P
TEACACHE_WAN_COEFFICIENTS: dict[str, tuple[float, ...]] = {
    "t2v-1.3B": (2.39676752e03, -1.31110545e03, 2.01331979e02, -8.29855975e00, 1.37887774e-01),
    "t2v-14B": (-5784.54975374, 5449.50911966, -1811.16591783, 256.27178429, -13.02252404),
    "i2v-480P": (-3.02331670e02, 2.23948934e02, -5.25463970e01, 5.87348440e00,
                 -2.01973289e-01),
    "i2v-720P": (-114.36346466, 65.26524496, -18.82220707, 4.91518089, -0.23412683),
}
# ... and with retention steps (`--use_ret_steps`: the projection measured, the first five
# steps computed, the last not forced), the same four models
TEACACHE_WAN_RET_COEFFICIENTS: dict[str, tuple[float, ...]] = {
    "t2v-1.3B": (-5.21862437e04, 9.23041404e03, -5.28275948e02, 1.36987616e01, -4.99875664e-02),
    "t2v-14B": (-3.03318725e05, 4.90537029e04, -2.65530556e03, 5.87365115e01, -3.15583525e-01),
    "i2v-480P": (2.57151496e05, -3.54229917e04, 1.40286849e03, -1.35890334e01, 1.32517977e-01),
    "i2v-720P": (8.10705460e03, 2.13393892e03, -3.72934672e02, 1.66203073e01, -4.17769401e-02),
}
TEACACHE_RETENTION_STEPS = 5

# kind -> (default threshold, what it is); the defaults are values FLUX users run: First
# Block Cache at 0.08-0.12 in ComfyUI, MagCache at diffusers' 0.06, TeaCache at 0.25-0.8
CACHE_KINDS: dict[str, tuple[float, str]] = {
    "fbc": (0.12, "First Block Cache"),
    "magcache": (0.06, "MagCache"),
    "teacache": (0.4, "TeaCache"),
}


class BranchCache(Protocol):
    """One guidance branch's cache state: runs the blocks, counts the calls it computed."""

    calls: int
    computed: int

    def run(self, x: Streams, context: Any, head: Head, tail: Tail,
            probe: Probe | None = None) -> Streams: ...


def run_blocks(cache: BranchCache | None, x: Streams, context: Any, head: Head, tail: Tail,
               probe: Probe | None = None) -> Streams:
    """The blocks of a transformer, through `cache` where one is given (`probe`: for the
    caches that measure the first block's modulated input, TeaCache)."""
    if cache is None:
        return tail(*head(x, context))
    return cache.run(x, context, head, tail, probe)


def _plus(a: Streams, b: Streams) -> Streams:
    return tuple(x + y for x, y in zip(a, b, strict=True)) if isinstance(a, tuple) else a + b


def _minus(a: Streams, b: Streams) -> Streams:
    return tuple(x - y for x, y in zip(a, b, strict=True)) if isinstance(a, tuple) else a - b


def _lead(x: Streams) -> Tensor:
    """The stream that decides: the first of a tuple."""
    return x[0] if isinstance(x, tuple) else x


def _mean_abs(x: Tensor) -> np.float64:
    return np.float64(gpustd.mean(gpustd.abs(x)).numpy())


def _relative(change: Tensor, reference: Tensor) -> float:
    """mean|change| / mean|reference|; inf or nan (torch's answers) for a zero reference."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(_mean_abs(change) / _mean_abs(reference))


class FirstBlockCache:
    """First Block Cache's state for one branch. diffusers: `apply_first_block_cache(
    transformer, FirstBlockCacheConfig(threshold))` with the calls in one `cache_context`."""

    def __init__(self, threshold: float) -> None:
        self.threshold = float(threshold)
        self.calls = self.computed = 0
        self._head_residual: Tensor | None = None  # of the last fully computed call
        self._tail_residual: Streams | None = None

    def run(self, x: Streams, context: Any, head: Head, tail: Tail,
            probe: Probe | None = None) -> Streams:
        self.calls += 1
        # 1. the first block, and how far its (first stream's) residual moved since the last
        # computed call
        first, text = head(x, context)
        residual = _lead(first) - _lead(x)
        # 2. close enough: the other blocks' residual of that call instead of the blocks
        if self._head_residual is not None and self._tail_residual is not None:
            previous = self._head_residual
            if not _relative(residual - previous, previous) > self.threshold:
                return _plus(first, self._tail_residual)
        # 3. else every block, and the residuals kept for the calls that follow
        out = tail(first, text)
        self._head_residual, self._tail_residual = residual, _minus(out, first)
        self.computed += 1
        return out


class MagCache:
    """MagCache's state for one branch of `steps` calls. diffusers: `apply_mag_cache(
    transformer, MagCacheConfig(threshold, max_skip_steps, retention_ratio, steps,
    mag_ratios))`; float32 accumulators, as its ratio tensor makes them."""

    def __init__(self, threshold: float, steps: int, *,
                 mag_ratios: tuple[float, ...] = FLUX_MAG_RATIOS, max_skip_steps: int = 3,
                 retention_ratio: float = 0.2) -> None:
        self.threshold, self.steps = np.float32(threshold), int(steps)
        self.max_skip_steps = int(max_skip_steps)
        self.retention = int(retention_ratio * self.steps + 0.5)
        self.ratios = _nearest(np.asarray(mag_ratios, np.float32), self.steps)
        self.calls = self.computed = 0
        self._start()

    def _start(self) -> None:
        self._step, self._residual = 0, None
        self._ratio, self._error, self._skipped = np.float32(1.0), np.float32(0.0), 0

    def _skip(self) -> bool:
        step = self._step
        if step < self.retention:
            return False
        self._ratio = np.float32(self._ratio * (self.ratios[step] if step < len(self.ratios)
                                                else np.float32(1.0)))
        self._skipped += 1
        self._error = np.float32(self._error + np.float32(np.abs(np.float32(1.0) - self._ratio)))
        if (self._residual is not None and self._error <= self.threshold
                and self._skipped <= self.max_skip_steps):
            return True
        self._ratio, self._error, self._skipped = np.float32(1.0), np.float32(0.0), 0
        return False

    def run(self, x: Tensor, context: Any, head: Head, tail: Tail,
            probe: Probe | None = None) -> Tensor:
        self.calls += 1
        # 1. skipped: the input plus the last computed residual
        if self._skip():
            assert self._residual is not None
            out = x + self._residual
        # 2. computed: the residual of every block kept
        else:
            out = tail(*head(x, context))
            self._residual = out - x
            self.computed += 1
        # 3. the next step; after the last, a fresh start (a second picture)
        self._step += 1
        if self._step >= self.steps:
            self._start()
        return out


class TeaCache:
    """TeaCache's state for one branch of `steps` calls, as `teacache_flux.py` keeps it on
    the model (`cnt`, `accumulated_rel_l1_distance`, `previous_modulated_input`,
    `previous_residual`). `retention`: TeaCache4Wan2.1's `--use_ret_steps` (the first
    TEACACHE_RETENTION_STEPS steps computed, the last not forced); `measure`: applied to
    the probe's tensor before it is compared (that mode's projection of the embedding)."""

    def __init__(self, threshold: float, steps: int, *,
                 coefficients: tuple[float, ...] = TEACACHE_FLUX_COEFFICIENTS,
                 retention: bool = False, measure: Probe | None = None) -> None:
        self.threshold, self.steps = float(threshold), int(steps)
        self.rescale = np.poly1d(coefficients)
        self.forced = (set(range(TEACACHE_RETENTION_STEPS)) if retention
                       else {0, self.steps - 1})
        self.measure = measure
        self.calls = self.computed = 0
        self._step, self._distance = 0, 0.0
        self._previous: Tensor | None = None  # the modulated input of the previous call
        self._residual: Tensor | None = None

    def run(self, x: Tensor, context: Any, head: Head, tail: Tail,
            probe: Probe | None = None) -> Tensor:
        if probe is None:
            raise ValueError("TeaCache measures the first block's modulated input, which "
                             "this transformer does not give; use fbc")
        self.calls += 1
        # 1. the rescaled relative L1 change of the modulated input, accumulated; the first
        # and last steps compute
        modulated = probe(x) if self.measure is None else self.measure(probe(x))
        if self._step in self.forced or self._previous is None or self._residual is None:
            compute, self._distance = True, 0.0
        else:
            previous = self._previous
            self._distance += float(self.rescale(_relative(modulated - previous, previous)))
            compute = not self._distance < self.threshold
            if compute:
                self._distance = 0.0
        self._previous = modulated
        self._step = (self._step + 1) % self.steps
        # 2. skipped: the input plus the last computed residual; else every block
        if not compute:
            assert self._residual is not None
            return x + self._residual
        out = tail(*head(x, context))
        self._residual = out - x
        self.computed += 1
        return out


def _nearest(ratios: np.ndarray, length: int) -> np.ndarray:
    """`ratios` stretched to `length` by nearest index. diffusers: `mag_cache.nearest_interp`."""
    if length == 1:
        return ratios[-1:]
    scale = np.float32((len(ratios) - 1) / (length - 1))
    return ratios[np.round(np.arange(length, dtype=np.float32) * scale).astype(np.int64)]


@dataclass(frozen=True)
class CacheSpec:
    """A step cache setting: `kind` (a CACHE_KINDS key) and its `threshold`."""

    kind: str
    threshold: float

    @classmethod
    def parse(cls, text: str) -> CacheSpec:
        """"fbc:0.12", "magcache:0.06", or the kind alone for its default threshold; also
        the infotext's "fbc 0.12, 14/28 steps computed". ValueError in one line for anything
        else."""
        kind, _, value = str(text).split(",")[0].strip().lower().replace(" ", ":").partition(":")
        kinds = ", ".join(f"{name}[:THRESHOLD] ({what}, default {default:g})"
                          for name, (default, what) in CACHE_KINDS.items())
        if kind not in CACHE_KINDS:
            raise ValueError(f"cache {text!r} is not one of {kinds}; e.g. fbc:0.12")
        try:
            threshold = float(value) if value else CACHE_KINDS[kind][0]
        except ValueError:
            raise ValueError(f"cache threshold {value!r} is not a number; e.g. "
                             f"{kind}:{CACHE_KINDS[kind][0]:g}") from None
        if not 0 <= threshold < 10:
            raise ValueError(f"cache threshold must be in [0, 10), got {value}; e.g. "
                             f"{kind}:{CACHE_KINDS[kind][0]:g}")
        return cls(kind, threshold)

    @classmethod
    def of(cls, text: str | None) -> CacheSpec | None:
        """`parse`, with None, "", "none" and "off" meaning no step caching."""
        if text is None or str(text).strip().lower() in ("", "none", "off"):
            return None
        return cls.parse(text)

    @property
    def label(self) -> str:
        return f"{self.kind} {self.threshold:g}"


class StepCache:
    """One generation's step cache: a `branch()` per separately predicted input, and the
    count of calls computed for the infotext (`summary`)."""

    def __init__(self, spec: CacheSpec, steps: int) -> None:
        self.spec, self.steps = spec, int(steps)
        self.branches: list[BranchCache] = []

    def branch(self, steps: int | None = None, *,
               coefficients: tuple[float, ...] = TEACACHE_FLUX_COEFFICIENTS,
               measure: Probe | None = None) -> BranchCache:
        """A fresh state for one input's calls (MagCache, TeaCache: `steps` of them, else
        the generation's; TeaCache: its polynomial `coefficients`, and what it `measure`s of
        the probe's tensor; "teacache-ret", Wan's retention mode, a kind CacheSpec.parse
        leaves to Wan's own setting)."""
        state: BranchCache
        if self.spec.kind == "magcache":
            state = MagCache(self.spec.threshold, steps or self.steps)
        elif self.spec.kind in ("teacache", "teacache-ret"):
            state = TeaCache(self.spec.threshold, steps or self.steps, coefficients=coefficients,
                             retention=self.spec.kind == "teacache-ret", measure=measure)
        else:
            state = FirstBlockCache(self.spec.threshold)
        self.branches.append(state)
        return state

    def summary(self) -> str:
        """"fbc 0.12, 14/28 steps computed" (model calls when several branches ran)."""
        calls = sum(b.calls for b in self.branches)
        computed = sum(b.computed for b in self.branches)
        unit = "steps" if len(self.branches) == 1 else "model calls"
        return f"{self.spec.label}, {computed}/{calls} {unit} computed"
