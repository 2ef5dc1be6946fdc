"""Where `Kernel.load("area/name")` finds its WGSL files: the shader roots registered with gpucore.

gpucore ships no shaders and knows no package of them. The layer that has shaders registers
the folder (or package) holding them, once, when it is imported: gpustd registers the
project's `shaders` package; a user's own kernels can live in a package of theirs::

    gpucore.register_shader_root("my_package.wgsl")     # a package, by its importable name
    gpucore.register_shader_root(Path("~/kernels").expanduser())  # or a folder
    Kernel.load("blur/box")   # the first root holding blur/box.wgsl

Roots are searched in the order they were registered; registering one again changes nothing.
"""

from __future__ import annotations

import os
import threading
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path

__all__ = ["register_shader_root", "shader_path", "shader_roots", "shader_roots_found",
           "shader_source"]

_roots: list[tuple[str, Traversable]] = []  # (how it was named, where it is)
_lock = threading.Lock()


def register_shader_root(root: str | os.PathLike[str] | Traversable) -> None:
    """Search `root` for shader files: a package's importable name ('shaders'), or a folder
    (a path or an importlib Traversable). `Kernel.load('area/name')` reads
    `<root>/area/name.wgsl` from the first root that has it."""
    if isinstance(root, str):
        label, where = f"package {root!r}", resources.files(root)
    elif isinstance(root, os.PathLike):
        where = Path(root)
        label = str(where)
    else:
        label, where = str(root), root
    if not where.is_dir():
        raise NotADirectoryError(f"shader root {label} is not a folder ({where})")
    with _lock:
        if all(str(found) != str(where) for _, found in _roots):
            _roots.append((label, where))


def shader_roots() -> list[str]:
    """The registered shader roots, in search order, as they were named."""
    return [label for label, _ in _roots]


def shader_roots_found() -> list[Traversable]:
    """The registered shader roots, in search order, as where they are."""
    return [where for _, where in _roots]


def shader_path(name: str) -> Traversable:
    """The file for shader `name` ('core/vector_add' -> <root>/core/vector_add.wgsl), from
    the first registered root that has it."""
    rel = name if name.endswith(".wgsl") else name + ".wgsl"
    for _, root in list(_roots):
        path = root.joinpath(rel)
        if path.is_file():
            return path
    searched = ", ".join(shader_roots()) or "none are registered"
    raise FileNotFoundError(
        f"no shader {rel!r} under the shader roots ({searched}). Register the folder or "
        "package that holds it with gpucore.register_shader_root(...); importing gpustd "
        "registers the project's `shaders` package")


def shader_source(name: str) -> str:
    """The WGSL text of shader `name` (see shader_path)."""
    return shader_path(name).read_text(encoding="utf-8")
