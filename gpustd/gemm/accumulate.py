"""What the f16 GEMMs on the matrix units accumulate in: f32 (the default) or f16.

f16 accumulators take half the registers, so a subgroup holds 4 x 4 fragments and a workgroup
256 x 256 tiles (gpustd.gemm.matrix_units.ACC16_TILES): deep products 1.3-1.6x faster, at an
error of 2e-3 to 1e-2 of the result's largest magnitude against float64 where f32 gives 2e-4
to 5e-4 (K 640 to 12288, normal operands), about cuBLAS's own fp16 accumulation
(`torch.backends.cuda.matmul.allow_fp16_accumulation`, ComfyUI's `--fast fp16_accumulation`).
Sums past 65504 overflow. bench/NOTES.md has the measurements.

The matrix-unit convs have a setting of their own, the environment's GPUSTD_CONV_ACCUMULATE
alone (`conv_accumulation`), f32 unless it says f16: f16 sums there bought SDXL's step 3% and
quadrupled its error against diffusers fp32 (5.7e-3 against fp16's 1.5e-3; H100, bench/NOTES.md
"f16 accumulators in the matrix-unit conv"), and neither cuDNN nor ComfyUI's
`fp16_accumulation` sums convs in f16, so `accumulating` and `--fp16-accumulation` leave them.

The choice, first that applies: the innermost `accumulating(kind)` block of this thread or
task (a model's call: gpustd.nn.Module.gemm_accumulate), then the environment's
GPUSTD_GEMM_ACCUMULATE, then "f32". It is read when a GEMM is recorded, so a capture replays
what was chosen while it recorded. Devices without f16 result fragments accumulate in f32
whatever is asked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from gpucore import Device

__all__ = ["ACCUMULATE_ENV", "CONV_ACCUMULATE_ENV", "KINDS", "accumulating", "accumulation",
           "check_kind", "conv_accumulation", "f16_available", "requested"]

ACCUMULATE_ENV = "GPUSTD_GEMM_ACCUMULATE"
CONV_ACCUMULATE_ENV = "GPUSTD_CONV_ACCUMULATE"
KINDS = ("f32", "f16")
_ASKED: ContextVar[str | None] = ContextVar("gpustd_gemm_accumulate", default=None)


def check_kind(kind: str, where: str = "accumulate") -> str:
    """`kind` lower-cased if it is one of KINDS, else ValueError saying what to use."""
    value = kind.strip().lower() if isinstance(kind, str) else kind
    if value not in KINDS:
        raise ValueError(f"{where}={kind!r}: use f32 (the default, exact to f16 rounding) or "
                         "f16 (faster deep products, about 10x the error: cuBLAS's fp16 "
                         "accumulation)")
    return value


@contextmanager
def accumulating(kind: str) -> Iterator[None]:
    """The f16 GEMMs recorded inside the block accumulate in `kind` ("f32" or "f16"), whatever
    the environment says. torch: `torch.backends.cuda.matmul.allow_fp16_accumulation`, but
    scoped to the block."""
    token = _ASKED.set(check_kind(kind))
    try:
        yield
    finally:
        _ASKED.reset(token)


def requested() -> str | None:
    """What the innermost `accumulating` block asks for here, None outside any."""
    return _ASKED.get()


def accumulation(device: Device) -> str:
    """The f16 GEMM's accumulator type on `device` now: "f32" or "f16" (see the module's
    docstring for the order), "f32" where the device has no f16 result fragments."""
    value = _ASKED.get()
    if value is None:
        value = check_kind(os.environ.get(ACCUMULATE_ENV, "").strip() or "f32", ACCUMULATE_ENV)
    return value if f16_available(device) else "f32"


def f16_available(device: Device) -> bool:
    """Whether `device` multiplies f16 16x16x16 fragments into f16 results (Dawn on NVIDIA)."""
    config = getattr(device.info, "matrix_config", lambda *a: None)("f16", "f16", 16, 16, 16)
    return config is not None


def conv_accumulation(device: Device) -> str:
    """The matrix-unit conv's accumulator type on `device`: GPUSTD_CONV_ACCUMULATE's "f16"
    where the device has f16 result fragments, else "f32" (never an `accumulating` block's)."""
    value = check_kind(os.environ.get(CONV_ACCUMULATE_ENV, "").strip() or "f32",
                       CONV_ACCUMULATE_ENV)
    return value if f16_available(device) else "f32"
