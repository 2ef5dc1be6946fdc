"""The ONNX operators an exported vision network uses, on gpustd: each takes the node's
attributes and its inputs (Tensors for data, numpy arrays for shapes, axes and scales) and
returns its outputs. ONNX's operator specification is the reference for every one; the
names below are the spec's.

HOST_INPUTS names the inputs that stay numpy (shapes, axes, scales, bounds): diffusion's
OnnxNetwork hands them over as read, and uploads the other float weights.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

import gpustd
from gpustd import Tensor, nn

__all__ = ["HOST_INPUTS", "OPS", "SUPPORTED", "UnsupportedOnnx", "run_op"]

Op = Callable[[dict[str, Any], list[Any]], list[Any]]
HOST_INPUTS: dict[str, set[int]] = {
    "Reshape": {1}, "Slice": {1, 2, 3, 4}, "Split": {1}, "Squeeze": {1}, "Unsqueeze": {1},
    "ReduceMean": {1}, "ReduceSum": {1}, "ReduceMax": {1}, "ReduceL2": {1}, "Clip": {1, 2},
    "Resize": {1, 2, 3}, "Upsample": {1}, "Pad": {1, 2}, "Gather": {1},
}
_LOWEST = float(np.finfo(np.float32).min)


class UnsupportedOnnx(ValueError):
    """A node this interpreter cannot run (an operator or a setting of one)."""


def _float(value: Any) -> Any:
    """A one-element numpy operand as a Python float (broadcast by gpustd as a scalar)."""
    if isinstance(value, np.ndarray) and value.size == 1:
        return float(value.reshape(()))
    return value


def _binary(function: Callable[[Any, Any], Tensor]) -> Op:
    return lambda attributes, args: [function(_float(args[0]), _float(args[1]))]


def _unary(function: Callable[[Any], Any]) -> Op:
    return lambda attributes, args: [function(args[0])]


def _axes(attributes: dict[str, Any], args: list[Any], ndim: int) -> list[int] | None:
    axes = args[1] if len(args) > 1 and args[1] is not None else attributes.get("axes")
    if axes is None:
        return None
    return [int(a) % ndim for a in np.asarray(axes).reshape(-1)]


def _conv(attributes: dict[str, Any], args: list[Any]) -> list[Any]:
    x, weight = args[0], args[1]
    bias = args[2] if len(args) > 2 else None
    kh, kw = weight.shape[2:]
    strides = attributes.get("strides", [1, 1])
    dilations = attributes.get("dilations", [1, 1])
    top, left, bottom, right = attributes.get("pads", [0, 0, 0, 0])
    auto_pad = attributes.get("auto_pad", "NOTSET")
    if auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        pads = []
        for size, k, s, d in zip(x.shape[2:], (kh, kw), strides, dilations):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            low = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
            pads.append((low, total - low))
        (top, bottom), (left, right) = pads
    if (top, left) != (bottom, right):
        x = nn.pad(x, (left, right, top, bottom))
        top = left = 0
    return [nn.conv2d(x, weight, bias, stride=tuple(strides), padding=(top, left),
                      dilation=tuple(dilations), groups=int(attributes.get("group", 1)))]


def _window_max(x: Tensor, axis: int, size: int, stride: int) -> Tensor:
    length = (x.shape[axis] - size) // stride + 1
    if length < 1:
        raise UnsupportedOnnx(f"MaxPool: a window of {size} is larger than the padded size "
                              f"{x.shape[axis]}")
    index: list[Any] = [slice(None)] * x.ndim
    out = None
    for offset in range(size):
        index[axis] = slice(offset, offset + stride * (length - 1) + 1, stride)
        part = x[tuple(index)]
        out = part if out is None else gpustd.maximum(out, part)
    assert out is not None
    return out


def _max_pool(attributes: dict[str, Any], args: list[Any]) -> list[Any]:
    if attributes.get("ceil_mode", 0) or attributes.get("auto_pad", "NOTSET") != "NOTSET":
        raise UnsupportedOnnx("MaxPool: ceil_mode and auto_pad are not supported")
    kh, kw = attributes["kernel_shape"]
    sh, sw = attributes.get("strides", [1, 1])
    top, left, bottom, right = attributes.get("pads", [0, 0, 0, 0])
    x = args[0]
    if top or left or bottom or right:
        x = nn.pad(x, (left, right, top, bottom), value=_LOWEST)
    return [_window_max(_window_max(x, 2, kh, sh), 3, kw, sw)]


def _nearest_index(size_in: int, size_out: int, scale: float, attributes: dict[str, Any]
                   ) -> np.ndarray:
    """Where each output row reads its input for Resize(mode="nearest"), by the spec's
    coordinate transformation and nearest mode."""
    out = np.arange(size_out, dtype=np.float64)
    mode = attributes.get("coordinate_transformation_mode", "half_pixel")
    if mode == "asymmetric":
        source = out / scale
    elif mode == "align_corners":
        source = out * (size_in - 1) / max(size_out - 1, 1)
    elif mode == "pytorch_half_pixel" and size_out == 1:
        source = np.zeros_like(out)
    elif mode in ("half_pixel", "pytorch_half_pixel"):
        source = (out + 0.5) / scale - 0.5
    else:
        raise UnsupportedOnnx(f"Resize: coordinate_transformation_mode {mode!r}")
    rounding = attributes.get("nearest_mode", "round_prefer_floor")
    if rounding == "floor":
        index = np.floor(source)
    elif rounding == "ceil":
        index = np.ceil(source)
    elif rounding == "round_prefer_ceil":
        index = np.floor(source + 0.5)
    else:
        index = np.ceil(source - 0.5)
    return np.clip(index, 0, size_in - 1).astype(np.int32)


def _resize(attributes: dict[str, Any], args: list[Any]) -> list[Any]:
    if attributes.get("mode", "nearest") != "nearest":
        raise UnsupportedOnnx(f"Resize: mode {attributes['mode']!r} (only nearest)")
    x = args[0]
    if len(args) == 2:  # opset 10's Resize and opset 9's Upsample: (x, scales)
        args = [x, None, args[1]]
    scales = args[2] if len(args) > 2 and args[2] is not None and args[2].size else None
    sizes = args[3] if len(args) > 3 and args[3] is not None else None
    if scales is None and sizes is None:
        raise UnsupportedOnnx("Resize: neither scales nor sizes given")
    if sizes is None:
        assert scales is not None
        sizes = [math.floor(n * s) for n, s in zip(x.shape, scales)]
        factors = [float(s) for s in scales]
    else:
        factors = [int(o) / n for o, n in zip(sizes, x.shape)]
    if tuple(int(s) for s in sizes[:2]) != x.shape[:2]:
        raise UnsupportedOnnx("Resize: only the last two (spatial) dimensions may change")
    indices = [_nearest_index(x.shape[axis], int(sizes[axis]), factors[axis], attributes)
               for axis in (2, 3)]
    doubled = [np.arange(2 * n) // 2 for n in x.shape[2:]]
    if all(i.shape == d.shape and (i == d).all() for i, d in zip(indices, doubled)):
        return [nn.upsample_nearest2x(x)]
    for axis, index in zip((2, 3), indices):
        if not (index.shape[0] == x.shape[axis] and (index == np.arange(x.shape[axis])).all()):
            x = gpustd.take(x, gpustd.asarray(index, device=x.device), axis=axis)
    return [x]


def _slice(attributes: dict[str, Any], args: list[Any]) -> list[Any]:
    x = args[0]
    starts = args[1] if len(args) > 1 else attributes["starts"]
    ends = args[2] if len(args) > 2 else attributes["ends"]
    axes = args[3] if len(args) > 3 and args[3] is not None else range(len(starts))
    steps = args[4] if len(args) > 4 and args[4] is not None else [1] * len(starts)
    index: list[Any] = [slice(None)] * x.ndim
    for start, end, axis, step in zip(starts, ends, axes, steps):
        if step < 1:
            raise UnsupportedOnnx("Slice: only positive steps are supported")
        length = x.shape[int(axis)]
        index[int(axis)] = slice(*slice(int(start), int(end), int(step)).indices(length))
    return [x[tuple(index)]]


def _split(attributes: dict[str, Any], args: list[Any], outputs: int) -> list[Any]:
    x = args[0]
    axis = int(attributes.get("axis", 0)) % x.ndim
    sizes = args[1] if len(args) > 1 and args[1] is not None else attributes.get("split")
    if sizes is None:
        sizes = [-(-x.shape[axis] // outputs)] * outputs
        sizes[-1] = x.shape[axis] - sum(sizes[:-1])
    return gpustd.split(x, list(np.cumsum([int(s) for s in sizes])[:-1]), axis=axis)


def _reshape(attributes: dict[str, Any], args: list[Any]) -> list[Any]:
    x, shape = args[0], [int(s) for s in args[1]]
    if not attributes.get("allowzero", 0):
        shape = [x.shape[i] if s == 0 else s for i, s in enumerate(shape)]
    return [x.reshape(shape)]


def _squeeze(attributes: dict[str, Any], args: list[Any]) -> list[Any]:
    x = args[0]
    axes = _axes(attributes, args, x.ndim)
    shape = [n for i, n in enumerate(x.shape) if not (n == 1 and (axes is None or i in axes))]
    return [x.reshape(shape)]


def _unsqueeze(attributes: dict[str, Any], args: list[Any]) -> list[Any]:
    x = args[0]
    axes = args[1] if len(args) > 1 else attributes["axes"]
    ndim = x.ndim + len(axes)
    shape = list(x.shape)
    for axis in sorted(int(a) % ndim for a in axes):
        shape.insert(axis, 1)
    return [x.reshape(shape)]


def _reduce(function: Callable[..., Tensor]) -> Op:
    def run(attributes: dict[str, Any], args: list[Any]) -> list[Any]:
        x = args[0]
        axes = _axes(attributes, args, x.ndim)
        if axes is None and attributes.get("noop_with_empty_axes", 0):
            return [x]
        keep = bool(attributes.get("keepdims", 1))
        return [function(x, axis=None if axes is None else tuple(axes), keepdims=keep)]
    return run


def _l2(x: Tensor, axis: Any, keepdims: bool) -> Tensor:
    return gpustd.sqrt(gpustd.sum(x * x, axis=axis, keepdims=keepdims))


def _clip(attributes: dict[str, Any], args: list[Any]) -> list[Any]:
    low = args[1] if len(args) > 1 and args[1] is not None else attributes.get("min")
    high = args[2] if len(args) > 2 and args[2] is not None else attributes.get("max")
    return [gpustd.clip(args[0], None if low is None else float(np.asarray(low)),
                        None if high is None else float(np.asarray(high)))]


def _power(attributes: dict[str, Any], args: list[Any]) -> list[Any]:
    x, exponent = args[0], _float(args[1])
    if exponent == 2.0:
        return [x * x]
    if exponent == 0.5:
        return [gpustd.sqrt(x)]
    return [gpustd.power(x, exponent)]


def _gemm(attributes: dict[str, Any], args: list[Any]) -> list[Any]:
    a, b = args[0], args[1]
    out = gpustd.matmul(a, b, trans_a=bool(attributes.get("transA", 0)),
                        trans_b=bool(attributes.get("transB", 0)))
    if attributes.get("alpha", 1.0) != 1.0:
        out = out * float(attributes["alpha"])
    if len(args) > 2 and args[2] is not None:
        out = out + _float(args[2]) * float(attributes.get("beta", 1.0))
    return [out]


def _softmax(attributes: dict[str, Any], args: list[Any], opset: int) -> list[Any]:
    x = args[0]
    axis = int(attributes.get("axis", -1 if opset >= 13 else 1)) % x.ndim
    if opset < 13 and axis != x.ndim - 1:  # the old spec's softmax over the flattened tail
        return [gpustd.softmax(x.reshape(*x.shape[:axis], -1), axis=-1).reshape(x.shape)]
    return [gpustd.softmax(x, axis=axis)]


def _hard_sigmoid(alpha: float, beta: float, x: Tensor) -> Tensor:
    return gpustd.clip(x * alpha + beta, 0.0, 1.0)


def _many(function: Callable[[Any, Any], Tensor]) -> Op:
    def run(attributes: dict[str, Any], args: list[Any]) -> list[Any]:
        out = args[0]
        for other in args[1:]:
            out = function(out, _float(other))
        return [out]
    return run


def _layer_norm(attributes: dict[str, Any], args: list[Any]) -> list[Any]:
    x = args[0]
    if int(attributes.get("axis", -1)) % x.ndim != x.ndim - 1:
        raise UnsupportedOnnx("LayerNormalization: only over the last axis")
    bias = args[2] if len(args) > 2 else None
    return [nn.layer_norm(x, args[1], bias, eps=float(attributes.get("epsilon", 1e-5)))]


def _flatten(attributes: dict[str, Any], args: list[Any]) -> list[Any]:
    x = args[0]
    axis = int(attributes.get("axis", 1)) % (x.ndim + 1)
    return [x.reshape(int(np.prod(x.shape[:axis])), -1)]


def _transpose(attributes: dict[str, Any], args: list[Any]) -> list[Any]:
    x = args[0]
    return [gpustd.permute(x, attributes.get("perm", list(range(x.ndim))[::-1]))]


def _concat(attributes: dict[str, Any], args: list[Any]) -> list[Any]:
    return [gpustd.concatenate(args, axis=int(attributes["axis"]))]


def _batch_norm(attributes: dict[str, Any], args: list[Any]) -> list[Any]:
    """Inference BatchNormalization (where an export left it beside its Conv): x * a + b per
    channel, a = scale / sqrt(var + eps), b = bias - mean * a."""
    x, scale, bias, mean, var = args[:5]
    per_channel = (-1,) + (1,) * (x.ndim - 2)
    a = scale / gpustd.sqrt(var + float(attributes.get("epsilon", 1e-5)))
    return [x * a.reshape(per_channel) + (bias - mean * a).reshape(per_channel)]


def _gather(attributes: dict[str, Any], args: list[Any]) -> list[Any]:
    """Gather of a tensor at host indices (torch's x[:, i] and unbind exports)."""
    x, indices = args[0], np.asarray(args[1])
    axis = int(attributes.get("axis", 0)) % x.ndim
    flat = (indices.reshape(-1) % x.shape[axis]).astype(np.int32)
    out = gpustd.take(x, gpustd.asarray(flat, device=x.device), axis=axis)
    return [out.reshape(*x.shape[:axis], *indices.shape, *x.shape[axis + 1:])]


def _silu(attributes: dict[str, Any], args: list[Any]) -> list[Any]:
    return [nn.silu(args[0])]


OPS: dict[str, Op] = {
    "Conv": _conv, "MaxPool": _max_pool, "Resize": _resize, "Upsample": _resize,
    "Slice": _slice,
    "Reshape": _reshape, "Squeeze": _squeeze, "Unsqueeze": _unsqueeze, "Flatten": _flatten,
    "Transpose": _transpose, "Concat": _concat, "Gemm": _gemm, "Clip": _clip, "Pow": _power,
    "LayerNormalization": _layer_norm,
    "Add": _binary(gpustd.add), "Sub": _binary(gpustd.subtract),
    "Mul": _binary(gpustd.multiply), "Div": _binary(gpustd.divide),
    "MatMul": _binary(gpustd.matmul), "Max": _many(gpustd.maximum),
    "Min": _many(gpustd.minimum),
    "Sigmoid": _unary(gpustd.sigmoid), "Relu": _unary(lambda x: gpustd.maximum(x, 0.0)),
    "Sqrt": _unary(gpustd.sqrt), "Exp": _unary(gpustd.exp), "Tanh": _unary(gpustd.tanh),
    "Neg": _unary(gpustd.negative), "Abs": _unary(gpustd.abs),
    "Reciprocal": _unary(lambda x: 1.0 / x),
    "Identity": _unary(lambda x: x), "Dropout": _unary(lambda x: x),
    "Cast": _unary(lambda x: x),
    "HardSigmoid": lambda attributes, args: [_hard_sigmoid(
        float(attributes.get("alpha", 0.2)), float(attributes.get("beta", 0.5)), args[0])],
    "HardSwish": _unary(lambda x: x * _hard_sigmoid(1 / 6, 0.5, x)),
    "LeakyRelu": lambda attributes, args: [gpustd.where(
        args[0] > 0.0, args[0], args[0] * float(attributes.get("alpha", 0.01)))],
    "GlobalAveragePool": _unary(lambda x: gpustd.mean(x, axis=(2, 3), keepdims=True)),
    "ReduceMean": _reduce(gpustd.mean), "ReduceSum": _reduce(gpustd.sum),
    "ReduceMax": _reduce(gpustd.max), "ReduceL2": _reduce(_l2),
    "BatchNormalization": _batch_norm, "Gather": _gather,
    "SiLU": _silu,  # this interpreter's own fusion of x * Sigmoid(x)
}


def run_op(op: str, attributes: dict[str, Any], args: Sequence[Any], outputs: int,
           opset: int) -> list[Any]:
    """The outputs of one node of type `op`."""
    if op == "Split":
        return _split(attributes, list(args), outputs)
    if op == "Softmax":
        return _softmax(attributes, list(args), opset)
    return OPS[op](attributes, list(args))


SUPPORTED = frozenset({*OPS, "Split", "Softmax"})
