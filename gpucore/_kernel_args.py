"""What a dispatch hands a Kernel, checked against the kernel's WGSL signature before any GPU
work: the workgroup grid (fold_grid), the storage buffers (StorageBindings) and the fields of
the var<uniform> params struct (ParamsStruct), each error naming the kernel and the binding or
field at fault. Below `_kernel`, which builds these from a parsed signature (`_wgsl`)."""

from __future__ import annotations

import math
import operator
import struct
from collections.abc import Sequence
from typing import Any

from . import _wgsl
from ._buffer import Buffer
from ._errors import BindingError, BindingTypeError, DeviceLimitError

__all__ = ["ParamsStruct", "StorageBindings", "check_numbering", "fold_grid"]

_PACK = {"f32": "f", "i32": "i", "u32": "I"}


def fold_grid(workgroups: int | tuple[int, ...], max_per_dim: int) -> tuple[int, int, int]:
    """Turn a workgroup count into an (x, y, z) grid that respects `max_per_dim`.

    A 1-D count above the limit is folded into x * y >= count; shaders recover the linear
    index as `wid.x + wid.y * nwg.x` and bounds-check it (extra workgroups do nothing).
    """
    if type(workgroups) is tuple and len(workgroups) == 3:  # most ops' grid: kept cheap
        x, y, z = workgroups
        if (type(x) is int and type(y) is int and type(z) is int
                and 0 <= x <= max_per_dim and 0 <= y <= max_per_dim and 0 <= z <= max_per_dim):
            return x, y, z
    if not isinstance(workgroups, tuple | list):
        try:  # numpy's integers too (a count computed from an array's shape)
            workgroups = operator.index(workgroups)
        except TypeError:
            raise TypeError(f"workgroups must be an int or up to 3 ints, got {workgroups!r}; "
                            "round a computed count up (math.ceil, Kernel.groups_for)") from None
        if 0 <= workgroups <= max_per_dim:
            return workgroups, 1, 1
        workgroups = (workgroups,)
    dims = tuple(int(w) for w in workgroups) + (1,) * (3 - len(workgroups))
    if len(dims) != 3 or min(dims) < 0:
        raise ValueError(f"workgroups must be up to 3 non-negative ints, got {workgroups!r}")
    x, y, z = dims
    if x > max_per_dim and y == 1:
        y = math.ceil(x / max_per_dim)
        x = math.ceil(x / y)
    if max(x, y, z) > max_per_dim:
        raise DeviceLimitError(
            "max-compute-workgroups-per-dimension", max_per_dim, max(x, y, z), "this dispatch grid"
        )
    return x, y, z


def check_numbering(name: str, signature: _wgsl.Signature) -> None:
    """compile() lays out storage bindings as 0..n-1 of group 0 and the params struct as n; a
    shader numbered otherwise would fail at pipeline creation with a layout mismatch that
    does not say why."""
    storage, params = signature.storage, signature.params
    wanted = [(0, i) for i in range(len(storage))]
    if [(b.group, b.binding) for b in storage] != wanted or (
            params is not None and (params.group, params.binding) != (0, len(storage))):
        found = ", ".join(f"{b.name} @group({b.group}) @binding({b.binding})"
                          for b in [*storage, *([params] if params else [])])
        raise BindingError(f"shader {name}: bindings must be group 0, the storage buffers "
                           f"numbered 0..n-1 and the var<uniform> params struct n; found {found}")


