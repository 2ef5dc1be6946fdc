"""A restricted unpickler for PyTorch files: it rebuilds tensors as descriptors of bytes in the
file and refuses every other global, so a malicious pickle cannot run anything.

A pickle is a small program; its GLOBAL / STACK_GLOBAL / INST / OBJ / EXT opcodes name a callable
that REDUCE / BUILD / NEWOBJ then call. `find_class` is the one place those names are resolved,
so it returns *our* stand-ins for the allowlisted names (the WebUI's `modules/safe.py` list:
`torch._utils._rebuild_tensor_v2`, `_rebuild_parameter`, `collections.OrderedDict`, the storage
types, numpy scalar reconstruction) and raises for anything else before it could be called.
Nothing of torch or of the file's choosing is ever imported. `persistent_load` checks the shape
of every storage reference ('storage', type, key, location, numel[, view]) and returns a
`StorageRef`; `_rebuild_tensor_v2(storage, offset, size, stride, ...)` becomes a `StoredTensor`
(dtype, storage, offset, shape, stride) that `torch_file` reads later.
"""

from __future__ import annotations

import collections
import io
import pickle
from collections.abc import Callable
from typing import Any, BinaryIO, NamedTuple

import numpy as np

from ..errors import WeightsError

__all__ = ["STORAGE_DTYPES", "StorageRef", "StoredTensor", "safe_loads"]

# torch storage class / dtype name -> safetensors dtype name of its elements
STORAGE_DTYPES = {
    "FloatStorage": "F32", "DoubleStorage": "F64", "HalfStorage": "F16",
    "BFloat16Storage": "BF16", "LongStorage": "I64", "IntStorage": "I32", "ShortStorage": "I16",
    "CharStorage": "I8", "ByteStorage": "U8", "BoolStorage": "BOOL", "UntypedStorage": "U8",
}
_TORCH_DTYPES = {
    "float32": "F32", "float": "F32", "float64": "F64", "double": "F64", "float16": "F16",
    "half": "F16", "bfloat16": "BF16", "int64": "I64", "long": "I64", "int32": "I32",
    "int": "I32", "int16": "I16", "int8": "I8", "uint8": "U8", "bool": "BOOL",
}
# numpy dtypes a pickled numpy scalar may have (a checkpoint's `global_step`, `epoch`...)
_NUMPY_SCALARS = {"f8", "f4", "f2", "i8", "i4", "i2", "i1", "u8", "u4", "u2", "u1", "b1"}


class StorageRef(NamedTuple):
    """One storage of the file: its key (zip record name / legacy key), element dtype, the element
    offset where it starts inside that record (legacy views), and its length in elements."""

    key: str
    dtype: str
    offset: int
    numel: int


class StoredTensor(NamedTuple):
    """A tensor as torch's `_rebuild_tensor_v2` would build it, without reading its bytes."""

    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    @property
    def dtype(self) -> str:
        return self.storage.dtype


class DtypeMarker(NamedTuple):
    """What `torch.FloatStorage` / `torch.float16` stands for inside a storage reference."""

    dtype: str


