"""Every .wgsl file in the tree compiles on every adapter (our naga validation)."""

from __future__ import annotations

from importlib import resources

import pytest

import gpucore
from gpucore import _wgsl

SHADERS = sorted(
    str(p.relative_to(resources.files("shaders")))  # type: ignore[attr-defined]
    for p in resources.files("shaders").rglob("*.wgsl")  # type: ignore[attr-defined]
)


def test_shaders_are_found() -> None:
    assert "core/vector_add.wgsl" in SHADERS


@pytest.mark.parametrize("name", SHADERS)
def test_shader_compiles(device: gpucore.Device, name: str) -> None:
    source = gpucore.shader_source(name)
    if "f16" in _wgsl.strip_comments(source) and not device.has_f16:
        pytest.skip(f"{name} uses f16; {device.backend} has no shader-f16")
    signature = _wgsl.parse(source)
    assert signature.entry_points, f"{name} has no @compute entry point"
    for entry in signature.entry_points:
        gpucore.Kernel(source, name=name, entry=entry).compile(device)
