"""`reduction_kernel`: map each element of a broadcast, fold one axis run, post-map.

The broadcast shape is viewed as (outer, len, inner) around the reduced axes. One pass gives
each workgroup of WG lanes a chunk of up to WG * ITEMS rows of one (outer, inner) column:
lanes fold rows WG apart serially, then meet in a tree. Passes repeat over the
(outer, chunks, inner) partials until one chunk is left, so a long axis stays parallel. The
map runs in the first pass only and the post-map in the last, so nothing but partials ever
goes to memory. A custom combine must be associative and commutative: the lanes see rows
out of order.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable
from typing import Any

from gpucore import Kernel

from .._broadcast import broadcast_shapes, plan
from .._reduce import kept_shape, normalize_axes, view
from .._tensor import Tensor
from ._codegen import classify, declare_inputs, finish_source, scalar_params, strided_params
from ._elementwise import storage_type
from ._source import KernelSource, parse_function
from ._translate import Translation, translate
from ._types import DTYPE_OF, Val, concrete, literal, weak

__all__ = ["ReductionKernel", "reduction_kernel"]

WG, ITEMS = 128, 8
_BUILTIN = {"sum": "(x + y)", "prod": "(x * y)", "max": "max(x, y)", "min": "min(x, y)"}
_IDENTITY: dict[str, dict[str, float | int]] = {
    "sum": {"f32": 0.0, "i32": 0, "u32": 0}, "prod": {"f32": 1.0, "i32": 1, "u32": 1},
    "max": {"f32": -math.inf, "i32": -(2**31), "u32": 0},
    "min": {"f32": math.inf, "i32": 2**31 - 1, "u32": 2**32 - 1},
}
_MAIN = """
override WG: u32 = {wg}u;
var<workgroup> partial: array<Acc, WG>;

@compute @workgroup_size(WG)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
        @builtin(local_invocation_index) lid: u32) {{
    let g = wid.y * nwg.x + wid.x;
    if (g >= params.outer * params.chunks * params.tiles) {{
        return;
    }}
    let col = (g % params.tiles) * params.wx + lid % params.wx;
    let row = lid / params.wx;
    let c = (g / params.tiles) % params.chunks;
    let o = g / (params.tiles * params.chunks);
    let start = c * params.chunk;
    let stop = min(start + params.chunk, params.len);
    var acc = {identity};
    if (col < params.inner) {{
        for (var l = start + row; l < stop; l += params.wy) {{
            acc = combine(acc, load(o * params.s_outer + l * params.s_len
                                    + col * params.s_inner));
        }}
    }}
    partial[lid] = acc;
    workgroupBarrier();
    for (var s = params.wy / 2u; s > 0u; s >>= 1u) {{
        if (row < s) {{
            partial[lid] = combine(partial[lid], partial[lid + s * params.wx]);
        }}
        workgroupBarrier();
    }}
    if (row == 0u && col < params.inner) {{
        out[(o * params.chunks + c) * params.inner + col] = {store};
    }}
}}"""


def _layout(outer: int, length: int, inner: int) -> dict[str, int]:
    """One pass's geometry: WG lanes as wx columns by wy rows, and the strides."""
    if inner == 1:
        # Independent rows become columns, so short rows still fill the workgroup.
        outer, inner, strides = 1, outer, (0, 1, length)
    else:
        strides = (length * inner, inner, 1)
    wy = min(WG, 1 << (max(length, 1) - 1).bit_length())
    wx = WG // wy
    chunks = max(1, math.ceil(length / (wy * ITEMS)))
    return {"outer": outer, "len": length, "inner": inner, "s_outer": strides[0],
            "s_len": strides[1], "s_inner": strides[2], "chunk": wy * ITEMS,
            "chunks": chunks, "tiles": math.ceil(inner / wx), "wx": wx, "wy": wy}


