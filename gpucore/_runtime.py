"""The WebGPU runtimes gpucore drives: wgpu-native (the `wgpu` package, always present) and
Google's Dawn (the optional `wgpudawn` package, the wgpu-py API on Dawn).

Both speak the same Python API; what differs lives here and only here: how each is loaded
and set up (Dawn's toggles), its feature names, and its error class. Dawn is what reaches the
matrix units (tensor cores) from WGSL, through `chromium-experimental-subgroup-matrix`.

GPUCORE_RUNTIME selects the runtime whose adapters `Device.auto()` considers: `wgpu`
(default), `dawn`, or `auto` (Dawn where one of its adapters has subgroup matrices, else
wgpu-native). `gpucore.devices()` lists the adapters of every runtime installed.

Types: gpucore's annotations name wgpu-py's classes (`wgpu.classes.GPUDevice`, `GPUBuffer`,
...) for the handles of both runtimes. Dawn's objects are wgpudawn's own copies of those
classes (the same API, not subclasses), so the annotations describe the API, not the class
at run time. The one handle that differs is the adapter a Device opens: `Adapter` below.
"""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Protocol

import wgpu
from wgpu.classes import GPUAdapter, GPUAdapterInfo, GPUDevice

from . import _matrix_emulation
from ._errors import GpuError
from ._wgsl import strip_comments

__all__ = [
    "DAWN_TOGGLES",
    "GPU_ERRORS",
    "ROBUST_ENV",
    "RUNTIMES",
    "Adapter",
    "MatrixConfig",
    "Runtime",
    "adapt_source",
    "create_pipeline_later",
    "dawn_error_types",
    "dawn_toggles",
    "emulated_configs",
    "load",
    "requested_runtime",
    "robust_requested",
]

RUNTIMES = ("wgpu", "dawn")
_ALIASES = {"wgpu": "wgpu", "wgpu-native": "wgpu", "native": "wgpu", "dawn": "dawn",
            "wgpudawn": "dawn", "auto": "auto"}

# Dawn toggles, set once on Dawn's instance before its first adapter request:
# - allow_unsafe_apis: Dawn offers experimental features (subgroup matrices) only with it;
# - vulkan_enable_f16_on_nvidia: Dawn hides shader-f16 on NVIDIA's Vulkan driver otherwise.
# GPUCORE_DAWN_TOGGLES adds more (comma-separated).
DAWN_TOGGLES = ("allow_unsafe_apis", "vulkan_enable_f16_on_nvidia")

# disable_robustness is on by default, unless GPUCORE_ROBUST=1. Dawn's robustness clamps every
# index of every storage access in every shader and turns on Vulkan's robustBufferAccess;
# without it the SD 1.5 UNet step in float16 takes 33.0 instead of 42.3 ms on an H100 (the
# matrix-unit GEMMs and convs gain 30-45%, bench/NOTES.md). gpucore's and gpustd's kernels
# check their own bounds (and kernel_compiler's Python kernels index nothing themselves); the
# Dawn tests pass either way. What it costs: a WGSL kernel of your own (gpucore.Kernel) that
# indexes past a buffer's end is then undefined behaviour as in Vulkan or CUDA - it may read
# another buffer's data, write into another buffer of the process, or fault the GPU, after
# which Dawn reports the device lost and every later call on it raises. GPUCORE_ROBUST=1 while
# writing such kernels; wgpu-native always keeps its bounds checks.
ROBUST_ENV = "GPUCORE_ROBUST"

# The backends gpucore asks Dawn for ("Primary", in set_instance_extras), in Dawn's order.
_DAWN_BACKENDS = ("Vulkan", "Metal", "D3D12")

# Toggles turned off: timestamp_quantization rounds timestamps to ~65 us (a browser's
# defence against timing attacks), which makes Profile's per-dispatch times useless.
_DAWN_OFF = ("timestamp_quantization",)

# Refused: skip_validation turns an invalid pipeline into a crash. Seen with wgpudawn
# 0.32.0.4 on an H100: create_compute_pipeline with a missing entry point aborts (SIGABRT)
# under skip_validation, and raises GPUValidationError without it.
_DAWN_REFUSED = ("skip_validation",)

# Feature names: gpucore speaks wgpu-native's; each runtime's own name where it differs.
_DAWN_FEATURES = {"subgroup": "subgroups",
                  "subgroup-matrix": "chromium-experimental-subgroup-matrix"}


