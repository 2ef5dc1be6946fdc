"""Discovering adapters (of every runtime: wgpu-native, and Dawn where installed) and
choosing one."""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
from dataclasses import dataclass, field

import wgpu
from wgpu.classes import GPUAdapter

from . import _cache, _cffi_types, _runtime
from ._errors import GpuError, NoAdapterError
from ._runtime import Adapter, MatrixConfig

__all__ = ["AdapterInfo", "choose_adapter", "devices"]

OPTIONAL_FEATURES = ("shader-f16", "subgroup", "timestamp-query")
_BACKENDS = {"vulkan": "vulkan", "metal": "metal", "d3d12": "dx12", "dx12": "dx12",
             "opengl": "gl", "opengles": "gl", "gl": "gl"}
_TYPES = {"discretegpu": "discrete", "integratedgpu": "integrated", "cpu": "cpu",
          "virtualgpu": "virtual"}
_TYPE_RANK = {"discrete": 0, "integrated": 1, "virtual": 2, "cpu": 3}
_BACKEND_RANK = {"vulkan": 0, "metal": 0, "dx12": 1, "gl": 2}

# Why Dawn listed no adapter (it prints its reasons to stderr too); `gpucore info` shows it.
dawn_problem: str | None = None


@dataclass(frozen=True)
class AdapterInfo:
    """One adapter a runtime can see: what it is and what it can do.

    `index` counts across runtimes (wgpu-native's adapters first, then Dawn's), so it names
    one adapter whatever GPUCORE_RUNTIME says. `matrix_configs` lists the subgroup-matrix
    shapes the adapter runs on its matrix units (Dawn only); a Device opened on it can use
    them (it requests the feature).
    """

    index: int
    backend: str  # vulkan | metal | dx12 | gl
    name: str
    type: str  # discrete | integrated | virtual | cpu | unknown
    driver: str
    features: frozenset[str]
    limits: dict[str, int] = field(repr=False)
    adapter: Adapter = field(repr=False, compare=False)
    runtime: str = "wgpu"  # wgpu (wgpu-native) | dawn
    matrix_configs: tuple[MatrixConfig, ...] = field(default=(), repr=False)

    @property
    def label(self) -> str:
        prefix = "" if self.runtime == "wgpu" else f"{self.runtime}-"
        return f"{prefix}{self.backend}:{self.index}:{self.name}"

    def matrix_config(self, component: str, result: str, m: int = 16, n: int = 16,
                      k: int = 16) -> MatrixConfig | None:
        """The subgroup-matrix config of these types and shape, or None."""
        return self._configs.get((component, result, m, n, k))

    @functools.cached_property
    def _configs(self) -> dict[tuple[str, str, int, int, int], MatrixConfig]:
        """matrix_configs by (component, result, m, n, k), the first of each (every GEMM
        asks)."""
        found: dict[tuple[str, str, int, int, int], MatrixConfig] = {}
        for c in self.matrix_configs:
            found.setdefault((c.component, c.result, c.m, c.n, c.k), c)
        return found

    def with_emulated_matrices(self) -> AdapterInfo:
        """This wgpu-native adapter reporting emulated subgroup-matrix configs: a Device opened
        on it takes the ops' matrix-unit plans, their kernels lowered to plain WGSL
        (gpucore._matrix_emulation; slow, for tests and as a fallback). It needs shader-f16
        and subgroups. GPUCORE_EMULATE_MATRIX=1 does this to every such adapter."""
        configs = _runtime.emulated_configs(self.features) if self.runtime == "wgpu" else ()
        if not configs:
            raise GpuError(f"{self.label} cannot emulate subgroup matrices: that needs a "
                           "wgpu-native adapter with shader-f16 and subgroups")
        return dataclasses.replace(self, features=self.features | {"subgroup-matrix"},
                                   matrix_configs=configs)


def _os_setup() -> None:
    # Mesa's EGL (the OpenGL adapter) warns loudly without it; harmless to provide.
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")
    _cache.point_driver_caches()  # before any driver starts: they read it once
    _cffi_types.install()  # before wgpu and wgpudawn parse their headers


