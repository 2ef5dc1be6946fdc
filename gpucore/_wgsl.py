"""Reads a WGSL module's interface: bindings, the params struct, overrides and entry points.

This is a deliberately small reader for the subset of WGSL our kernels use, not a parser:
it strips comments and matches declarations. naga remains the real validator.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["Binding", "EntryPoint", "Signature", "parse", "specialize_types"]

SCALARS = ("f32", "f16", "i32", "u32")
_SHORT_VEC = {"f": "f32", "h": "f16", "i": "i32", "u": "u32"}

_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.S)
_VAR = re.compile(
    r"((?:@\w+\s*\([^)]*\)\s*)+)var\s*<\s*(storage|uniform)\s*(?:,\s*(read_write|read))?\s*>"
    r"\s*(\w+)\s*:\s*([^;]+);"
)
_ATTR = re.compile(r"@(\w+)\s*\(([^)]*)\)")
_ALIAS = re.compile(r"\balias\s+(\w+)\s*=\s*([^;]+);")
_STRUCT = re.compile(r"\bstruct\s+(\w+)\s*\{([^}]*)\}")
_FIELD = re.compile(r"(\w+)\s*:\s*([\w<>, ]+?)\s*(?:,|$)")
_OVERRIDE = re.compile(r"\boverride\s+(\w+)\s*(?::\s*(\w+))?\s*(?:=\s*([^;]+))?;")
_WRAPPER = re.compile(r"(?:array|atomic|vec[234]|mat\dx\d)\s*<\s*(.+?)\s*(?:,\s*[\w ]+)?>")
_FN = re.compile(r"((?:@\w+(?:\s*\([^)]*\))?\s*)+)fn\s+(\w+)")


@dataclass(frozen=True)
class Binding:
    """One `var<storage|uniform>` declaration."""

    group: int
    binding: int
    name: str
    kind: str  # "storage" or "uniform"
    writable: bool
    type: str  # the declared type, aliases resolved
    scalar: str | None  # element scalar type (f32, f16, i32, u32), None if mixed/unknown

    def describe(self) -> str:
        access = "read_write" if self.writable else "read"
        return f"binding {self.binding} '{self.name}' (var<{self.kind}, {access}> {self.type})"


@dataclass(frozen=True)
class EntryPoint:
    name: str
    workgroup_size: tuple[str, ...]  # expressions, evaluated against override constants


@dataclass(frozen=True)
class Signature:
    storage: tuple[Binding, ...]  # in (group, binding) order
    params: Binding | None  # the single uniform struct, if any
    param_fields: tuple[tuple[str, str], ...]  # (name, scalar type) of the params struct
    overrides: dict[str, str | None]  # name -> default expression
    entry_points: dict[str, EntryPoint]


def _scalar_of(type_str: str, structs: dict[str, list[tuple[str, str]]]) -> str | None:
    inner = type_str.strip()
    while True:
        m = _WRAPPER.fullmatch(inner)
        if not m:
            break
        inner = m.group(1).strip()
    if inner in SCALARS:
        return inner
    m = re.fullmatch(r"(?:vec[234]|mat\dx\d)([fhiu])", inner)
    if m:
        return _SHORT_VEC[m.group(1)]
    if inner in structs:
        found = {_scalar_of(t, structs) for _, t in structs[inner]}
        return found.pop() if len(found) == 1 else None
    return None


_BYTES = {"f32": 4, "i32": 4, "u32": 4, "f16": 2}
_ARRAY = re.compile(r"array\s*<\s*(.+?)\s*(?:,\s*(\d+)u?\s*)?>")
_VEC = re.compile(r"vec([234])\s*<\s*(\w+)\s*>|vec([234])([fhiu])")


def _size_align(type_str: str) -> tuple[int, int] | None:
    """WGSL's (SizeOf, AlignOf) of a scalar, vector, atomic or array of those; None for
    what this reader does not lay out (structs, matrices, sizes named by constants)."""
    inner = type_str.strip()
    atomic = re.fullmatch(r"atomic\s*<\s*(\w+)\s*>", inner)
    if atomic:
        inner = atomic.group(1)
    if inner in _BYTES:
        return _BYTES[inner], _BYTES[inner]
    vec = _VEC.fullmatch(inner)
    if vec:
        n = int(vec.group(1) or vec.group(3))
        scalar = vec.group(2) or _SHORT_VEC[vec.group(4)]
        if scalar not in _BYTES:
            return None
        return n * _BYTES[scalar], (2 if n == 2 else 4) * _BYTES[scalar]
    array = _ARRAY.fullmatch(inner)
    if array:
        element = _size_align(array.group(1))
        if element is None:
            return None
        size, align = element
        stride = -(-size // align) * align
        return stride * int(array.group(2) or 1), align
    return None


def min_binding_size(type_str: str) -> int:
    """The fewest bytes a buffer bound to a variable of this type may have (WebGPU's
    minimum binding size: one element of a runtime-sized array); 0 where `_size_align`
    does not know the type (wgpu checks it then, when the batch is submitted)."""
    found = _size_align(type_str)
    return found[0] if found else 0


def _resolve(type_str: str, aliases: dict[str, str]) -> str:
    def sub(m: re.Match[str]) -> str:
        return aliases.get(m.group(0), m.group(0))

    for _ in range(4):  # aliases of aliases
        type_str = re.sub(r"\b\w+\b", sub, type_str)
    return type_str.strip()


_PARTS = re.compile(r"^//!\s*parts:\s*(.+)$", re.M)


def declared_parts(source: str) -> list[tuple[str, ...]]:
    """The alternatives a main shader's `//! parts: a | b + c` line names (one is appended:
    a, or b and c together)."""
    found = _PARTS.search(source)
    if found is None:
        return []
    return [tuple(p.strip() for p in alt.split("+")) for alt in found.group(1).split("|")]


def strip_comments(source: str) -> str:
    return _COMMENT.sub(lambda m: re.sub(r"[^\n]", " ", m.group(0)), source)


def parse(source: str) -> Signature:
    """Read the interface of a WGSL module (see module docstring)."""
    code = strip_comments(source)
    aliases = {name: value.strip() for name, value in _ALIAS.findall(code)}
    structs = {
        name: [(f, _resolve(t, aliases)) for f, t in _FIELD.findall(body.strip())]
        for name, body in _STRUCT.findall(code)
    }
    storage: list[Binding] = []
    uniforms: list[Binding] = []
    for attrs, kind, access, name, type_str in _VAR.findall(code):
        attr = dict(_ATTR.findall(attrs))
        resolved = _resolve(type_str, aliases)
        b = Binding(
            group=int(attr.get("group", 0)),
            binding=int(attr["binding"]),
            name=name,
            kind=kind,
            writable=access == "read_write",
            type=resolved,
            scalar=_scalar_of(resolved, structs),
        )
        (storage if kind == "storage" else uniforms).append(b)
    if len(uniforms) > 1:
        raise ValueError("a kernel may declare at most one var<uniform> (its params struct)")
    params = uniforms[0] if uniforms else None
    fields: tuple[tuple[str, str], ...] = ()
    if params is not None:
        if params.type not in structs:
            raise ValueError(f"var<uniform> {params.name} must have a struct type")
        for fname, ftype in structs[params.type]:
            if ftype not in ("f32", "i32", "u32"):
                raise ValueError(
                    f"params field {fname}: {ftype} is not supported; use f32, i32 or u32"
                )
        fields = tuple(structs[params.type])
    overrides = {n: (d.strip() if d else None) for n, _t, d in _OVERRIDE.findall(code)}
    entries = {}
    for attrs, fname in _FN.findall(code):
        if "@compute" in attrs:
            wg = dict(_ATTR.findall(attrs)).get("workgroup_size", "1")
            entries[fname] = EntryPoint(fname, tuple(x.strip() for x in wg.split(",")))
    return Signature(
        storage=tuple(sorted(storage, key=lambda b: (b.group, b.binding))),
        params=params,
        param_fields=fields,
        overrides=overrides,
        entry_points=entries,
    )


def specialize_types(source: str, types: dict[str, str], shader: str) -> str:
    """Rebind `alias NAME = ...;` declarations (the element-type template), adding
    `enable f16;` when f16 appears. WGSL `override` cannot change a type, hence this."""
    for name, wgsl_type in types.items():
        pattern = re.compile(rf"\balias\s+{re.escape(name)}\s*=\s*[^;]+;")
        # match in code only (comments blanked, offsets kept), then splice the real source
        found = pattern.search(strip_comments(source))
        if not found:
            raise ValueError(f"shader {shader} has no `alias {name} = ...;` to specialize")
        source = f"{source[:found.start()]}alias {name} = {wgsl_type};{source[found.end():]}"
    uses_f16 = re.search(r"\bf16\b|vec[234]h\b", strip_comments(source))
    if uses_f16 and not re.search(r"\benable\s+f16\s*;", source):
        source = "enable f16;\n" + source
    return source


def evaluate(expr: str, constants: dict[str, float], overrides: dict[str, str | None]) -> int:
    """Evaluate a workgroup-size expression made of integers, override names and + - * /.

    Names resolve to `constants` first, then to the overrides' defaults (recursively).
    """
    text = re.sub(r"(\d+)[ui]\b", r"\1", expr)
    if not re.fullmatch(r"[\w\s+\-*/()]+", text):
        raise ValueError(f"cannot evaluate workgroup size expression {expr!r}")
    names: dict[str, float] = {}
    for name in set(re.findall(r"[A-Za-z_]\w*", text)):
        if name in constants:
            names[name] = constants[name]
        elif overrides.get(name) is not None:
            names[name] = evaluate(overrides[name] or "", constants, overrides)
        else:
            raise ValueError(f"workgroup size uses {name!r}, which has no value: pass it in "
                             "constants=")
    return int(eval(text, {"__builtins__": {}}, names))