@dataclass(frozen=True)
class MatrixConfig:
    """One subgroup-matrix shape the adapter multiplies on its matrix units:
    (m x k) `component` @ (k x n) `component` accumulated into m x n `result`."""

    component: str  # f16, f32, i8, u8, ...
    result: str
    m: int
    n: int
    k: int
    min_subgroup_size: int
    max_subgroup_size: int
    emulated: bool = False  # in plain WGSL (gpucore._matrix_emulation), not on matrix units

    def __str__(self) -> str:
        shape = f"{self.component}->{self.result} {self.m}x{self.n}x{self.k}"
        return f"{shape} (emulated)" if self.emulated else shape


def emulated_configs(features: Iterable[str]) -> tuple[MatrixConfig, ...]:
    """The matrix configs gpucore._matrix_emulation gives an adapter with these features
    (gpucore's names), none where it lacks one it needs."""
    if not set(_matrix_emulation.NEEDS) <= set(features):
        return ()
    size = _matrix_emulation.SUBGROUP
    return tuple(MatrixConfig(*shape, size, size, emulated=True)
                 for shape in _matrix_emulation.SHAPES)


class Adapter(Protocol):
    """What Device uses of an adapter: wgpu-py's `GPUAdapter` on wgpu-native, the
    `_TranslatingAdapter` around Dawn's."""

    @property
    def info(self) -> GPUAdapterInfo: ...

    @property
    def features(self) -> set[str]: ...

    @property
    def limits(self) -> dict[str, int]: ...

    def request_device_sync(self, *, label: str = ...,
                            required_features: Sequence[str] = ...,
                            required_limits: dict[str, int | None] | None = ...) -> GPUDevice: ...


@dataclass(frozen=True)
class Runtime:
    """One loaded runtime: its wgpu-py API module and how its names differ from gpucore's."""

    name: str  # "wgpu" | "dawn"
    api: ModuleType  # the wgpu or wgpudawn module
    features: dict[str, str]  # gpucore feature name -> this runtime's name

    def native_feature(self, name: str) -> str:
        return self.features.get(name, name)

    def canonical_features(self, names: Iterable[str]) -> frozenset[str]:
        """This runtime's feature names as gpucore names them."""
        back = {v: k for k, v in self.features.items()}
        return frozenset(back.get(str(n), str(n)) for n in names)

    def matrix_configs(self, adapter: GPUAdapter) -> tuple[MatrixConfig, ...]:
        """The adapter's subgroup-matrix configurations: Dawn's, or on wgpu-native the
        emulated ones where GPUCORE_EMULATE_MATRIX asks for them (else none)."""
        if self.name == "wgpu":
            return (emulated_configs(self.canonical_features(adapter.features))
                    if _matrix_emulation.requested() else ())
        if self.native_feature("subgroup-matrix") not in adapter.features:
            return ()
        from wgpudawn.backends.dawn import extras  # type: ignore[import-not-found]

        found = extras.get_adapter_properties(adapter).get("subgroup_matrix_configs") or []
        return tuple(MatrixConfig(str(c["component_type"]), str(c["result_component_type"]),
                                  int(c["m"]), int(c["n"]), int(c["k"]),
                                  int(c.get("min_subgroup_size", 0)),
                                  int(c.get("max_subgroup_size", 0))) for c in found)

    def enumerate_adapters(self) -> list[GPUAdapter]:
        """This runtime's adapters in a stable order, every GPU of the machine.

        wgpudawn's `enumerate_adapters_sync()` merges adapters of the same backend, vendor,
        device id and name, which leaves one of two identical GPUs (a 2x H200 machine listed
        one Dawn adapter, 2026-11). Dawn's own enumeration behind it
        (`GPU._enumerate_all_adapters`, the one private name of wgpudawn that gpucore uses)
        lists each; its Null backend and the backends gpucore did not ask for are left out,
        as wgpudawn leaves them. A wgpudawn without it gets the merged list."""
        gpu = self.api.gpu
        native = getattr(gpu, "_enumerate_all_adapters", None)
        if self.name != "dawn" or native is None:
            return list(gpu.enumerate_adapters_sync())
        try:
            listed = native()
        except (AttributeError, TypeError):  # a build without Dawn's native enumeration
            return list(gpu.enumerate_adapters_sync())
        return sorted((a for a in listed if a.info["backend_type"] in _DAWN_BACKENDS),
                      key=lambda a: _DAWN_BACKENDS.index(a.info["backend_type"]))

    def process_events(self) -> None:
        """Deliver the callbacks of finished asynchronous work without blocking. wgpu-native
        delivers them from wgpu-py's poll thread; Dawn only inside wgpuInstanceProcessEvents,
        so a buffer mapping polled on Dawn stays "pending" until this is called."""
        if self.name == "dawn":
            from wgpudawn.backends.dawn import process_events  # type: ignore[import-not-found]

            process_events()

    def wrap(self, adapter: GPUAdapter, position: int) -> Adapter:
        """The adapter as Device uses it (`position`: its place in this runtime's list):
        Dawn's takes gpucore's feature names and opens any number of devices."""
        return adapter if self.name == "wgpu" else _TranslatingAdapter(adapter, self, position)


