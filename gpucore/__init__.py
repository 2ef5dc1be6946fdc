"""gpucore: WGSL compute on any GPU through wgpu-py.

Device (one adapter + device, real limits, optional features), Buffer[T] (typed storage),
Kernel (a WGSL entry point with a checked signature), batched dispatch and profiling.

Modules, each below the ones that use it: `_phases` (where a process's time goes), `_cache`
(the cache directory a second cold start reuses) and `_cffi_types` (cffi's type parsing cut
to the names a declaration uses) below all; `_runtime` (wgpu-native or Dawn,
what differs between them) and `_adapters` (finding and choosing an adapter); `_memtrace`,
`_pool`, `_residency`, `_limit` (where memory goes, the buffer pool, the ledger of the buffers
captures pin and lend, the pool's cap); `_pipelines` (each compiled pipeline built once, by
whichever thread asks first, or begun in the background with a Pending in its place);
`_bindings`, `_stream`, `_profile`, `_staging`, `_capture` (bind groups and params, streams
and events, timestamps, transfers, capture and replay), each declaring as a Protocol what it
needs of its device; `_device` (Device) ties those
together, handing each what it asks for; `_buffer` (Buffer) and `_kernel` (Kernel, with `_wgsl`
reading shaders' signatures, `_kernel_args` checking a dispatch's grid, buffers and params
against them, and `_shaders` finding their files) on top; `_group` (several
devices), `_autotune` and `_warmup` (kernels built ahead in threads) above those; `_teardown`
releases dead Devices' wgpu devices at a safe point.

gpucore knows nothing of ops, nor where their shaders live: the layer that has shaders
registers their folder or package (`register_shader_root`; gpustd registers `shaders`).
"""

from . import _autotune as autotune
from ._adapters import AdapterInfo, devices
from ._buffer import Buffer
from ._capture import Capture, CaptureError
from ._default import default_device, open_default_device_ahead, synchronize
from ._device import Device
from ._dtypes import as_dtype, wgsl_scalar
from ._errors import (
    BindingError,
    BindingTypeError,
    DeviceLimitError,
    DeviceLostError,
    FeatureError,
    GpuError,
    MemoryLimitError,
    NoAdapterError,
    ShaderCompileError,
)
from ._group import DeviceGroup, open_devices, select_adapters, split_sizes
from ._kernel import Kernel, begin_only, fold_grid
from ._memtrace import MemoryTrace, trace_memory
from ._phases import Phases, phase, process_started
from ._pool import MemoryStats
from ._profile import Profile
from ._shaders import register_shader_root, shader_path, shader_roots, shader_source
from ._staging import Fill
from ._stream import Event, Stream
from ._teardown import release_dead as release_dead_devices
from ._version import __version__ as __version__
from ._warmup import Warmup, work_while_waiting

__all__ = [
    "AdapterInfo",
    "BindingError",
    "BindingTypeError",
    "Buffer",
    "Capture",
    "CaptureError",
    "Device",
    "DeviceGroup",
    "DeviceLimitError",
    "DeviceLostError",
    "Event",
    "FeatureError",
    "Fill",
    "GpuError",
    "Kernel",
    "MemoryLimitError",
    "MemoryStats",
    "MemoryTrace",
    "NoAdapterError",
    "Phases",
    "Profile",
    "ShaderCompileError",
    "Stream",
    "Warmup",
    "as_dtype",
    "autotune",
    "begin_only",
    "default_device",
    "devices",
    "fold_grid",
    "open_default_device_ahead",
    "open_devices",
    "phase",
    "process_started",
    "register_shader_root",
    "release_dead_devices",
    "select_adapters",
    "shader_path",
    "shader_roots",
    "shader_source",
    "split_sizes",
    "synchronize",
    "trace_memory",
    "wgsl_scalar",
    "work_while_waiting",
]

