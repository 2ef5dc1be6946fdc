"""W8A8 linear layers: the weight quantized once to int8 per output channel (Int8Weight), each
call's activations per row (token) to int8 (quantize_rows), the product summed in i32 on the
matrix units where the device multiplies i8 fragments (gpustd/gemm/int8_units.py, through
gpustd.gemm.dispatch.record_gemm_w8a8), its epilogue applying both scales, the bias and a
residual.

Symmetric scales (largest magnitude / 127, round to nearest even, clamp to +-127), so a
value's error is at most half a step of its row's (or channel's) scale. SmoothQuant (Xiao et
al. 2023, eq. 4): `smoothing_factors` moves part of the activations' outlier channels into the
weight, s_j = max|X_j|^alpha / max|W_j|^(1 - alpha): the weight is quantized times s, the
activations times 1/s as they are quantized (the factor in quantize_rows' pass), the product
unchanged before rounding. max|X_j| comes from a calibration pass (diffusion's `--int8`
records it over the first denoising step).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Kernel

from .._tensor import Tensor
from ..gemm.dispatch import record_gemm_w8a8
from ._util import check_float, check_same
from .int8_rows import Int8Rows, no_smoothing
from .module import Module, ModuleList

__all__ = ["ALPHA", "Int8Weight", "int8_linear", "int8_linears", "int8_weights", "quantize_rows",
           "quantize_weight", "quantize_weights", "smoothing_factors"]

ALPHA = 0.5  # SmoothQuant's migration strength (its paper's default for most models)
_GROUPS_X = 65535  # workgroups per grid dimension WebGPU guarantees


class Int8Weight:
    """A linear layer's weight [out, in] as int8 per output channel: `words` int32 [out,
    ceil(in / 4)] (four int8 to a word, little-endian), `scales` float32 [out], `smooth`
    float32 [in] (the activations' SmoothQuant multipliers 1/s) or None; `dtype` the float
    type the layer takes and returns."""

    def __init__(self, words: Tensor, scales: Tensor, shape: tuple[int, int], dtype: Any,
                 smooth: Tensor | None = None) -> None:
        self.words, self.scales, self.smooth = words, scales, smooth
        self.shape = shape
        self.dtype = np.dtype(dtype)
        self.device = words.device

    ndim = 2

    def dequantize(self, raw: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
        """The float32 weight this stands for (host): q * scale / s; of `raw` (words, scales
        as `raw()` gave them) instead of what the buffers hold where given."""
        out, k = self.shape
        words, scales = raw if raw is not None else self.raw()
        q = words.view(np.int8).reshape(out, -1)[:, :k].astype(np.float32)
        w = q * scales[:, None]
        return w * self.smooth.numpy()[None, :] if self.smooth is not None else w

    def raw(self) -> tuple[np.ndarray, np.ndarray]:
        """(words, scales) as stored: what `replace` takes back, bit for bit."""
        return self.words.numpy(), self.scales.numpy()

    def replace(self, words: np.ndarray, scales: np.ndarray) -> None:
        """Write new (words, scales) of this shape into the same buffers (a replayed step
        reads them there); `requantized` makes them from new float values."""
        # copies: kept as the host copies where the buffers had them (they then leave the
        # device under a memory budget without a read-back, as a capture needs)
        self.words.buffer.write(np.array(words, np.int32), keep_host_copy=True)
        self.scales.buffer.write(np.array(scales, np.float32), keep_host_copy=True)

    def requantized(self, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(words, scales) of float `values` [out, in] quantized as this weight was: per output
        channel, under its smoothing (the columns times s, where `smooth` holds 1/s), so that
        the layers sharing its input still share one quantization of it. numpy, on the host."""
        w = np.asarray(values, np.float64).reshape(self.shape)
        if self.smooth is not None:
            w = w / self.smooth.numpy().astype(np.float64)[None, :]
        peak = np.abs(w).max(1) if w.size else np.zeros(self.shape[0])
        scales = (peak / 127.0).astype(np.float32)
        safe = np.where(scales > 0, scales, 1.0).astype(np.float64)[:, None]
        q = np.clip(np.rint(w / safe), -127, 127).astype(np.int8)
        out, k = self.shape
        padded = np.zeros((out, 4 * ((k + 3) // 4)), np.int8)
        padded[:, :k] = q
        return padded.view("<i4").astype(np.int32), scales

    def __repr__(self) -> str:
        return f"Int8Weight({self.shape}, {self.dtype}, smooth={self.smooth is not None})"


def quantize_rows(x: Tensor, smooth: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """x [m, k] (float16 or float32) as (int32 [m, ceil(k / 4)] words of four int8, float32
    [m] scales): each row times `smooth` [k] (float32, None for none) scaled to +-127 by its
    largest magnitude (shaders/quant/quantize_rows_i8.wgsl). numpy: `s = abs(x).max(1) / 127;
    q = clip(rint(x / s[:, None]), -127, 127)`."""
    check_float(x, "x", "quantize_rows", ndim=2)
    m, k = x.shape
    kw = (k + 3) // 4
    words = Tensor.empty((m, kw), np.int32, device=x.device)
    scales = Tensor.empty((m,), np.float32, device=x.device)
    if m == 0 or k == 0:
        if m:
            words.buffer.fill_zero()
            scales.buffer.fill_zero()
        return words, scales
    if smooth is not None and smooth.shape != (k,):
        raise ValueError(f"quantize_rows: smooth must have shape ({k},), got {smooth.shape}")
    factors = smooth.buffer if smooth is not None else no_smoothing(x.device)
    kernel = Kernel.cached("quant/quantize_rows_i8", parts=("quant/level_i8",),
                           types={"T": x.dtype})
    grid = (min(m, _GROUPS_X), -(-m // _GROUPS_X), 1)
    kernel.dispatch(grid, x.buffer, factors, words.buffer, scales.buffer, m=m, k=k,
                    kw=kw, has_smooth=int(smooth is not None))
    return words, scales


def smoothing_factors(act_absmax: np.ndarray, weight_absmax: np.ndarray,
                      alpha: float = ALPHA) -> np.ndarray:
    """SmoothQuant's per-input-channel factors s [in] = max|X_j|^alpha / max|W_j|^(1 - alpha)
    (float32), 1 where either side is zero; the activations are divided by s, the weight's
    columns multiplied."""
    act = np.asarray(act_absmax, np.float64)
    wgt = np.asarray(weight_absmax, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = act ** alpha / wgt ** (1.0 - alpha)
    s = np.where((act > 0) & (wgt > 0) & np.isfinite(s), s, 1.0)
    return np.clip(s, 1e-4, 1e4).astype(np.float32)


def quantize_weight(weight: Tensor, *, act_absmax: np.ndarray | None = None,
                    alpha: float = ALPHA) -> Int8Weight:
    """A [out, in] float weight as an Int8Weight (per output channel, on the device); with
    act_absmax [in] (the activations' largest magnitude per input channel, from calibration)
    SmoothQuant-smoothed with migration strength `alpha`."""
    return quantize_weights([weight], act_absmax=act_absmax, alpha=alpha)[0]


def quantize_weights(weights: list[Tensor], *, act_absmax: np.ndarray | None = None,
                     alpha: float = ALPHA) -> list[Int8Weight]:
    """quantize_weight of weights that read one input (attention's q, k and v), with one
    smoothing for all of them where act_absmax is given: s from each input channel's largest
    magnitude over every weight (as SmoothQuant smooths OPT's fused qkv), so that
    int8_linears quantizes the input once. One weight: quantize_weight's result."""
    for weight in weights:
        check_float(weight, "weight", "quantize_weight", ndim=2)
    if not weights:
        return []
    k = weights[0].shape[1]
    if any(w.shape[1] != k for w in weights):
        raise ValueError("quantize_weights: the weights must share their input features, got "
                         f"{[w.shape for w in weights]}")
    smooth = inverse = None
    if act_absmax is not None:
        act = np.asarray(act_absmax, np.float32).reshape(-1)
        if act.shape != (k,):
            raise ValueError(f"quantize_weight: act_absmax must have {k} values (one per "
                             f"input channel), got {act.shape}")
        w_absmax = np.zeros(k, np.float32)
        for weight in weights:
            if weight.shape[0]:
                w_absmax = np.maximum(w_absmax, np.abs(weight.numpy().astype(np.float32)).max(0))
        s = smoothing_factors(act, w_absmax, alpha)
        smooth = Tensor.from_numpy(s, device=weights[0].device)
        inverse = Tensor.from_numpy((1.0 / s).astype(np.float32), device=weights[0].device)
    return [Int8Weight(*quantize_rows(weight, smooth), weight.shape, weight.dtype, inverse)
            for weight in weights]


def int8_linear(x: Tensor, weight: Int8Weight, bias: Tensor | None = None, *,
                add_to: Tensor | None = None) -> Tensor:
    """gpustd.nn.linear (x [..., in] @ W.T + bias, add_to a residual added in place) with W an
    Int8Weight and x quantized per row on the way in (W8A8), or x's own int8 rows where it is
    an Int8Rows quantized under W's smoothing (gpustd.nn.int8_rows). torch: `F.linear(x,
    w8 * sw, b)` with x replaced by its per-row int8 rounding."""
    return _linears("int8_linear", x, [weight], [bias], add_to)[0]


def int8_linears(x: Tensor, weights: list[Int8Weight],
                 biases: list[Tensor | None]) -> list[Tensor]:
    """[int8_linear(x, w, b) for w, b in zip(weights, biases)] with x quantized once for all
    of them (attention's q, k and v of one input): the weights must share their smoothing
    (the same `smooth` tensor, or none). Each result is int8_linear's, bit for bit."""
    if len(weights) != len(biases):
        raise ValueError(f"int8_linears: {len(weights)} weights but {len(biases)} biases")
    if any(w.smooth is not weights[0].smooth for w in weights):
        raise ValueError("int8_linears: the weights must share one smoothing (quantize them "
                         "with the same act_absmax, or none), or run int8_linear on each")
    return _linears("int8_linears", x, weights, biases, None)


def _linears(op: str, x: Tensor, weights: list[Int8Weight], biases: list[Tensor | None],
             add_to: Tensor | None) -> list[Tensor]:
    check_float(x, "x", op)
    outs = [_output(op, x, weight, bias, add_to) for weight, bias in zip(weights, biases)]
    k = x.shape[-1] if outs else 0
    m = int(np.prod(x.shape[:-1])) if outs else 0
    shared: tuple[Tensor, Tensor] | None = None
    for out, weight, bias in zip(outs, weights, biases):
        n = weight.shape[0]
        if m == 0 or n == 0:
            continue
        if shared is None and isinstance(x, Int8Rows) and x.smooth is weight.smooth:
            shared = x.words, x.scales  # quantized by the kernel that wrote x (int8_rows)
        elif shared is None:  # one quantization of x for every weight (they share smoothing)
            shared = quantize_rows(x.reshape(m, k), weight.smooth)
        words, scales = shared
        record_gemm_w8a8(words.buffer, weight.words.buffer, scales.buffer, weight.scales.buffer,
                         bias.buffer if bias is not None else None, out.buffer, m=m, n=n,
                         kw=words.shape[1], beta=1.0 if add_to is not None else 0.0)
    return outs


def _output(op: str, x: Tensor, weight: Int8Weight, bias: Tensor | None,
            add_to: Tensor | None) -> Tensor:
    """The checked output tensor of x's product with `weight` (add_to where given)."""
    check_same(op, x, bias=bias, add_to=add_to)
    n, k = weight.shape
    if x.ndim < 1 or x.shape[-1] != k:
        raise ValueError(f"{op}: x {x.shape} must end in the weight's {k} input features")
    if weight.dtype != x.dtype or weight.device is not x.device:
        raise TypeError(f"{op}: the weight was quantized for {weight.dtype} on "
                        f"{weight.device.name}, the input is {x.dtype} on {x.device.name}")
    if bias is not None and bias.shape != (n,):
        raise ValueError(f"{op}: bias must have shape ({n},), got {bias.shape}")
    shape = (*x.shape[:-1], n)
    if add_to is not None and (add_to.shape != shape or add_to.buffer is x.buffer):
        raise ValueError(f"{op}: add_to must have the result's shape {shape} and not share "
                         "memory with x")
    return add_to if add_to is not None else Tensor.empty(shape, x.dtype, device=x.device)


def int8_weights(module: Module | list[Any] | tuple[Any, ...], prefix: str = ""
                 ) -> dict[str, Int8Weight]:
    """Every Int8Weight under `module` (through Modules, ModuleLists and lists of Modules), by
    state-dict key (`blocks.0.ff.weight`), as Module.named_parameters finds float ones."""
    found: dict[str, Int8Weight] = {}
    items: Any = (enumerate(module) if isinstance(module, (ModuleList, list, tuple)) else
                  ((k, v) for k, v in vars(module).items() if not k.startswith("_")))
    for name, value in items:
        if isinstance(value, Int8Weight):
            found[f"{prefix}{name}"] = value
        elif isinstance(value, Module) or (isinstance(value, (list, tuple)) and value and all(
                isinstance(m, Module) for m in value)):
            found.update(int8_weights(value, f"{prefix}{name}."))
    return found
