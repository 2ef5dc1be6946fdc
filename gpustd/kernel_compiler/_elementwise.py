"""`elementwise_kernel`: a Python function over scalars, run on every element of a broadcast."""

from __future__ import annotations

import ast
import functools
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpucore import Kernel

from .._broadcast import broadcast_shapes, plan
from .._tensor import Tensor
from ._codegen import (
    Arguments,
    classify,
    declare_inputs,
    finish_source,
    scalar_params,
    strided_params,
)
from ._source import KernelSource, parse_function
from ._translate import Translation, translate
from ._types import DTYPE_OF, Val, concrete

__all__ = ["ElementwiseKernel", "elementwise_kernel", "storage_type"]

_MAIN = """
override WG: u32 = 256u;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {{
    let i = (wid.y * nwg.x + wid.x) * WG + lid;
    if (i >= params.n) {{
        return;
    }}
{body}
}}"""


def storage_type(val: Val) -> str:
    """The WGSL type a result is stored as: weak numbers take their default, bools u32."""
    t = concrete(val.type)
    return "u32" if t == "bool" else t


@dataclass(frozen=True)
class _Compiled:
    kernel: Kernel
    out_types: tuple[str, ...]


class ElementwiseKernel:
    """A Python function over scalars compiled to a WGSL elementwise kernel.

    Calling it with Tensors, numbers or numeric arrays broadcasts them as numpy does and
    returns one Tensor per returned value (a tuple when the function returns a tuple).
    A kernel is compiled once per signature: the arguments' kinds and dtypes, the rank of
    the collapsed broadcast and which arguments have the full shape (never the sizes, nor
    the scalar values). See `gpustd.kernel_compiler` for the language.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.kernel_source: KernelSource = parse_function(fn)
        self._signature = inspect.signature(fn)
        # arguments all given by position take no binding (a call's common case, and
        # Signature.bind its slowest part) where every parameter is a plain positional one
        plain = all(p.kind is p.POSITIONAL_OR_KEYWORD and p.default is p.empty
                    for p in self._signature.parameters.values())
        self._positional = len(self._signature.parameters) if plain else -1
        self._compiled: dict[tuple, _Compiled] = {}
        functools.update_wrapper(self, fn)

    @property
    def compile_count(self) -> int:
        """How many signatures have been compiled so far."""
        return len(self._compiled)

    def __repr__(self) -> str:
        return f"<elementwise_kernel {self.kernel_source.name}>"

    def _prepare(self, args: tuple, kwargs: dict
                 ) -> tuple[Arguments, tuple, dict[str, int], _Compiled]:
        given = (list(args) if not kwargs and len(args) == self._positional
                 else list(self._signature.bind(*args, **kwargs).args))
        call = classify(given, self.kernel_source.name)
        shape, rank, full, fields = _layout(tuple(t.shape for t in call.tensors))
        key = (call.kinds, rank, full)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = self._build(call, rank, full)
        return call, shape, fields, compiled

    def _build(self, call: Arguments, rank: int, full: tuple[bool, ...]) -> _Compiled:
        inputs = declare_inputs(call.kinds, rank, full)
        done = Translation()
        results = translate(self.kernel_source, inputs.vals, done)
        out_types = tuple(storage_type(v) for v in results)
        first = len(inputs.bindings)
        outputs = [f"@group(0) @binding({first + m}) var<storage, read_write> out{m}: "
                   f"array<{t}>;" for m, t in enumerate(out_types)]
        fields = ", ".join(f"{f}: u32" for f in ["n", *inputs.fields])
        stores = [f"out{m}[i] = {v.as_(t)};" for m, (v, t) in
                  enumerate(zip(results, out_types))]
        body = "\n".join("    " + line for line in [*inputs.lines, *done.lines, *stores])
        source = finish_source(call.device, f"kernel '{self.kernel_source.name}'", [
            f"// compiled from {self.kernel_source.name} "
            f"({self.kernel_source.filename}:{self.kernel_source.line_offset + 1})",
            f"struct Params {{ {fields} }}",
            *inputs.bindings, *outputs,
            f"@group(0) @binding({first + len(outputs)}) var<uniform> params: Params;",
            *done.helpers.values(),
            _MAIN.format(body=body),
        ])
        buffers = first + len(outputs)
        limit = call.device.limits.get("max-storage-buffers-per-shader-stage", 8)
        if buffers > limit:
            raise ValueError(f"kernel '{self.kernel_source.name}' binds {buffers} tensors "
                             f"(inputs and outputs) but the device allows {limit}; pass "
                             "fewer tensors (scalars are free) or split the kernel")
        kernel = Kernel(source, name=f"compiled/{self.kernel_source.name}")
        return _Compiled(kernel, out_types)

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor | tuple[Tensor, ...]:
        call, shape, strided, compiled = self._prepare(args, kwargs)
        outs = [Tensor.empty(shape, DTYPE_OF[t], device=call.device)
                for t in compiled.out_types]
        n = math.prod(shape)
        if n:
            kernel = compiled.kernel
            params: dict[str, Any] = {"n": n, **scalar_params(call), **strided}
            kernel.dispatch(kernel.groups_for(n), *call.tensors, *outs, **params)
        return tuple(outs) if len(outs) > 1 or self._returns_tuple else outs[0]

    @functools.cached_property
    def _returns_tuple(self) -> bool:
        node = self.kernel_source.node
        last = node.body[-1] if isinstance(node.body, list) else node.body
        return isinstance(last.value if isinstance(last, ast.Return) else last, ast.Tuple)

    def result_dtypes(self, *args: Any, **kwargs: Any) -> tuple[np.dtype, ...]:
        """The dtypes a call with these arguments returns (compiling it if needed)."""
        compiled = self._prepare(args, kwargs)[3]
        return tuple(DTYPE_OF[t] for t in compiled.out_types)

    def wgsl(self, *args: Any, **kwargs: Any) -> str:
        """The WGSL source a call with these arguments runs."""
        return self._prepare(args, kwargs)[3].kernel.source


@functools.lru_cache(maxsize=1024)  # pure; every call of a compiled kernel asks it
def _layout(shapes: tuple[tuple[int, ...], ...]
            ) -> tuple[tuple[int, ...], int, tuple[bool, ...], dict[str, int]]:
    """(result shape, collapsed rank, which tensors have the result's shape, strided_params)
    of a broadcast of `shapes` (the params dict is shared: read it, never change it)."""
    shape = broadcast_shapes(*shapes)
    dims, strides = plan(shape, list(shapes))
    full = tuple(s == shape for s in shapes)
    return shape, len(dims), full, strided_params(dims, strides, full)


def elementwise_kernel(fn: Callable[..., Any]) -> ElementwiseKernel:
    """Compile a Python function over scalars into a broadcasting GPU kernel (decorator).

    The function may use arithmetic (+ - * / // % **, unary -), comparisons, and/or/not,
    bitwise operators on integers, `a if c else b` and `where(c, a, b)`, functions of
    `math` and their numpy ufunc twins, min/max/abs/round, casts (float, int, bool,
    np.float32, ...), numbers and module-level numeric constants (math.pi), local
    assignments and calls to other such functions; it returns one value or a tuple.
    Arguments are Tensors (float32, float16, int32, uint32), numbers or numeric arrays;
    result dtypes follow numpy's promotion (see `gpustd.kernel_compiler`). Anything else
    raises KernelCompileError naming the file and line. CuPy: `cupy.ElementwiseKernel`.

    Example::

        @gpustd.elementwise_kernel
        def lerp(a, b, t):
            return a + (b - a) * t

        out = lerp(x, y, 0.25)  # x, y Tensors of broadcastable shapes
    """
    return ElementwiseKernel(fn)
