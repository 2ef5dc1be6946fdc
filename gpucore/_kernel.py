"""Kernel: a WGSL compute entry point, its checked signature, and dispatch."""

from __future__ import annotations

import contextlib
import hashlib
import math
import re
from collections.abc import Callable, Hashable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any

from . import _build_devices, _wgsl
from ._build_devices import layout_entries
from ._device import Device, Pipeline
from ._dtypes import wgsl_scalar
from ._errors import BindingError, ShaderCompileError
from ._kernel_args import ParamsStruct, StorageBindings, check_numbering, fold_grid
from ._phases import phase
from ._runtime import GPU_ERRORS, adapt_source
from ._shaders import shader_source

__all__ = ["Kernel", "begin_only", "fold_grid"]

_BEGUN_ERRORS: tuple[type[BaseException], ...] = (*GPU_ERRORS, RuntimeError)
_LOCATION = re.compile(r"(?:wgsl|WGSL: ):(\d+):(\d+)")  # naga's, then Tint's (Dawn) form
_MESSAGE = re.compile(r"Shader (?:'[^']*' )?(?:parsing |validation )?error: ([^\n]*)")
_loaded: dict[tuple, Kernel] = {}  # Kernel.cached's and Kernel.generated's store
_given: dict[tuple, Kernel] = {}  # Kernel.cached's by its arguments as given
_begin_only: ContextVar[Device | None] = ContextVar("gpucore_begin_only", default=None)


@contextlib.contextmanager
def begin_only(device: Device) -> Iterator[None]:
    """Inside, a Kernel's dispatch on `device` only begins its kernel's build (as a dispatch
    does first: in the background where `device.builds_later`, else in place) and records
    nothing: a workload run inside begins what its first real run will need, e.g. a VAE
    decoder's kernels while the UNet's build. Nothing it dispatches is computed: what it
    returns or writes is not its result (copies, uploads and read-backs still run). The
    buffers it left idle in the pool are freed after it: its activations' sizes are the
    workload's, not what runs next, and would only sit beside it."""
    idle = device.pool.idle_ids()
    token = _begin_only.set(device)
    try:
        yield
    finally:
        _begin_only.reset(token)
        device.ledger.drop_idle(only=device.pool.idle_ids() - idle)


def _wgsl_types(types: Mapping[str, Any] | None) -> dict[str, str]:
    """`types` with numpy dtypes (np.float16, np.dtype("float32")) as WGSL scalar names;
    strings ("f32", "vec4<T>", another alias's name) stay as written."""
    return {alias: t if isinstance(t, str) else wgsl_scalar(t)
            for alias, t in (types or {}).items()}


