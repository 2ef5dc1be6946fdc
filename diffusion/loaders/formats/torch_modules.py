"""Whole pickled modules (ultralytics saves `{"model": DetectionModel(...)}`, not a state dict)
read without running their code: each class of an allowed package becomes an inert stand-in.

Unpickling an object is NEWOBJ (`cls.__new__(cls)`) then BUILD (`obj.__setstate__(state)`):
the stand-in's `__new__` is object's, its `__init__` ignores its arguments, and its
`__setstate__` keeps the attribute dict. Nothing of the named class is imported or called, so
a pickle naming `ultralytics.nn.modules.conv.Conv` gets a `PickledModule` whose `state` holds
the module's attributes (`_modules`, `_parameters`, `_buffers`, `stride`, `f`...), with its
tensors as `torch_pickle.StoredTensor` descriptors. Globals outside the allowed packages are
still refused by `torch_pickle`.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterator
from typing import Any

__all__ = ["PickledModule", "module_classes"]


class PickledModule:
    """An `nn.Module` as its pickle holds it: `qualified` (its class's dotted name) and
    `state` (its attribute dict); none of the class's code."""

    qualified = ""

    def __init__(self, *args: object, **kwargs: object) -> None:
        self.state: dict[str, Any] = {}

    def __setstate__(self, state: Any) -> None:
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots): only the dict
            state = state[0]
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"{self.qualified}: a module's state must be a dict, "
                                         f"got {type(state).__name__}")
        self.state = state

    @property
    def kind(self) -> str:
        """The class's own name: "Conv", "C2f", "Conv2d"..."""
        return self.qualified.rsplit(".", 1)[-1]

    def child(self, name: str) -> PickledModule:
        """Sub-module `name` (torch: `getattr(module, name)`); KeyError when missing."""
        found = (self.state.get("_modules") or {}).get(name)
        if not isinstance(found, PickledModule):
            raise KeyError(f"{self.qualified} has no sub-module {name!r}")
        return found

    def children(self) -> Iterator[tuple[str, PickledModule]]:
        for name, value in (self.state.get("_modules") or {}).items():
            if isinstance(value, PickledModule):
                yield str(name), value

    def tensors(self) -> Iterator[tuple[str, Any]]:
        """(name, tensor) of its parameters and buffers, then its children's, dotted as
        `state_dict()` names them."""
        for group in ("_parameters", "_buffers"):
            for name, value in (self.state.get(group) or {}).items():
                if value is not None:
                    yield str(name), value
        for name, module in self.children():
            for key, value in module.tensors():
                yield f"{name}.{key}", value


def module_classes(packages: tuple[str, ...]) -> Callable[[str, str], type | None]:
    """A `classes` resolver for `torch_pickle.safe_loads`: a stand-in class (one per name) for
    every global of `packages` (and their sub-modules), None for anything else."""
    made: dict[str, type] = {}

    def resolve(module: str, name: str) -> type | None:
        if not any(module == p or module.startswith(p + ".") for p in packages):
            return None
        if not name.isidentifier():
            return None
        qualified = f"{module}.{name}"
        if qualified not in made:
            made[qualified] = type(name, (PickledModule,), {"qualified": qualified})
        return made[qualified]

    return resolve
