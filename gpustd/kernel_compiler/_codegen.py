"""What compiled kernels share: argument classification, input bindings, broadcast indexing.

Tensor arguments are bound as storage arrays of their own dtype; Python and numpy scalars
travel as u32 bit patterns in the params struct, so a new scalar value never compiles a new
kernel. The broadcast of the tensor arguments is collapsed by `_broadcast.plan`: a kernel is
specialized on the plan's rank and on which arguments have the full shape (those are read at
the element's own index), never on the sizes, which are params.
"""

from __future__ import annotations

import numbers
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpucore import Device, FeatureError, default_device

from .._broadcast import _HOST_DTYPES, scalar_bits, upload
from .._tensor import Tensor
from ._types import Val, type_of_dtype, weak

__all__ = ["Arguments", "Inputs", "classify", "declare_inputs", "finish_source"]


@dataclass
class Arguments:
    """A call's arguments, prepared: tensors uploaded, scalars kept with their kind."""

    device: Device
    values: list[Any]  # Tensor or Python number per argument
    kinds: tuple[str, ...]  # 'T:f32' for a tensor, 'S:int:i32' / 'S:float' / 'S:f16' ...

    @property
    def tensors(self) -> list[Tensor]:
        return [v for v in self.values if isinstance(v, Tensor)]


def _scalar_kind(value: Any) -> tuple[str, Any]:
    if isinstance(value, (bool, np.bool_)):
        return "S:bool", bool(value)
    if isinstance(value, np.generic):
        t = type_of_dtype(value.dtype)
        if t is not None:
            return f"S:{t}", value.item()
        value = value.item()  # 64-bit numpy scalars act as Python numbers
    if isinstance(value, numbers.Integral):
        v = int(value)
        if not -(2**31) <= v < 2**32:
            raise OverflowError(f"Python integer {v} does not fit in 32 bits")
        return ("S:int:i32" if v < 2**31 else "S:int:u32"), v
    return "S:float", float(value)


def classify(values: list[Any], name: str) -> Arguments:
    """Tensors stay, scalars become kinds, anything else goes through `np.asarray`."""
    tensors = [v for v in values if isinstance(v, Tensor)]
    devices = {id(t.device): t.device for t in tensors}
    if len(devices) > 1:
        raise ValueError(f"kernel '{name}': arguments are on different devices; move them "
                         "with .to(device)")
    device = next(iter(devices.values()), None) or default_device()
    prepared, kinds = [], []
    for k, v in enumerate(values):
        if not isinstance(v, Tensor):
            is_number = isinstance(v, numbers.Real) or (isinstance(v, np.generic)
                                                        and v.dtype.kind in "biuf")
            if is_number:
                kind, number = _scalar_kind(v)
                prepared.append(number)
                kinds.append(kind)
                continue
            array = np.asarray(v)
            if array.dtype.kind not in "biuf":
                raise TypeError(f"kernel '{name}': argument {k} is {array.dtype} data; pass "
                                "Tensors, numbers or numeric arrays")
            v = upload(array, _HOST_DTYPES.get(array.dtype, array.dtype), device)
        t = type_of_dtype(v.dtype)
        if t is None or t == "bool":
            raise TypeError(f"kernel '{name}': argument {k} is a {v.dtype} Tensor; use "
                            "float32, float16, int32 or uint32")
        prepared.append(v)
        kinds.append(f"T:{t}")
    return Arguments(device, prepared, tuple(kinds))


@dataclass
class Inputs:
    """The WGSL side of a call's arguments."""

    bindings: list[str]  # storage declarations, binding numbers from 0
    fields: list[str]  # params struct fields (u32)
    lines: list[str]  # statements that load every argument for element `index`
    vals: list[Val]  # the arguments as translator values


