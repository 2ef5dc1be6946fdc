"""Module: plain classes whose attribute paths are the checkpoint's state-dict keys.

A parameter is a Tensor attribute; submodules are Module attributes or lists of Modules
(keys "name.0.", "name.1.", ... as torch's ModuleList). Loading weights is a walk over names.
"""

from __future__ import annotations

from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from contextlib import closing
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, runtime_checkable

import numpy as np

from gpucore import Buffer, Device, as_dtype, default_device, phase

from .._tensor import Tensor
from ..gemm.accumulate import accumulating
from .deferred import UnloadedBuffer, deferring

__all__ = ["Module", "ModuleList", "Namespace", "ReadsAhead", "StateDictError", "Uploads",
           "parameter", "unloaded"]

M = TypeVar("M", bound="Module")


@runtime_checkable
class ReadsAhead(Protocol):
    """A state mapping that reads tensors on threads ahead of their use:
    `read_ahead(keys, device=...)` yields `state[key]` for each key in order (diffusion's
    ComponentWeights); given the `device` whose buffers the values go to (None: host
    memory), a value may instead be an `Uploads` that writes itself there."""

    def read_ahead(self, keys: Sequence[str], *, device: Device | None = None
                   ) -> Generator[Any, None, None]: ...


@runtime_checkable
class Uploads(Protocol):
    """A state value that puts itself into a parameter's GPU buffer, never whole in host
    memory (diffusion's bfloat16 weights, converted on the GPU): `writes(dtype, device)`
    says whether it can fill a Buffer of that dtype there, `write_to(buffer)` fills it (every
    value, ordered as Buffer.write); where it cannot, `np.asarray(value)` is its values."""

    def writes(self, dtype: np.dtype, device: Device) -> bool: ...

    def write_to(self, buffer: Buffer[Any]) -> None: ...


class StateDictError(ValueError):
    """A state dict that does not fit the module: missing, unexpected or mis-shaped keys."""


def parameter(shape: tuple[int, ...], dtype: Any = np.float32,
              device: Device | None = None, *, deferred: bool | None = None) -> Tensor:
    """An uninitialized read-only Tensor for weights (filled by load_state_dict). deferred:
    allocate its GPU memory only when load_state_dict writes it (gpustd.nn.deferred; None:
    inside a `with gpustd.nn.deferred():`)."""
    dtype = as_dtype(dtype)
    size = int(np.prod(shape, dtype=np.int64))
    device = device or default_device()
    if deferring() if deferred is None else deferred:
        return Tensor(UnloadedBuffer(size, dtype, device, read_only=True), shape)  # type: ignore[arg-type]
    return Tensor(Buffer(size, dtype, device=device, read_only=True), shape)


def unloaded(module: Any) -> list[str]:
    """Keys of the parameters under `module` built deferred and never loaded (gpustd.nn.
    deferred): what a strict=False load left out."""
    return [key for key, _owner, _attr, tensor in _walk(module, "")
            if isinstance(tensor.buffer, UnloadedBuffer)]


def _children(value: Any) -> Iterator[tuple[str, Any]]:
    if isinstance(value, ModuleList):
        yield from ((str(i), m) for i, m in enumerate(value))
    elif isinstance(value, Module):
        yield from ((k, v) for k, v in vars(value).items() if not k.startswith("_"))
    elif isinstance(value, (list, tuple)):
        yield from ((str(i), m) for i, m in enumerate(value))


def _walk(owner: Any, prefix: str) -> Iterator[tuple[str, Any, str, Tensor]]:
    """(key, owner, attribute, tensor) for every parameter under `owner`."""
    for name, value in _children(owner):
        if isinstance(value, Tensor):
            yield prefix + name, owner, name, value
        elif isinstance(value, Module) or (
                isinstance(value, (list, tuple)) and value
                and all(isinstance(m, Module) for m in value)):
            yield from _walk(value, f"{prefix}{name}.")


