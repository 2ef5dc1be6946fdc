"""The gpucore error hierarchy: every message says what went wrong and what to do."""

from __future__ import annotations

__all__ = [
    "BindingError",
    "BindingTypeError",
    "DeviceLimitError",
    "DeviceLostError",
    "FeatureError",
    "GpuError",
    "NoAdapterError",
    "ShaderCompileError",
]


class GpuError(RuntimeError):
    """Base of every error gpucore raises for a GPU-side problem."""


class NoAdapterError(GpuError):
    """No GPU adapter (not even a software one) is available, or (`present`) adapters are but
    none is the one asked for."""

    def __init__(self, detail: str = "", *, present: bool = False) -> None:
        if present:  # a driver is installed: the choice is what to change
            msg = (f"{detail}. Choose one of those: `python -m gpucore info` lists each "
                   "adapter's index, backend and name (GPUCORE_ADAPTER, --devices)")
        else:
            msg = (
                "no GPU adapter found"
                + (f" ({detail})" if detail else "")
                + ". Install a Vulkan driver: on Debian/Ubuntu `sudo apt-get install "
                "mesa-vulkan-drivers` gives the software adapter lavapipe; on a machine with a "
                "GPU install its vendor driver. `python -m gpucore info` lists what wgpu sees."
            )
        super().__init__(msg)


class ShaderCompileError(GpuError):
    """WGSL failed to parse or validate; carries the shader name, line and column."""

    def __init__(self, shader: str, line: int | None, column: int | None, message: str) -> None:
        self.shader, self.line, self.column, self.message = shader, line, column, message
        where = shader if line is None else f"{shader}:{line}:{column}"
        super().__init__(f"shader compile error in {where}: {message}")


class DeviceLimitError(GpuError):
    """A request exceeds one of the device's limits."""

    def __init__(self, limit: str, value: int, requested: int, what: str) -> None:
        self.limit, self.value, self.requested = limit, value, requested
        super().__init__(
            f"{what} needs {requested:,} but the device's {limit} is {value:,}; "
            "split the work into smaller pieces or pick an adapter with higher limits"
        )


class MemoryLimitError(GpuError):
    """A buffer does not fit under the device's memory limit (Device.memory_limit) even with
    the pool emptied and everything the limit's owner could evict gone. `needed`: the bytes
    the device must be allowed at that point."""

    def __init__(self, limit: int, needed: int, what: str) -> None:
        self.limit, self.needed = limit, needed
        super().__init__(
            f"{what} does not fit in the memory budget of {_size(limit)}: with nothing left "
            f"to evict the device needs at least {_size(needed)} ({needed:,} bytes) here; give "
            "a budget of at least that much (e.g. --max-vram) or make a smaller picture")


def _size(nbytes: int) -> str:
    return (f"{nbytes / (1 << 30):.2f} GiB" if nbytes >= 1 << 30
            else f"{nbytes / (1 << 20):.1f} MiB")


class FeatureError(GpuError):
    """An optional adapter feature (such as shader-f16) is required but missing."""

    def __init__(self, feature: str, what: str, adapter: str) -> None:
        self.feature = feature
        super().__init__(
            f"{what} needs the '{feature}' feature, which adapter {adapter!r} lacks; "
            "use float32, or pick another adapter (GPUCORE_ADAPTER / GPUCORE_BACKEND)"
        )


class DeviceLostError(GpuError):
    """The GPU device was lost (driver reset, out of memory, removed)."""


def lost_or_gpu_error(exc: Exception) -> GpuError:
    """A wgpu error as DeviceLostError when it says the device was lost, else GpuError."""
    text = str(exc)
    if "lost" in text.lower():
        return DeviceLostError(f"the GPU device was lost ({text.splitlines()[0]}); "
                               "create a new Device (check the driver and GPU memory)")
    return GpuError(text)


class BindingTypeError(TypeError):
    """A buffer's element type does not match the shader binding it is passed to."""


class BindingError(ValueError):
    """Wrong number of arguments, wrong access mode or bad parameters for a kernel."""