def declare_inputs(kinds: tuple[str, ...], rank: int, full: tuple[bool, ...],
                   index: str = "i") -> Inputs:
    """Bindings, params fields and loads for `kinds`; `full[k]` says tensor k has the
    broadcast shape (read at `index` itself), the others are read through strides."""
    bindings: list[str] = []
    fields: list[str] = []
    lines: list[str] = []
    vals: list[Val] = []
    strided = [j for j, f in enumerate(full) if not f]
    if strided and rank > 1:
        fields += [f"d{k}" for k in range(rank - 1)]
        lines.append(f"var r = {index};")
        for k in range(rank - 1):
            lines.append(f"let c{k} = r % params.d{k};")
            lines.append(f"r = r / params.d{k};")
    coords = [f"c{k}" for k in range(rank - 1)] + ["r"] if rank > 1 else [index]
    tensor = 0
    for k, kind in enumerate(kinds):
        parts = kind.split(":")
        if parts[0] == "T":
            j, tensor = tensor, tensor + 1
            bindings.append(f"@group(0) @binding({j}) var<storage, read> in{j}: "
                            f"array<{parts[1]}>;")
            if full[j]:
                offset = index
            else:
                fields += [f"s{j}_{m}" for m in range(rank)]
                offset = " + ".join(f"{c} * params.s{j}_{m}" for m, c in enumerate(coords))
            lines.append(f"let a{k} = in{j}[{offset}];")
            vals.append(Val(parts[1], f"a{k}"))
            continue
        fields.append(f"p{k}")
        vals.append(_scalar_val(k, parts[1:], lines))
    return Inputs(bindings, fields, lines, vals)


def _scalar_val(k: int, parts: list[str], lines: list[str]) -> Val:
    t = parts[0]
    if t == "bool":
        lines.append(f"let a{k} = params.p{k} != 0u;")
        return Val("bool", f"a{k}")
    store = {"int": parts[1] if len(parts) > 1 else "i32", "float": "f32", "f16": "f32"}.get(t, t)
    lines.append(f"let a{k} = bitcast<{store}>(params.p{k});")
    if t in ("int", "float"):
        held = Val(store, f"a{k}")
        return weak(t, held.as_)
    if t == "f16":
        return Val("f16", f"f16(a{k})")
    return Val(t, f"a{k}")


def scalar_params(args: Arguments) -> dict[str, int]:
    """The p<k> fields: each scalar argument's bits."""
    out = {}
    for k, (kind, v) in enumerate(zip(args.kinds, args.values)):
        if kind.startswith("S:"):
            t = kind.split(":")[-1]
            if t == "bool":
                out[f"p{k}"] = int(bool(v))
            else:
                out[f"p{k}"] = scalar_bits(v, {"float": "f32", "f16": "f32"}.get(t, t))
    return out


def strided_params(dims: list[int], strides: list[list[int]],
                   full: tuple[bool, ...]) -> dict[str, int]:
    """d<k> and s<j>_<k> fields for the tensors that are not read at the element index."""
    strided = [j for j, f in enumerate(full) if not f]
    if not strided:
        return {}
    rank = len(dims)
    fields = {f"d{k}": dims[k] for k in range(rank - 1)}
    for j in strided:
        fields.update({f"s{j}_{m}": strides[j][m] for m in range(rank)})
    return fields


# Non-finite floats come from bit patterns through a function: Tint (Dawn's compiler) rejects
# `bitcast<f32>(0x7f800000u)` as a constant expression whose value (inf) f32 cannot represent,
# while a function's result is a run-time value.
_BIT_PATTERNS = {
    "f32_bits": "fn f32_bits(bits: u32) -> f32 { return bitcast<f32>(bits); }",
    "f16_bits": "fn f16_bits(bits: u32) -> f16 { return bitcast<vec2<f16>>(bits).x; }",
}


def finish_source(device: Device, what: str, parts: list[str]) -> str:
    """Join a kernel's parts, enabling f16 where it is used (and the device allows it), with
    the bit-pattern functions the text calls."""
    text = "\n".join(parts)
    for name, definition in _BIT_PATTERNS.items():
        if f"{name}(" in text:
            text = definition + "\n" + text
    if re.search(r"\bf16\b|[0-9.]h\b", text):  # the type, or an f16 literal such as 0.5h
        if not device.has_f16:
            raise FeatureError("shader-f16", f"{what} (float16 values)", device.name)
        text = "enable f16;\n" + text
    return text