class ReductionKernel:
    """A compiled map-reduce: `post(reduce(map(*args)))` along axes of the broadcast.

    Call as `k(*args, axis=None, keepdims=False)`; axis is None (everything), an int or a
    tuple of adjacent axes. numpy: `np.add.reduce(map(...), axis)` and friends; CuPy:
    `cupy.ReductionKernel`.
    """

    def __init__(self, fn: Callable[..., Any], reduce: str | Callable[..., Any],
                 identity: float | None, post: Callable[..., Any] | None) -> None:
        self.kernel_source: KernelSource = parse_function(fn)
        if {"axis", "keepdims"} & set(self.kernel_source.params):
            raise ValueError("a reduction kernel's parameters cannot be named axis or "
                             "keepdims (the call takes those)")
        if isinstance(reduce, str):
            if reduce not in _BUILTIN:
                raise ValueError(f"reduce={reduce!r}: use one of {sorted(_BUILTIN)} or a "
                                 "function of two values")
        elif identity is None:
            raise ValueError("a custom reduce function needs identity= (the value that "
                             "leaves any x unchanged: reduce(identity, x) == x)")
        self.reduce, self.identity = reduce, identity
        self._combine = None if isinstance(reduce, str) else parse_function(reduce)
        self._post = None if post is None else parse_function(post)
        if self._combine is not None and len(self._combine.params) != 2:
            raise TypeError(f"reduce function '{self._combine.name}' must take two values")
        if self._post is not None and len(self._post.params) not in (1, 2):
            raise TypeError(f"post function '{self._post.name}' must take (value) or "
                            "(value, n)")
        self._signature = inspect.signature(fn)
        self._compiled: dict[tuple, dict[tuple[bool, bool], Kernel]] = {}
        self._types: dict[tuple, tuple[str, str]] = {}
        functools.update_wrapper(self, fn)

    @property
    def compile_count(self) -> int:
        """How many signatures have been compiled so far (each has up to 4 pass kinds)."""
        return len(self._compiled)

    def _source(self, call: Any, rank: int, full: tuple[bool, ...], first: bool,
                final: bool) -> tuple[str, str, str]:
        """(WGSL, accumulator type, output type) of one pass kind."""
        inputs = declare_inputs(call.kinds, rank, full, index="e")
        mapped = Translation()
        results = translate(self.kernel_source, inputs.vals, mapped)
        if len(results) != 1:
            raise self.kernel_source.error(self.kernel_source.node, "several return values",
                                           "a reduction's map returns one value")
        kind = concrete(results[0].type)
        acc = {"bool": "i32", "f16": "f32"}.get(kind, kind)
        helpers = Translation()
        combine = self._combine_fn(acc, helpers)
        out_type, post = self._post_fn(acc, kind, helpers)
        if first:
            load = "\n".join(["fn load(e: u32) -> Acc {", *("    " + s for s in
                              [*inputs.lines, *mapped.lines]),
                              f"    return {results[0].as_(acc)};", "}"])
            bindings = inputs.bindings
            fields = inputs.fields
        else:
            load = "fn load(e: u32) -> Acc {\n    return part[e];\n}"
            bindings = ["@group(0) @binding(0) var<storage, read> part: array<Acc>;"]
            fields = []
        result = out_type if final else acc
        names = [*_layout(1, 1, 1), "count", *fields]
        parts = [f"// compiled from {self.kernel_source.name} (reduction pass)",
                 f"alias Acc = {acc};",
                 "struct Params { " + ", ".join(f"{f}: u32" for f in names) + " }",
                 *bindings,
                 f"@group(0) @binding({len(bindings)}) var<storage, read_write> out: "
                 f"array<{result}>;",
                 f"@group(0) @binding({len(bindings) + 1}) var<uniform> params: Params;",
                 *{**mapped.helpers, **helpers.helpers}.values(), combine, load]
        if final:
            parts.append(post)
        store = "post(partial[lid], params.count)" if final else "partial[lid]"
        identity = self._identity(acc)
        parts.append(_MAIN.format(wg=WG, identity=identity, store=store))
        source = finish_source(call.device, f"kernel '{self.kernel_source.name}'", parts)
        return source, acc, out_type

    def _identity(self, acc: str) -> str:
        if isinstance(self.reduce, str):
            return literal(_IDENTITY[self.reduce][acc], acc)
        assert self.identity is not None
        try:
            return literal(self.identity, acc)
        except (OverflowError, TypeError) as exc:
            raise ValueError(f"identity={self.identity!r} for a {acc} reduction: {exc}") \
                from None

    def _combine_fn(self, acc: str, out: Translation) -> str:
        head = "fn combine(x: Acc, y: Acc) -> Acc {"
        if self._combine is None:
            return f"{head}\n    return {_BUILTIN[str(self.reduce)]};\n}}"
        (value,) = self._single(self._combine, [Val(acc, "x"), Val(acc, "y")], out)
        return "\n".join([head, *("    " + s for s in out.lines),
                          f"    return {value.as_(acc)};", "}"])

    def _post_fn(self, acc: str, kind: str, out: Translation) -> tuple[str, str]:
        out.lines = []
        if self._post is None:
            t = "i32" if kind == "bool" else kind
            return t, f"fn post(v: Acc, count: u32) -> {t} {{\n    return {t}(v);\n}}"
        count = weak("int", Val("u32", "count").as_)
        args = [Val(acc, "v"), count][:len(self._post.params)]
        (value,) = self._single(self._post, args, out)
        t = storage_type(value)
        if kind == "f16" and t == "f32":
            t = "f16"  # float16 in, float16 out; the post-map itself ran in f32
        return t, "\n".join([f"fn post(v: Acc, count: u32) -> {t} {{",
                             *("    " + s for s in out.lines),
                             f"    return {value.as_(t)};", "}"])

    @staticmethod
    def _single(src: KernelSource, args: list[Val], out: Translation) -> list[Val]:
        values = translate(src, args, out)
        if len(values) != 1:
            raise src.error(src.node, "several return values", "return one value")
        return values

    def __call__(self, *args: Any, axis: Any = None, keepdims: bool = False) -> Tensor:
        call = classify(list(self._signature.bind(*args).args), self.kernel_source.name)
        shapes = [t.shape for t in call.tensors]
        shape = broadcast_shapes(*shapes)
        axes = normalize_axes(axis, len(shape))
        if axes and axes != tuple(range(axes[0], axes[-1] + 1)):
            raise ValueError(f"axis={axis!r}: a reduction kernel reduces adjacent axes; "
                             "call it once per run of axes")
        outer, length, inner = view(shape, axes[0], axes[-1] + 1) if axes else (
            math.prod(shape), 1, 1)
        dims, strides = plan(shape, shapes)
        full = tuple(s == shape for s in shapes)
        key = (call.kinds, len(dims), full)
        variants = self._compiled.setdefault(key, {})

        def kernel(first: bool, final: bool) -> Kernel:
            if (first, final) not in variants:
                source, acc, out = self._source(call, len(dims), full, first, final)
                self._types[key] = (acc, out)
                variants[first, final] = Kernel(source, name=f"compiled/{self.kernel_source.name}")
            return variants[first, final]

        kernel(True, True)  # the types come from the first variant built
        acc, out_type = self._types[key]
        result_shape = kept_shape(shape, axes, keepdims)
        count = length
        if outer * inner == 0:
            return Tensor.empty(result_shape, DTYPE_OF[out_type], device=call.device)
        x: Tensor | None = None
        while True:
            geo = _layout(outer, length, inner)
            final = geo["chunks"] == 1
            k = kernel(x is None, final)
            size = geo["outer"] * geo["chunks"] * geo["inner"]
            out = Tensor.empty((size,), DTYPE_OF[out_type if final else acc], device=call.device)
            params: dict[str, Any] = {"count": count, **geo}
            if x is None:
                params.update({**scalar_params(call), **strided_params(dims, strides, full)})
            k.dispatch(geo["outer"] * geo["chunks"] * geo["tiles"],
                       *(call.tensors if x is None else [x]), out, **params)
            if final:
                return out.reshape(result_shape)
            # partials are (outer, chunks, inner) of this pass's view
            x, outer, length, inner = out, geo["outer"], geo["chunks"], geo["inner"]


def reduction_kernel(fn: Callable[..., Any] | None = None, *,
                     reduce: str | Callable[..., Any] = "sum", identity: float | None = None,
                     post: Callable[..., Any] | None = None) -> Any:
    """Compile a map-reduce from Python functions (decorator, with or without arguments).

    The decorated function maps the (broadcast) arguments to one value per element, in
    `elementwise_kernel`'s language; `reduce` folds the values: 'sum', 'prod', 'max',
    'min' or a function of two values (then `identity=` is required); `post(value)` or
    `post(value, n)` (n = number of elements reduced) maps each result. Floats accumulate
    in float32; the result dtype is the map's (post's, if given), float16 staying float16.
    CuPy: `cupy.ReductionKernel`; numpy: `post(np.sum(map(...), axis))`.

    Example::

        @gpustd.reduction_kernel(post=lambda s, n: math.sqrt(s / n))
        def rms(x):
            return x * x

        rms(t, axis=-1)  # root mean square of each row
    """
    if fn is None:
        return functools.partial(reduction_kernel, reduce=reduce, identity=identity,
                                 post=post)
    return ReductionKernel(fn, reduce, identity, post)
