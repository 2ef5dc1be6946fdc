"""Discovering adapters and choosing one."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import wgpu

from ._errors import NoAdapterError

__all__ = ["AdapterInfo", "choose_adapter", "devices"]

OPTIONAL_FEATURES = ("shader-f16", "subgroup", "timestamp-query")
_BACKENDS = {"vulkan": "vulkan", "metal": "metal", "d3d12": "dx12", "dx12": "dx12",
             "opengl": "gl", "opengles": "gl", "gl": "gl"}
_TYPES = {"discretegpu": "discrete", "integratedgpu": "integrated", "cpu": "cpu",
          "virtualgpu": "virtual"}
_TYPE_RANK = {"discrete": 0, "integrated": 1, "virtual": 2, "cpu": 3}
_BACKEND_RANK = {"vulkan": 0, "metal": 0, "dx12": 1, "gl": 2}


@dataclass(frozen=True)
class AdapterInfo:
    """One adapter wgpu can see: what it is and what it can do."""

    index: int
    backend: str  # vulkan | metal | dx12 | gl
    name: str
    type: str  # discrete | integrated | virtual | cpu | unknown
    driver: str
    features: frozenset[str]
    limits: dict[str, int] = field(repr=False)
    adapter: Any = field(repr=False, compare=False)

    @property
    def label(self) -> str:
        return f"{self.backend}:{self.index}:{self.name}"


def _os_setup() -> None:
    # Mesa's EGL (the OpenGL adapter) warns loudly without it; harmless to provide.
    os.environ.setdefault("XDG_RUNTIME_DIR", "/tmp")


def devices() -> list[AdapterInfo]:
    """Every adapter present, in wgpu's enumeration order (numpy-free, cheap to call)."""
    _os_setup()
    found = []
    for index, adapter in enumerate(wgpu.gpu.enumerate_adapters_sync()):
        info = adapter.info
        backend = str(info.get("backend_type", "")).lower()
        kind = str(info.get("adapter_type", "")).lower()
        found.append(
            AdapterInfo(
                index=index,
                backend=_BACKENDS.get(backend, backend or "unknown"),
                name=str(info.get("device", "")) or "unknown",
                type=_TYPES.get(kind, kind or "unknown"),
                driver=str(info.get("description", "")),
                features=frozenset(adapter.features),
                limits=dict(adapter.limits),
                adapter=adapter,
            )
        )
    return found


def choose_adapter(backend: str | None = None, adapter: int | str | None = None) -> AdapterInfo:
    """Pick an adapter: explicit arguments, then env GPUCORE_BACKEND / GPUCORE_ADAPTER, then
    the best present (discrete > integrated > cpu; Vulkan/Metal > DX12 > GL)."""
    backend = backend or os.environ.get("GPUCORE_BACKEND") or None
    if adapter is None:
        adapter = os.environ.get("GPUCORE_ADAPTER") or None
    present = devices()
    if not present:
        raise NoAdapterError("wgpu enumerated none")
    candidates = present
    if backend is not None:
        want = _BACKENDS.get(backend.lower(), backend.lower())
        candidates = [a for a in candidates if a.backend == want]
        if not candidates:
            raise NoAdapterError(
                f"no {want} adapter; present: {', '.join(a.label for a in present)}"
            )
    if adapter is not None:
        text = str(adapter)
        if text.isdigit():
            candidates = [a for a in candidates if a.index == int(text)]
        else:
            candidates = [a for a in candidates if text.lower() in a.name.lower()]
        if not candidates:
            raise NoAdapterError(
                f"no adapter matches {text!r}; present: {', '.join(a.label for a in present)}"
            )
    return min(candidates, key=lambda a: (_TYPE_RANK.get(a.type, 4),
                                          _BACKEND_RANK.get(a.backend, 3), a.index))