class _TranslatingAdapter:
    """A Dawn adapter whose `request_device_sync` takes gpucore's feature names and may be
    called more than once (Dawn "consumes" an adapter with its first device, as WebGPU says;
    a later request uses a fresh adapter from the same position in Dawn's enumeration)."""

    def __init__(self, adapter: GPUAdapter, runtime: Runtime, position: int) -> None:
        self._adapter = adapter
        self._runtime = runtime
        self._position = position
        self._consumed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._adapter, name)

    def request_device_sync(self, *, required_features: Sequence[str] = (),
                            **kwargs: Any) -> GPUDevice:
        names = [self._runtime.native_feature(f) for f in required_features]
        # Subgroup matrices cost nothing to enable and are what Dawn is here for: a device
        # gets them whenever the adapter has them (AdapterInfo.matrix_configs says which).
        matrices = self._runtime.native_feature("subgroup-matrix")
        if matrices in self._adapter.features and matrices not in names:
            names.append(matrices)
        adapter = self._adapter
        if self._consumed:
            adapter = self._runtime.enumerate_adapters()[self._position]
        self._consumed = True
        return adapter.request_device_sync(required_features=names, **kwargs)


_SUBGROUP_USE = re.compile(r"\bsubgroup[A-Z]\w*\s*\(|@builtin\s*\(\s*subgroup_")
_ENABLE_SUBGROUPS = re.compile(r"^\s*enable\s+[\w\s,]*\bsubgroups\b", re.M)


def adapt_source(runtime: str, source: str) -> str:
    """WGSL as `runtime`'s compiler wants it. Tint (Dawn) requires `enable subgroups;` before
    any subgroup builtin, which naga (wgpu-native) refuses as unsupported; our shaders are
    written for naga and get the directive here. It goes in front of line 1, on that line,
    so compile errors keep their line numbers. On wgpu-native a shader of subgroup matrices
    is lowered to plain WGSL (gpucore._matrix_emulation), the line numbers kept too."""
    if runtime == "wgpu" and _matrix_emulation.uses_matrices(source):
        return _matrix_emulation.lower(source)
    if runtime != "dawn" or _ENABLE_SUBGROUPS.search(source):
        return source
    if _SUBGROUP_USE.search(strip_comments(source)):
        return "enable subgroups; " + source
    return source


_loaded: dict[str, Runtime] = {}
_lock = threading.Lock()
_dawn_toggles: list[str] = []
_pool: list[ThreadPoolExecutor] = []


def _builders() -> ThreadPoolExecutor:
    """The threads wgpu-native's pipelines are built on, started on first use (at exit
    Python waits for the builds under way, a few at most)."""
    with _lock:
        if not _pool:
            _pool.append(ThreadPoolExecutor(min(8, os.cpu_count() or 1),
                                            thread_name_prefix="gpucore-build"))
        return _pool[0]


def requested_runtime() -> str:
    """GPUCORE_RUNTIME normalized: 'wgpu' (default), 'dawn' or 'auto'."""
    text = os.environ.get("GPUCORE_RUNTIME", "").strip().lower() or "wgpu"
    if text not in _ALIASES:
        raise GpuError(f"GPUCORE_RUNTIME={text!r} is not a runtime; use wgpu (wgpu-native, "
                       "the default), dawn (needs `pip install avx-gpu[dawn]`) or auto")
    return _ALIASES[text]


def _import_dawn() -> ModuleType | None:
    """wgpudawn's module, or None when it is not installed. Separate for tests to fake."""
    try:
        import wgpudawn  # type: ignore[import-not-found]
    except ImportError:
        return None
    return wgpudawn


