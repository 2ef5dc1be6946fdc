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


@pytest.mark.nodevice
def test_shaders_are_found() -> None:
    assert "core/vector_add.wgsl" in SHADERS


def _is_part(name: str) -> bool:
    return not _wgsl.parse(gpucore.shader_source(name)).entry_points


@pytest.mark.nodevice
def test_every_part_belongs_to_a_shader() -> None:
    named = {p for s in SHADERS for alt in _wgsl.declared_parts(gpucore.shader_source(s))
             for p in alt}
    parts = {s.removesuffix(".wgsl") for s in SHADERS if _is_part(s)}
    assert parts <= named, f"parts no shader names in a '//! parts:' line: {parts - named}"


@pytest.mark.parametrize("name", [s for s in SHADERS if not _is_part(s)])
def test_shader_compiles(device: gpucore.Device, name: str) -> None:
    """Each entry point compiles; a shader with `//! parts:` compiles with each part the
    device can run (subgroup parts need the subgroup feature)."""
    source = gpucore.shader_source(name)
    if "f16" in _wgsl.strip_comments(source) and not device.has_f16:
        pytest.skip(f"{name} uses f16; {device.backend} has no shader-f16")
    variants = _wgsl.declared_parts(source) or [()]
    variants = [v for v in variants
                if device.has_subgroups or not any("subgroup" in p for p in v)]
    signature = _wgsl.parse(source)
    assert signature.entry_points, f"{name} has no @compute entry point"
    for parts in variants:
        for entry in signature.entry_points:
            gpucore.Kernel.load(name, parts=parts, entry=entry).compile(device)