class StorageBindings:
    """A kernel's storage bindings in binding order, as a dispatch's buffers must match them:
    one Buffer (or an object with a `.buffer`) each, of the binding's element type, writable
    where the shader writes, on one device, within its binding size limit, a written one bound
    once; `least`: the bytes each binding needs at least where that is more than any Buffer
    has (4), else empty."""

    def __init__(self, label: str, storage: Sequence[_wgsl.Binding]) -> None:
        self.label = label
        self.bindings = tuple((b, b.scalar, b.writable) for b in storage)
        self.written = any(b.writable for b in storage)
        least = tuple(_wgsl.min_binding_size(b.type) for b in storage)
        self.least = least if any(n > 4 for n in least) else ()

    def check(self, args: tuple[Any, ...]) -> list[Buffer[Any]]:
        """The buffers of `args`, checked against the bindings."""
        # Every dispatch passes here: first one pass that only says whether all is well;
        # where anything is not, `_check` finds it and says what, as it always has.
        buffers = [a if type(a) is Buffer else getattr(a, "buffer", a) for a in args]
        if len(buffers) == len(self.bindings) and buffers and type(buffers[0]) is Buffer:
            device = buffers[0].device
            limit = device.limits["max-storage-buffer-binding-size"]
            for buf, (_, scalar, writable) in zip(buffers, self.bindings):
                if (type(buf) is not Buffer or buf.device is not device or buf.size > limit
                        or (scalar is not None and buf.wgsl_type != scalar)
                        or (writable and buf.read_only)):
                    break
            else:
                if not self.written or len({id(b) for b in buffers}) == len(buffers):
                    return buffers
        return self._check(args)

    def _check(self, args: tuple[Any, ...]) -> list[Buffer[Any]]:
        if len(args) != len(self.bindings):
            names = ", ".join(b.name for b, _, _ in self.bindings)
            raise BindingError(
                f"{self.label} takes {len(self.bindings)} buffers ({names}), got {len(args)}"
            )
        buffers: list[Buffer[Any]] = []
        for (b, scalar, writable), arg in zip(self.bindings, args):
            buf = arg if isinstance(arg, Buffer) else getattr(arg, "buffer", arg)
            if not isinstance(buf, Buffer):
                if (refuse := getattr(buf, "refuse_binding", None)) is not None:
                    refuse()  # a stand-in that says why it holds no memory (gpustd.nn.deferred)
                raise BindingTypeError(
                    f"{self.label}: {b.describe()} needs a Buffer, got {type(arg).__name__}"
                )
            if scalar is not None and buf.wgsl_type != scalar:
                raise BindingTypeError(
                    f"{self.label}: {b.describe()} holds {scalar} but got "
                    f"Buffer[{buf.dtype}] ({buf.wgsl_type}); convert with astype or use a "
                    f"{scalar} buffer"
                )
            if writable and buf.read_only:
                raise BindingError(
                    f"{self.label}: {b.describe()} is written by the shader, but the buffer "
                    "given is read_only"
                )
            buffers.append(buf)
        if not buffers:
            return buffers
        device = buffers[0].device
        limit = device.limits["max-storage-buffer-binding-size"]
        distinct = len({id(buf) for buf in buffers}) == len(buffers)
        for (b, _, writable), buf in zip(self.bindings, buffers):
            if buf.device is not device:
                raise BindingError(f"{self.label}: all buffers must be on one device "
                                   f"({b.name} is on {buf.device.name})")
            if buf.size > limit:
                device.check_limit("max-storage-buffer-binding-size", buf.size,
                                   f"{self.label}: binding '{b.name}'")
            if writable and not distinct and sum(x is buf for x in buffers) > 1:
                raise BindingError(
                    f"{self.label}: the buffer bound to '{b.name}' is written by the shader "
                    "and may not also be bound elsewhere in the same dispatch"
                )
        return buffers

    def check_least(self, buffers: list[Buffer[Any]]) -> None:
        """Each buffer holds at least its binding's one element (`least`): else wgpu's error
        comes at submit and takes the batch along."""
        for (b, _, _), buf, least in zip(self.bindings, buffers, self.least):
            if buf.size < least:
                raise BindingError(
                    f"{self.label}: {b.describe()} needs a buffer of at least {least} bytes "
                    f"(one element), got Buffer[{buf.dtype}] of length {buf.length}")


class ParamsStruct:
    """A kernel's var<uniform> params struct: its fields' (name, scalar type), packed in order
    into the struct's bytes (16-byte aligned) from a dispatch's keywords."""

    def __init__(self, label: str, fields: tuple[tuple[str, str], ...]) -> None:
        self.label = label
        self.fields = fields
        self.names = frozenset(f for f, _ in fields)
        packed = "<" + "".join(_PACK[t] for _, t in fields)
        # uniform structs are 16-byte aligned: the padding is packed as zero bytes ("x")
        self._struct = struct.Struct(packed + "x" * (-struct.calcsize(packed) % 16))
        names = [f for f, _ in fields]
        # the values in field order, read by one C call (a dispatch packs every time)
        self._values = (operator.itemgetter(*names) if len(names) > 1
                        else lambda params: (params[names[0]],))

    def pack(self, params: dict[str, Any]) -> bytes | None:
        """The struct's bytes (None for a kernel without one); every field given, none more,
        each in its type's range."""
        if params.keys() != self.names:
            declared = self.names
            missing, extra = sorted(declared - set(params)), sorted(set(params) - declared)
            raise BindingError(
                f"{self.label} params: missing {missing}, unexpected {extra}; "
                f"expected {sorted(declared)}"
            )
        fields = self.fields
        if not fields:
            return None
        try:  # fast path: struct range-checks integers itself
            return self._struct.pack(*self._values(params))
        except (struct.error, OverflowError):  # OverflowError: a float past f32's range
            pass
        values = []
        for fname, ftype in fields:
            value = params[fname]
            # None, a string, NaN or inf: what int() and struct raise would name no param
            if ftype in ("u32", "i32"):
                lo, hi = (0, 2**32) if ftype == "u32" else (-(2**31), 2**31)
                try:
                    number = int(value)
                except (TypeError, ValueError, OverflowError):
                    number = None
                if number is None or number != value or not lo <= number < hi:
                    raise BindingError(f"{self.label}: param {fname}: {ftype} = {value!r} "
                                       f"is out of range (an integer in [{lo}, {hi}))")
                value = number
            else:
                try:
                    struct.pack("<f", value)
                except (struct.error, OverflowError):
                    raise BindingError(f"{self.label}: param {fname}: f32 = {value!r} is not "
                                       "a float32 number") from None
            values.append(value)
        return self._struct.pack(*values)