def _describe(runtime: _runtime.Runtime, adapter: GPUAdapter, index: int,
              position: int) -> AdapterInfo:
    info = adapter.info
    backend = str(info.get("backend_type", "")).lower()
    kind = str(info.get("adapter_type", "")).lower()
    features = runtime.canonical_features(adapter.features)
    configs = runtime.matrix_configs(adapter)
    return AdapterInfo(
        index=index,
        backend=_BACKENDS.get(backend, backend or "unknown"),
        name=str(info.get("device", "")) or "unknown",
        type=_TYPES.get(kind, kind or "unknown"),
        driver=str(info.get("description", "")),
        features=features | ({"subgroup-matrix"} if configs else set()),
        limits=dict(adapter.limits),
        adapter=runtime.wrap(adapter, position),
        runtime=runtime.name,
        matrix_configs=configs,
    )


def _runtimes_for(runtime: str | None) -> tuple[str, ...]:
    chosen = runtime or _runtime.requested_runtime()
    if chosen in ("all", "auto"):
        return _runtime.RUNTIMES
    if chosen not in _runtime.RUNTIMES:
        raise ValueError(f"unknown runtime {chosen!r}: one of {(*_runtime.RUNTIMES, 'all')}")
    return (chosen,)


def devices(runtime: str | None = None) -> list[AdapterInfo]:
    """Every adapter of the runtime(s) in effect: `runtime` 'wgpu', 'dawn' or 'all' (every
    one installed); by default GPUCORE_RUNTIME's ('wgpu' when unset, both for 'auto').
    Indices are stable: wgpu-native's adapters are always counted first."""
    global dawn_problem
    _os_setup()
    wanted = _runtimes_for(runtime)
    native = wgpu.gpu.enumerate_adapters_sync()
    native_runtime = _runtime.load("wgpu")
    assert native_runtime is not None
    found = [_describe(native_runtime, a, i, i) for i, a in enumerate(native)] \
        if "wgpu" in wanted else []
    if "dawn" in wanted:
        dawn = _runtime.load("dawn", required=(runtime or _runtime.requested_runtime())
                             == "dawn")
        if dawn is not None:
            try:
                listed = dawn.enumerate_adapters()
            except Exception as exc:  # an alpha dependency: report it, keep wgpu-native
                dawn_problem = f"{type(exc).__name__}: {exc}"
                print(f"gpucore: Dawn failed to list adapters ({dawn_problem})", file=sys.stderr)
                listed = []
            else:
                dawn_problem = None if listed else (
                    "Dawn found no adapter it can run (it needs Vulkan 1.1 features that "
                    "Mesa 22's lavapipe lacks, Metal or D3D12)")
            found += [_describe(dawn, a, len(native) + i, i) for i, a in enumerate(listed)]
    return found


def choose_adapter(backend: str | None = None, adapter: int | str | None = None,
                   runtime: str | None = None) -> AdapterInfo:
    """Pick an adapter: explicit arguments, then env GPUCORE_BACKEND / GPUCORE_ADAPTER /
    GPUCORE_RUNTIME, then the best present (discrete > integrated > cpu; Vulkan/Metal >
    DX12 > GL). An adapter index names one adapter of any runtime; `runtime='auto'` prefers
    a Dawn adapter with subgroup matrices (tensor cores), else wgpu-native's best."""
    backend = backend or os.environ.get("GPUCORE_BACKEND") or None
    if adapter is None:
        adapter = os.environ.get("GPUCORE_ADAPTER") or None
    runtime = runtime or _runtime.requested_runtime()
    by_index = adapter is not None and str(adapter).isdigit()
    present = devices("all" if by_index else runtime)
    if not present:
        detail = (f"Dawn listed none: {dawn_problem}" if runtime == "dawn" and dawn_problem
                  else f"{runtime} enumerated none")
        raise NoAdapterError(detail)
    candidates = present
    if backend is not None:
        want = _BACKENDS.get(backend.lower(), backend.lower())
        candidates = [a for a in candidates if a.backend == want]
        if not candidates:
            raise NoAdapterError(
                f"no {want} adapter; present: {', '.join(a.label for a in present)}",
                present=True)
    if adapter is not None:
        text = str(adapter)
        if text.isdigit():
            candidates = [a for a in candidates if a.index == int(text)]
        else:
            candidates = [a for a in candidates if text.lower() in a.name.lower()]
        if not candidates:
            raise NoAdapterError(
                f"no adapter matches {text!r}; present: {', '.join(a.label for a in present)}",
                present=True)
    if runtime == "auto" and not by_index:
        with_matrices = [a for a in candidates if a.runtime == "dawn" and a.matrix_configs]
        candidates = with_matrices or [a for a in candidates if a.runtime == "wgpu"] or candidates
    return min(candidates, key=lambda a: (_TYPE_RANK.get(a.type, 4),
                                          _BACKEND_RANK.get(a.backend, 3), a.index))