class Module:
    """Base of network layers: `__call__` runs `forward`; parameters are found by name.

    gemm_accumulate: None (as the caller's context says), or "f32" / "f16": what the f16
    GEMMs on the matrix units accumulate in while this module's call runs
    (gpustd.gemm.accumulate; a model's `--fp16-accumulation`)."""

    gemm_accumulate: str | None = None

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} defines no forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.gemm_accumulate is None:
            return self.forward(*args, **kwargs)
        with accumulating(self.gemm_accumulate):
            return self.forward(*args, **kwargs)

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, Tensor]]:
        """(state-dict key, Tensor) for every parameter, in attribute order. torch: same."""
        for key, _owner, _attr, tensor in _walk(self, prefix):
            yield key, tensor

    def parameters(self) -> Iterator[Tensor]:
        return (t for _, t in self.named_parameters())

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host copies of every parameter, by key (reads the GPU)."""
        return {key: t.numpy() for key, t in self.named_parameters()}

    def load_state_dict(self, state: Mapping[str, Any], *, strict: bool = True,
                        dtype: Any = None, to_host: bool = False) -> None:
        """Copy arrays from `state` (key -> numpy array or anything np.asarray takes) into the
        parameters of the same keys, converting to each parameter's dtype (or to `dtype` for
        every parameter when given, e.g. float16 weights from a float32 checkpoint).

        Raises StateDictError listing every missing key, unexpected key and shape mismatch
        (expected vs got) at once, before anything is written; strict=False tolerates
        missing and unexpected keys but never a shape mismatch. torch: `load_state_dict`.
        A parameter built under gpustd.nn.deferred() gets its GPU buffer as it is written; one
        a strict=False load leaves out stays unloaded (`unloaded(module)` lists them), and
        using it raises gpustd.nn.deferred.UnloadedError. `to_host`: such a parameter gets a
        host-memory HostBuffer instead (as gpustd.nn.offload leaves it), so a model loaded for
        a memory mode never holds the GPU memory of its whole size.
        """
        target = None if dtype is None else as_dtype(dtype)
        entries = {key: (owner, attr, t) for key, owner, attr, t in _walk(self, "")}
        missing = [k for k in entries if k not in state]
        unexpected = [k for k in state if k not in entries]
        # A lazy mapping (the model loaders') tells shapes without reading data: check every
        # shape first, then read and upload one tensor at a time, so host memory holds one
        # tensor, never the whole model.
        shape_of = getattr(state, "shape", None)
        mismatched = []
        for key, (_owner, _attr, tensor) in entries.items():
            if key not in state:
                continue
            shape = tuple(shape_of(key)) if callable(shape_of) else np.shape(state[key])
            if shape != tensor.shape:
                mismatched.append(f"{key}: expected {tensor.shape}, got {shape}")
        problems = []
        if strict and missing:
            problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
        if strict and unexpected:
            problems.append(f"unexpected keys ({len(unexpected)}): {', '.join(unexpected)}")
        if strict and (missing or unexpected):
            problems.append("strict=False would ignore missing and unexpected keys")
        if mismatched:
            problems.insert(0, f"shape mismatches ({len(mismatched)}): {'; '.join(mismatched)}")
        if problems:
            raise StateDictError(f"{type(self).__name__}.load_state_dict: "
                                 + " | ".join(problems))
        present = [key for key in entries if key in state]
        # A mapping that reads ahead (the loaders' ComponentWeights) reads the next tensors
        # on threads while this one uploads; the same values, in the same order
        # the values' device (a module's parameters are on one), None for host memory
        target_device = None if to_host or not present else entries[present[0]][2].device
        values = (state.read_ahead(present, device=target_device)
                  if isinstance(state, ReadsAhead) else (state[key] for key in present))
        with closing(values):  # a failed upload drops what was read ahead
            for key, value in zip(present, values, strict=True):
                owner, attr, tensor = entries[key]
                want = (target if target is not None and tensor.dtype.kind == "f"
                        else tensor.dtype)
                if (not to_host and isinstance(value, Uploads)
                        and value.writes(want, tensor.device)):
                    with phase("upload"):
                        _upload(owner, attr, tensor, want, value)
                    del value
                    continue
                with phase("convert"):
                    data = np.ascontiguousarray(value, dtype=want)
                with phase("upload"):
                    if want != tensor.dtype:
                        setattr(owner, attr,
                                Tensor.from_numpy(data, device=tensor.device, read_only=True))
                    elif isinstance(tensor.buffer, UnloadedBuffer):  # built deferred
                        unloaded = tensor.buffer
                        tensor.buffer = (unloaded.keep_on_host(data) if to_host  # type: ignore[assignment]
                                         else unloaded.allocate(data))
                    elif data.size:
                        tensor.buffer.write(data)
                del value, data  # not held while the next one is waited for


def _upload(owner: Any, attr: str, tensor: Tensor, dtype: np.dtype, value: Uploads) -> None:
    """`value` written into `tensor`'s buffer, or a new one of `dtype` (an unloaded
    parameter's, or one loaded in another dtype: then a new Tensor there)."""
    buffer = tensor.buffer
    if dtype != tensor.dtype or isinstance(buffer, UnloadedBuffer):
        buffer = Buffer(tensor.buffer.length, dtype, device=tensor.device, read_only=True)
    value.write_to(buffer)
    if dtype != tensor.dtype:
        setattr(owner, attr, Tensor(buffer, tensor.shape))
    else:
        tensor.buffer = buffer


class Namespace(Module):
    """A Module that only names its children: a level of the checkpoint's key path
    ("mid_block.resnets.0.") whose attributes its builder sets (torch: a bare nn.Module)."""

    if TYPE_CHECKING:  # the attributes are the checkpoint's names, set by whoever builds it
        def __getattr__(self, name: str) -> Any: ...
        def __setattr__(self, name: str, value: Any) -> None: ...


class ModuleList(Module, Generic[M]):
    """A list of Modules whose parameters are keyed "0.", "1.", ... (torch: nn.ModuleList)."""

    def __init__(self, modules: Iterable[M] = ()) -> None:
        self._items: list[M] = []
        for m in modules:
            self.append(m)

    def append(self, module: M) -> None:
        if not isinstance(module, Module):
            raise TypeError(f"ModuleList holds Modules, got {type(module).__name__}")
        self._items.append(module)

    def __getitem__(self, index: int) -> M:
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[M]:
        return iter(self._items)