class _Ignored:
    """Training metadata some checkpoints carry (Lightning's ModelCheckpoint callback state,
    torch's ParameterDict): kept as an inert placeholder, its state dropped, never called."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def __setstate__(self, state: object) -> None:
        pass


def _int_tuple(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(type(v) is int and v >= 0 for v in value):
        raise pickle.UnpicklingError(f"tensor {what} must be a tuple of non-negative ints, "
                                     f"got {value!r:.80}")
    return value


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any,
                    *_ignored: Any) -> StoredTensor:
    """torch._utils._rebuild_tensor[_v2](storage, offset, size, stride, requires_grad,
    backward_hooks[, metadata]): the extra arguments only matter for training."""
    if not isinstance(storage, StorageRef):
        raise pickle.UnpicklingError(f"a tensor's storage must be a storage reference, got "
                                     f"{type(storage).__name__}")
    if type(storage_offset) is not int or storage_offset < 0:
        raise pickle.UnpicklingError(f"bad tensor storage offset {storage_offset!r:.80}")
    shape, strides = _int_tuple(size, "size"), _int_tuple(stride, "stride")
    if len(shape) != len(strides):
        raise pickle.UnpicklingError(f"tensor size {shape} and stride {strides} differ in length")
    return StoredTensor(storage, storage_offset, shape, strides)


def _rebuild_parameter(data: Any, *_ignored: Any) -> Any:
    """torch._utils._rebuild_parameter[_with_state](data, requires_grad, hooks[, state])."""
    if not isinstance(data, StoredTensor):
        raise pickle.UnpicklingError(f"a parameter must wrap a tensor, got {type(data).__name__}")
    return data


class _NumpyDtype:
    """numpy.dtype(name, align, copy) for the scalar types a checkpoint's counters use. Our own
    object, so the BUILD that follows (numpy's byte-order state) reaches no numpy code."""

    def __init__(self, name: Any, align: Any = False, copy: Any = False) -> None:
        if not isinstance(name, str) or name not in _NUMPY_SCALARS:
            raise pickle.UnpicklingError(f"numpy dtype {name!r:.40} is not a plain scalar type")
        self.dtype = np.dtype(name).newbyteorder("<")

    def __setstate__(self, state: Any) -> None:
        # (version, byte order, ...): only the byte order matters for a scalar
        if isinstance(state, tuple) and len(state) > 1 and state[1] == ">":
            self.dtype = self.dtype.newbyteorder(">")


def _numpy_scalar(dtype: Any, data: Any = None) -> Any:
    """numpy.core.multiarray.scalar(dtype, bytes): one number, read from its bytes."""
    if not isinstance(dtype, _NumpyDtype) or not isinstance(data, bytes) or \
            len(data) != dtype.dtype.itemsize:
        raise pickle.UnpicklingError("malformed numpy scalar")
    return np.frombuffer(data, dtype=dtype.dtype)[0].item()


def _codecs_encode(text: Any, encoding: Any = "utf-8") -> bytes:
    """_codecs.encode(str, "latin1"): how protocol 2 pickles carry bytes (a numpy scalar's)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is allowed only as str -> latin1 bytes")
    return text.encode("latin1")


def _set(items: Any = ()) -> set[Any]:
    if not isinstance(items, list):
        raise pickle.UnpicklingError("set() takes a list here")
    return set(items)


def _ordered_dict(*args: Any) -> collections.OrderedDict[Any, Any]:
    if args:  # pickled OrderedDicts carry their items as SETITEMS, never as arguments
        raise pickle.UnpicklingError("OrderedDict() is called with no arguments in a checkpoint")
    return collections.OrderedDict()


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): _ordered_dict,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("numpy", "dtype"): _NumpyDtype,
    ("numpy.core.multiarray", "scalar"): _numpy_scalar,
    ("numpy._core.multiarray", "scalar"): _numpy_scalar,
    ("_codecs", "encode"): _codecs_encode,
    ("builtins", "set"): _set,
    ("__builtin__", "set"): _set,
    ("torch.nn.modules.container", "ParameterDict"): _Ignored,
    ("pytorch_lightning.callbacks.model_checkpoint", "ModelCheckpoint"): _Ignored,
    ("lightning.pytorch.callbacks.model_checkpoint", "ModelCheckpoint"): _Ignored,
}
_ALLOWED.update({("torch", name): DtypeMarker(dtype) for name, dtype in STORAGE_DTYPES.items()})
_ALLOWED.update({("torch", name): DtypeMarker(dtype) for name, dtype in _TORCH_DTYPES.items()})
# the tar format records each tensor's class (torch.FloatTensor, torch.cuda.HalfTensor...)
_ALLOWED.update({(module, name.replace("Storage", "Tensor")): DtypeMarker(dtype)
                 for module in ("torch", "torch.cuda") for name, dtype in STORAGE_DTYPES.items()
                 if name != "UntypedStorage"})


class _RefusedGlobal(pickle.UnpicklingError):
    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.qualified = f"{module}.{name}"


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes | BinaryIO, storage: Callable[[Any], StorageRef],
                 objects: dict[str, Any] | None,
                 classes: Callable[[str, str], Any] | None = None) -> None:
        super().__init__(io.BytesIO(data) if isinstance(data, bytes) else data,
                         encoding="latin1")
        self._storage, self._objects, self._classes = storage, objects, classes

    def find_class(self, module: str, name: str) -> Any:
        # 1. the only way a pickle reaches a callable: answer with ours, or refuse by name
        try:
            return _ALLOWED[(module, name)]
        except (KeyError, TypeError):
            stand_in = None if self._classes is None else self._classes(str(module), str(name))
            if stand_in is None:
                raise _RefusedGlobal(str(module), str(name)) from None
            return stand_in

    def persistent_load(self, pid: Any) -> Any:
        # 2. the tar format's ids: the key of a tensor or storage read before the pickle
        if self._objects is not None:
            if isinstance(pid, str) and pid in self._objects:
                return self._objects[pid]
            raise pickle.UnpicklingError(f"unknown persistent id {pid!r:.80} (a pickled module "
                                         "class, or a tensor the file does not hold)")
        # 3. ('storage', type, key, location, numel[, view]): type was resolved by find_class
        if not (isinstance(pid, tuple) and len(pid) in (5, 6) and pid[0] == "storage"
                and isinstance(pid[1], DtypeMarker) and isinstance(pid[2], str)
                and isinstance(pid[3], str) and type(pid[4]) is int and pid[4] >= 0):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.120}")
        return self._storage(pid)


def safe_loads(data: bytes | BinaryIO, storage: Callable[[Any], StorageRef], where: object, *,
               objects: dict[str, Any] | None = None,
               classes: Callable[[str, str], Any] | None = None) -> Any:
    """Unpickle `data` (one pickle of a PyTorch file: bytes, or an open file left just past the
    pickle's STOP) with tensors as `StoredTensor`s.

    storage(pid) turns a checked ('storage', DtypeMarker, key, location, numel[, view]) tuple
    into a StorageRef; with `objects` (the tar format) a persistent id is instead a key of it,
    and anything else is refused. `classes(module, name)`: the caller's inert stand-in for a
    global outside the allowlist (a pickled module class: `torch_modules.module_classes`), or
    None to refuse it. Raises WeightsError naming `where`: for a global outside the
    allowlist (naming it; nothing was called) or for a malformed pickle. Like `torch.load(f,
    weights_only=True)`, but torch is never imported and tensors are not read.
    """
    try:
        return _Unpickler(data, storage, objects, classes).load()
    except _RefusedGlobal as refused:
        raise WeightsError(
            f"{where}: refusing to load: its pickle calls {refused.qualified!r}, which is not "
            "one of the tensor-rebuilding functions a weights file needs, so it may run code "
            "(nothing was run). Use the model's .safetensors release; a file that only holds "
            "weights never names it") from None
    except WeightsError:
        raise
    except RecursionError:
        raise WeightsError(f"{where}: not a valid PyTorch file: its pickle nests too deeply; "
                           "the file is damaged or not a weights file") from None
    except Exception as error:  # a damaged pickle fails in many ways; all are the file's fault
        raise WeightsError(f"{where}: not a valid PyTorch file: its pickle is malformed "
                           f"({type(error).__name__}: {error!s:.200}); the file is damaged or "
                           "incomplete (re-download it) or is not a weights file") from None