class Kernel:
    """One compute entry point of a WGSL module.

    `Kernel.load("core/vector_add")` reads `core/vector_add.wgsl` from the registered shader
    roots (gpucore._shaders: gpustd registers the `shaders` package);
    `Kernel(source, name=...)` takes the text. `constants` sets WGSL `override`s;
    `types` rebinds `alias T = ...;` declarations (the only textual specialization), each
    to WGSL text or a numpy dtype (`{"T": np.float16}` is `{"T": "f16"}`). Ops get theirs
    from `Kernel.cached` (a shader file) or `Kernel.generated` (generated WGSL), built once.

    Storage bindings are passed positionally in binding order; the fields of the (single)
    `var<uniform>` params struct are passed as keywords::

        k = Kernel.load("core/vector_add")
        k.dispatch(k.groups_for(n), a, b, out, n=n)
    """

    def __init__(
        self,
        source: str,
        *,
        name: str = "<string>",
        entry: str = "main",
        constants: dict[str, float] | None = None,
        types: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = name
        self.entry = entry
        self.constants = dict(constants or {})
        self.source = _wgsl.specialize_types(source, _wgsl_types(types), name) if types else source
        self.signature = _wgsl.parse(self.source)
        # A missing entry point is reported at compile time, after naga has had its say:
        # a syntax error usually hides the entry point from our reader too.
        found = self.signature.entry_points.get(entry)
        unknown = set(self.constants) - set(self.signature.overrides)
        if unknown:
            raise BindingError(
                f"shader {name} has no override constant(s) {sorted(unknown)}; "
                f"it declares {sorted(self.signature.overrides) or 'none'}"
            )
        sizes = found.workgroup_size if found else ("1",)
        self.workgroup_size = tuple(
            _wgsl.evaluate(e, self.constants, self.signature.overrides) for e in sizes
        ) + (1,) * (3 - len(sizes))
        self.label = f"{name.removesuffix('.wgsl')}:{entry}"
        self._params = ParamsStruct(self.label, self.signature.param_fields)
        self._buffers = StorageBindings(self.label, self.signature.storage)
        check_numbering(name, self.signature)
        digest = hashlib.sha1(self.source.encode()).hexdigest()
        self._key = (digest, entry, tuple(sorted(self.constants.items())))

    @classmethod
    def load(cls, name: str, *, parts: tuple[str, ...] = (), **kwargs: Any) -> Kernel:
        """The kernel in the file `<name>.wgsl` of the first shader root that has it
        (`gpucore.register_shader_root`).

        `parts` appends other shader files (functions without an entry point) — the way to
        pick between variants WGSL cannot select at compile time, such as a subgroup path and
        its fallback. The main file names its alternatives in a `//! parts:` line.
        """
        base = name.removesuffix(".wgsl")
        source = "\n".join([shader_source(base), *(shader_source(p) for p in parts)])
        return cls(source, name=base + ".wgsl", **kwargs)

    @classmethod
    def cached(cls, name: str, *, parts: tuple[str, ...] = (), entry: str = "main",
               constants: dict[str, float] | None = None,
               types: Mapping[str, Any] | None = None) -> Kernel:
        """`Kernel.load` built once per distinct set of arguments (reading and parsing the
        WGSL is host work no op should repeat per call). Ops call this on every use."""
        # the arguments as given first (no normalizing: an op asks the same way each time)
        given = (name, parts, entry, tuple(constants.items()) if constants else (),
                 tuple(types.items()) if types else ())
        try:
            return _given[given]
        except (KeyError, TypeError):  # TypeError: unhashable (a list of parts, say)
            pass
        wgsl_types = _wgsl_types(types)
        key = (name, tuple(parts), entry, tuple(sorted((constants or {}).items())),
               tuple(sorted(wgsl_types.items())))
        found = _loaded.get(key)
        if found is None:
            found = _loaded[key] = cls.load(name, parts=parts, entry=entry,
                                            constants=constants, types=wgsl_types)
        with contextlib.suppress(TypeError):
            _given[given] = found
        return found

    @classmethod
    def generated(cls, name: str, generate: Callable[..., str], *args: Hashable,
                  entry: str = "main", constants: dict[str, float] | None = None) -> Kernel:
        """The kernel of the WGSL `generate(*args)` returns, generated and built once per
        distinct (name, generate, args, entry, constants): the Kernel.cached of code
        generators, e.g. ``Kernel.generated("linalg/gemm_subgroup_matrix", source, tile,
        trans_a, trans_b)``. `name` labels it in errors and profiles."""
        key = (name, generate, args, entry, tuple(sorted((constants or {}).items())))
        found = _loaded.get(key)
        if found is None:
            found = _loaded[key] = cls(generate(*args), name=name, entry=entry,
                                       constants=constants)
        return found

    def __repr__(self) -> str:
        return f"<Kernel {self.label} workgroup_size={self.workgroup_size}>"

    # -- compilation ------------------------------------------------------------------
    def compile(self, device: Device) -> Pipeline:
        """(pipeline, bind group layout) on `device`; compiled once per device and cached."""
        return device.pipeline(self._key, lambda: self._build(device))

    def build_ahead(self, device: Device, *, begin: bool = False) -> None:
        """Compile on `device` now, not noted as used (gpucore._warmup); `begin`: begun only."""
        if begin:
            device.pipelines.begin(self._key, lambda: self._begin(device),
                                   lambda: self._build(device), use=False)
        else:
            device.pipelines.get(self._key, lambda: self._build(device), use=False)

    def _build(self, device: Device) -> Pipeline:
        with phase("compile"):
            built = self._build_pipeline(device)
        device.pipelines.note(self._key, (self.source, self.name, self.entry, self.constants))
        return built

    def compile_begun(self, device: Device) -> tuple[Any, Any]:
        """`compile`, but where `device.builds_later` a pipeline not built yet is begun in the
        background, a gpucore Pending in its place (the dispatch records it; _pipelines)."""
        if not device.builds_later:
            return self.compile(device)
        return device.pipelines.begin(self._key, lambda: self._begin(device),
                                      lambda: self._build(device))

    def _begin(self, device: Device) -> tuple[Callable[[], Any], Any]:
        with phase("compile"):
            descriptor, layout = self._describe(device)
            wait = _build_devices.begin(device, descriptor, self.source, self._entries())
        device.pipelines.note(self._key, (self.source, self.name, self.entry, self.constants))

        def finish() -> Any:
            try:
                return wait()
            except _BEGUN_ERRORS as exc:
                raise self._compile_error(exc) from None

        return finish, layout

    def _build_pipeline(self, device: Device) -> Pipeline:
        descriptor, layout = self._describe(device)
        try:
            pipeline = device.wgpu.create_compute_pipeline(**descriptor)
        except GPU_ERRORS as exc:
            raise self._compile_error(exc) from None
        return pipeline, layout

    def _describe(self, device: Device) -> tuple[dict[str, Any], Any]:
        """The shader module (compiled now: its errors are raised here), the checks, and
        create_compute_pipeline's arguments with the bind group layout."""
        dev = device.wgpu
        try:
            module = dev.create_shader_module(
                label=self.name, code=adapt_source(device.info.runtime, self.source))
        except GPU_ERRORS as exc:
            raise self._compile_error(exc) from None
        if self.entry not in self.signature.entry_points:
            found = ", ".join(self.signature.entry_points) or "none"
            raise BindingError(
                f"shader {self.name} has no @compute entry point {self.entry!r} (found: {found})"
            )
        # wgpu-native checks a literal @workgroup_size against the limits, not one set by an
        # override (constants=): that one reaches the driver, undefined beyond its limits.
        what = f"{self.label}'s workgroup size {self.workgroup_size}"
        for axis, size in zip("xyz", self.workgroup_size):
            device.check_limit(f"max-compute-workgroup-size-{axis}", size, what)
        device.check_limit("max-compute-invocations-per-workgroup",
                           math.prod(self.workgroup_size), what)
        layout = dev.create_bind_group_layout(entries=self._entries())
        descriptor = {"label": self.label,
                      "layout": dev.create_pipeline_layout(bind_group_layouts=[layout]),
                      "compute": {"module": module, "entry_point": self.entry,
                                  "constants": self.constants}}
        return descriptor, layout

    def _entries(self) -> list[dict[str, Any]]:
        return layout_entries(self.signature.storage, self.signature.params is not None)

    def _compile_error(self, exc: BaseException) -> ShaderCompileError:
        text = str(exc)
        m = _LOCATION.search(text)
        found = _MESSAGE.search(text)
        notes = [ln.strip()[1:].strip() for ln in text.splitlines() if ln.strip().startswith("= ")]
        message = "; ".join([found.group(1).strip(), *notes]) if found else text.strip()
        line, col = (int(m.group(1)), int(m.group(2))) if m else (None, None)
        return ShaderCompileError(self.name, line, col, message)

    # -- dispatch ---------------------------------------------------------------------
    def groups_for(self, n: int) -> int:
        """Workgroups needed to give each of `n` items one invocation along x."""
        return math.ceil(n / self.workgroup_size[0])

    def dispatch(
        self, workgroups: int | tuple[int, ...], *buffers: Any, device: Device | None = None,
        **params: Any,
    ) -> None:
        """Check the arguments against the WGSL signature, then record the dispatch.

        Nothing is submitted: reads, writes and `synchronize()` submit the batch.
        """
        bufs = self._buffers.check(buffers)
        data = self._params.pack(params)
        device = device or (bufs[0].device if bufs else None)
        if device is None:
            raise BindingError(f"{self.label} has no buffers: pass device=")
        if bufs and bufs[0].device is not device:
            raise BindingError(f"{self.label}: device= is {device.info.label} but the buffers "
                               f"are on {bufs[0].device.info.label}; dispatch on the buffers' "
                               "device (copy the data over through the host first)")
        grid = fold_grid(workgroups, device.limits["max-compute-workgroups-per-dimension"])
        pipeline, layout = self.compile_begun(device)
        if 0 in grid or _begin_only.get() is device:
            return
        if self._buffers.least:
            self._buffers.check_least(bufs)
        device.record_dispatch(
            pipeline, layout, [(b.wgpu, 0, b.size) for b in bufs], data, grid, self.label
        )