def _setup_dawn(api: ModuleType) -> None:
    from wgpudawn.backends.dawn import extras  # type: ignore[import-not-found]

    extra = [t.strip() for t in os.environ.get("GPUCORE_DAWN_TOGGLES", "").split(",")]
    refused = [t for t in extra if t in _DAWN_REFUSED]
    if refused:
        raise GpuError(f"GPUCORE_DAWN_TOGGLES: {refused} cannot be used: with Dawn's "
                       "validation skipped, an invalid pipeline (a shader that fails to compile, "
                       "a wrong entry point) aborts the process instead of raising an error")
    known = extras.all_toggles()
    unknown = [t for t in extra if t and t not in known]
    if unknown:
        raise GpuError(f"GPUCORE_DAWN_TOGGLES names unknown Dawn toggles {unknown}; "
                       "wgpudawn.backends.dawn.extras.all_toggles() lists them")
    robust = robust_requested()
    if robust and "disable_robustness" in extra:
        raise GpuError(f"{ROBUST_ENV}=1 asks for Dawn's robustness and GPUCORE_DAWN_TOGGLES "
                       "for disable_robustness: unset one of them")
    defaults = DAWN_TOGGLES if robust else (*DAWN_TOGGLES, "disable_robustness")
    # Toggles this Dawn build lacks are left out rather than failing: older builds lack some.
    toggles = list(dict.fromkeys(t for t in (*defaults, *extra) if t and t in known))
    try:
        extras.set_instance_extras(backends=["Primary"], enable_toggles=toggles,
                                   disable_toggles=[t for t in _DAWN_OFF if t in known])
    except RuntimeError:
        return  # the instance exists already (someone used wgpudawn first): keep theirs
    _dawn_toggles[:] = toggles


def robust_requested() -> bool:
    """Whether GPUCORE_ROBUST asks to keep Dawn's robustness (1/true/yes/on)."""
    value = os.environ.get(ROBUST_ENV, "").strip().lower()
    if value not in ("", "0", "1", "true", "false", "yes", "no", "on", "off"):
        raise GpuError(f"{ROBUST_ENV}={value!r}: use 1 (keep Dawn's bounds checks) or 0")
    return value in ("1", "true", "yes", "on")


def dawn_toggles() -> tuple[str, ...]:
    """The toggles gpucore set on Dawn's instance (empty before Dawn is loaded, or when
    another user of wgpudawn created the instance first)."""
    return tuple(_dawn_toggles)


def load(name: str, *, required: bool = False) -> Runtime | None:
    """The runtime `name` ('wgpu' or 'dawn'), set up on first use; None when it is not
    installed, or an error saying what to install when `required`."""
    with _lock:
        if name in _loaded:
            return _loaded[name]
        if name == "wgpu":
            runtime = Runtime("wgpu", wgpu, {})
        elif name == "dawn":
            api = _import_dawn()
            if api is None:
                if required:
                    raise GpuError(
                        "GPUCORE_RUNTIME=dawn needs the wgpudawn package (Google's Dawn "
                        "behind the wgpu-py API): `pip install avx-gpu[dawn]` or "
                        "`pip install wgpudawn==0.32.0.4`; or unset GPUCORE_RUNTIME to use "
                        "wgpu-native")
                return None
            _setup_dawn(api)
            runtime = Runtime("dawn", api, dict(_DAWN_FEATURES))
        else:
            raise ValueError(f"unknown runtime {name!r}; one of {RUNTIMES}")
        _loaded[name] = runtime
        return runtime


# Dawn's asynchronous build prefixes its error with the call that failed and its status.
_ASYNC_PREFIX = re.compile(r"create_compute_pipeline(?:_async)? failed \(\d+\): ")


def create_pipeline_later(runtime: str, device: GPUDevice,
                          descriptor: dict[str, Any]) -> Callable[[], Any]:
    """Begin create_compute_pipeline(**descriptor) on `runtime`'s device off this thread;
    returns what waits for the pipeline (raising the build's error). Dawn builds on threads of
    its own (create_compute_pipeline_async: Dawn's calls stay on the caller's thread);
    wgpu-native takes calls from any thread, and builds on a pool of ours."""
    if runtime == "dawn":
        promise = device.create_compute_pipeline_async(**descriptor)

        def wait() -> Any:
            try:
                return promise.sync_wait()
            except Exception as exc:  # worded as the in-place build words it
                text = str(exc)
                if not _ASYNC_PREFIX.search(text):
                    raise
                raise type(exc)(_ASYNC_PREFIX.sub("", text, count=1)) from None
        return wait
    return _builders().submit(lambda: device.create_compute_pipeline(**descriptor)).result


def dawn_error_types() -> tuple[type[BaseException], ...]:
    api = _import_dawn()
    return (api.GPUError,) if api is not None else ()


# Every runtime's GPU error class: `except GPU_ERRORS` catches a failure on any device.
GPU_ERRORS: tuple[type[BaseException], ...] = (wgpu.classes.GPUError, *dawn_error_types())
