"""PyTorch files (`torch.save`: .ckpt, .pt, .pth, .bin) read without torch and without running
their pickle, behind the same interface as `SafetensorsFile`.

Three containers:
- zip (torch >= 1.6): `ARCHIVE/data.pkl` (the pickle) and `ARCHIVE/data/KEY` (one record per
  storage, stored uncompressed, so a tensor is read straight from its bytes in the file).
- legacy (`_use_new_zipfile_serialization=False`): five pickles in a row (magic number, protocol
  version, sys info, the object, the sorted storage keys), then each storage as an int64 element
  count and its bytes.
- tar (torch < 0.4): see `torch_tar`.

In all three every storage is one run of bytes in the file, so the file is memory-mapped (once,
read-only) and a tensor is a strided view of the mapping: `view(key)` copies nothing and
`read(key)` copies only that tensor (where the file cannot be mapped, its bytes are read).

The pickle is read by `torch_pickle.safe_loads` (an allowlist of globals; tensors become
descriptors). The tensors are then taken from where checkpoints nest them: `state_dict`
(Lightning/LDM), `params_ema` before `params` (BasicSR upscalers), other nested dicts joined with
"." (an embedding's `string_to_param.*`), and a DataParallel `module.` prefix dropped.
"""

from __future__ import annotations

import mmap
import pickle
import struct
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import PICKLE_SUFFIXES, WeightsError
from .safetensors import ITEMSIZE, STORED, SafetensorsFile, bf16_to_f32
from .torch_modules import PickledModule
from .torch_pickle import StorageRef, StoredTensor, safe_loads
from .torch_tar import read_tar

__all__ = ["TorchFile", "open_weights_file"]

_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_ZIP_LOCAL_HEADER = struct.Struct("<4s2B4HL2L2H")
_MAX_PICKLE = 256 * 2**20  # an SDXL checkpoint's data.pkl is under 1 MB; this stops zip bombs
# BasicSR/Real-ESRGAN keep the EMA weights beside the raw ones; the EMA ones are the release
_WRAPPERS = ("state_dict", "params_ema", "params")


class TorchFile:
    """The tensors of one PyTorch file, read on demand: `keys()`, `shape(key)`, `dtype(key)`
    (safetensors names: "F32", "F16", "BF16", "I64"...), `read(key, rows=)` as
    `SafetensorsFile`; `metadata` is empty (pickles carry none).

    Raises WeightsError naming the file when it is missing, damaged, of an unknown container, or
    when its pickle names a global outside the allowlist (see `torch_pickle`). `classes`: inert
    stand-ins for pickled module classes (`torch_modules.module_classes`); `tree` is then the
    unpickled object with its modules as `PickledModule`s, and their tensors are listed too.
    torch: `torch.load(path, map_location="cpu", weights_only=True)` and its `state_dict`.
    """

    def __init__(self, path: str | Path, *,
                 classes: Callable[[str, str], Any] | None = None) -> None:
        self.path = Path(path)
        self._classes = classes
        self.metadata: dict[str, str] = {}
        self._records: dict[str, tuple[int, int]] = {}  # storage key -> (file offset, bytes)
        self._map: mmap.mmap | None = None
        self._unmappable = False
        tree = self._open()
        self.tree = tree  # the unpickled object, tensors as StoredTensor descriptors
        self.tensors = _state_dict(tree)
        # the state dict's plain entries beside its tensors (DeepDanbooru's "tags": a list of
        # its tag names)
        node = _inner(tree)
        self.objects: dict[str, Any] = {
            key: value for key, value in (node.items() if isinstance(node, dict) else ())
            if isinstance(key, str) and isinstance(value, (str, int, float, list, tuple))}

    def __repr__(self) -> str:
        return f"TorchFile({str(self.path)!r}, {len(self.tensors)} tensors)"

    def keys(self) -> list[str]:
        return list(self.tensors)

    def __contains__(self, key: object) -> bool:
        return key in self.tensors

    def __len__(self) -> int:
        return len(self.tensors)

    def shape(self, key: str) -> tuple[int, ...]:
        return self._tensor(key).shape

    def dtype(self, key: str) -> str:
        return self._tensor(key).dtype

    def read(self, key: str, *, rows: tuple[int, int] | None = None) -> np.ndarray:
        """A fresh array of tensor `key` (rows `start:stop` of its first axis when given); bf16
        is widened to float32. torch: `state_dict[key].numpy()`."""
        out = self.view(key, rows=rows).copy(order="C")
        return bf16_to_f32(out) if self._tensor(key).dtype == "BF16" else out

    def view(self, key: str, *, rows: tuple[int, int] | None = None) -> np.ndarray:
        """Tensor `key` where it lies in the file: a read-only, possibly strided array over the
        file's memory mapping, in the stored dtype (bf16 as its uint16 bits); no bytes are read
        until it is used. Where the file cannot be mapped, an array of the bytes read.
        torch: `torch.load(path, mmap=True)[key]`."""
        tensor = self._tensor(key)
        if tensor.dtype not in STORED:
            raise WeightsError(f"{self.path}: tensor {key!r} is stored as {tensor.dtype}, which "
                               "this loader cannot read")
        itemsize = ITEMSIZE[tensor.dtype]
        shape, strides = tensor.shape, tensor.stride
        start = tensor.storage.offset + tensor.offset
        extent = 0 if 0 in shape else 1 + sum((n - 1) * s for n, s in zip(shape, strides))
        if start + extent > tensor.storage.numel:
            raise WeightsError(f"{self.path}: tensor {key!r} of shape {list(shape)} reaches past "
                               "the end of its storage; the file is damaged")
        raw = self._bytes(tensor.storage.key, start * itemsize, extent * itemsize, key)
        flat = np.frombuffer(raw, dtype=STORED[tensor.dtype], count=extent)
        array = np.lib.stride_tricks.as_strided(
            flat, shape, tuple(s * itemsize for s in strides), writeable=False)
        if rows is not None:
            if not (shape and 0 <= rows[0] <= rows[1] <= shape[0]):
                raise ValueError(f"rows {rows} out of range for {key!r} of shape {shape}")
            array = array[rows[0]:rows[1]]
        return array

    def _tensor(self, key: str) -> StoredTensor:
        try:
            return self.tensors[key]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {key!r}") from None

    def _bytes(self, storage: str, begin: int, count: int, key: str) -> memoryview | bytearray:
        """`count` bytes at `begin` of a storage record: a slice of the mapping, else read."""
        where, size = self._records[storage]
        if begin + count > size:  # checked before allocating: the sizes come from the pickle
            raise WeightsError(f"{self.path}: tensor {key!r} reaches past the end of its "
                               "storage record; the file is damaged")
        mapped = self._mapping()
        if mapped is not None:
            if where + begin + count > len(mapped):
                raise WeightsError(f"{self.path}: file ended inside tensor {key!r}; "
                                   "re-download it")
            return memoryview(mapped)[where + begin:where + begin + count]
        buffer = bytearray(count)
        try:
            with open(self.path, "rb") as file:
                file.seek(where + begin)
                got = file.readinto(buffer)
        except OSError as error:
            raise WeightsError(f"{self.path}: cannot read tensor {key!r}: {error}") from error
        if got != count:
            raise WeightsError(f"{self.path}: file ended inside tensor {key!r}; re-download it")
        return buffer

    def _mapping(self) -> mmap.mmap | None:
        """The whole file mapped read-only (on first use; it stays open as long as this object
        or a view of it lives), or None where it cannot be mapped (a pipe, an odd filesystem)."""
        if self._map is None and not self._unmappable:
            try:
                with open(self.path, "rb") as file:
                    self._map = mmap.mmap(file.fileno(), 0, access=mmap.ACCESS_READ)
            except (OSError, ValueError):
                self._unmappable = True
        return self._map

    def _open(self) -> Any:
        try:
            with open(self.path, "rb") as file:
                head = file.read(262)
                if head[:4] == b"PK\x03\x04":
                    return self._open_zip()
                if head[257:262] == b"ustar":
                    return read_tar(file, self._records, self.path)
                file.seek(0)
                return self._open_legacy(file)
        except FileNotFoundError:
            raise WeightsError(f"{self.path}: file not found") from None
        except IsADirectoryError:
            raise WeightsError(f"{self.path}: is a directory, expected a file") from None
        except OSError as error:
            raise WeightsError(f"{self.path}: cannot read: {error}") from error

    def _open_zip(self) -> Any:
        try:
            with zipfile.ZipFile(self.path) as archive, open(self.path, "rb") as raw:
                pickles = [n for n in archive.namelist() if n.endswith("data.pkl")
                           and n.count("/") == 1]
                if len(pickles) != 1:
                    raise WeightsError(f"{self.path}: a zip file but not a PyTorch one (no single "
                                       "ARCHIVE/data.pkl); pass a torch.save file")
                prefix = pickles[0][: -len("data.pkl")]
                if prefix + "byteorder" in archive.namelist() and \
                        archive.read(prefix + "byteorder") != b"little":
                    raise WeightsError(f"{self.path}: saved on a big-endian machine; re-save it "
                                       "on a little-endian one")
                members = {info.filename: info for info in archive.infolist()}
                if members[pickles[0]].file_size > _MAX_PICKLE:
                    raise WeightsError(f"{self.path}: its pickle claims "
                                       f"{members[pickles[0]].file_size} bytes; a weights file's "
                                       "is a few MB. The file is damaged or not a checkpoint")
                data = archive.read(pickles[0])

                def storage(pid: tuple[Any, ...]) -> StorageRef:
                    name = f"{prefix}data/{pid[2]}"
                    if pid[2] not in self._records:
                        self._records[pid[2]] = _stored_member(raw, members.get(name), name,
                                                               self.path)
                    return StorageRef(pid[2], pid[1].dtype, 0, pid[4])

                return safe_loads(data, storage, self.path, classes=self._classes)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as error:
            raise WeightsError(f"{self.path}: damaged zip container ({error}); re-download "
                               "it") from None

    def _open_legacy(self, file: Any) -> Any:
        def refuse_storage(pid: Any) -> StorageRef:
            raise pickle.UnpicklingError("storage reference outside the object pickle")

        if safe_loads(file, refuse_storage, self.path) != _LEGACY_MAGIC or \
                safe_loads(file, refuse_storage, self.path) != 1001:
            raise WeightsError(f"{self.path}: a pickle, but not a torch.save file (no PyTorch "
                               "magic number); only weights files saved by torch are read")
        safe_loads(file, refuse_storage, self.path)  # sys info: byte order and type sizes
        kinds: dict[str, str] = {}

        def storage(pid: tuple[Any, ...]) -> StorageRef:
            kinds.setdefault(pid[2], pid[1].dtype)
            view = pid[5] if len(pid) == 6 else None
            if view is None:
                return StorageRef(pid[2], pid[1].dtype, 0, pid[4])
            if not (isinstance(view, tuple) and len(view) == 3
                    and all(type(v) is int and v >= 0 for v in view[1:])):
                raise pickle.UnpicklingError(f"malformed storage view {view!r:.80}")
            return StorageRef(pid[2], pid[1].dtype, view[1], view[1] + view[2])

        tree = safe_loads(file, storage, self.path, classes=self._classes)
        keys = safe_loads(file, refuse_storage, self.path)
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise WeightsError(f"{self.path}: damaged legacy PyTorch file (bad storage list)")
        # 1. each storage: int64 element count, then its bytes
        where, size = file.tell(), file.seek(0, 2)
        for key in keys:
            file.seek(where)
            count = file.read(8)
            itemsize = ITEMSIZE.get(kinds.get(key, "U8"), 1)
            if len(count) < 8:
                raise WeightsError(f"{self.path}: file ends before storage {key!r}; re-download")
            nbytes = struct.unpack("<q", count)[0] * itemsize
            if nbytes < 0 or where + 8 + nbytes > size:
                raise WeightsError(f"{self.path}: storage {key!r} runs past the end of the file")
            self._records[key] = (where + 8, nbytes)
            where += 8 + nbytes
        missing = set(kinds) - set(self._records)
        if missing:
            raise WeightsError(f"{self.path}: damaged legacy PyTorch file: storage "
                               f"{sorted(missing)[0]!r} has no data")
        return tree


def _stored_member(raw: Any, info: zipfile.ZipInfo | None, name: str,
                   path: Path) -> tuple[int, int]:
    """(file offset, size) of an uncompressed zip member's bytes."""
    if info is None:
        raise WeightsError(f"{path}: the pickle names storage {name!r}, which the zip lacks; "
                           "the file is damaged")
    if info.compress_type != zipfile.ZIP_STORED:
        raise WeightsError(f"{path}: storage {name!r} is compressed, which torch.save never "
                           "does; re-save the file with torch.save")
    raw.seek(info.header_offset)
    header = raw.read(_ZIP_LOCAL_HEADER.size)
    if len(header) != _ZIP_LOCAL_HEADER.size or header[:4] != b"PK\x03\x04":
        raise WeightsError(f"{path}: damaged zip entry for {name!r}; re-download it")
    fields = _ZIP_LOCAL_HEADER.unpack(header)
    return info.header_offset + _ZIP_LOCAL_HEADER.size + fields[-2] + fields[-1], info.file_size


def _inner(tree: Any) -> Any:
    """The state dict inside the wrappers trainers put around it (see the module docstring)."""
    node = tree
    while isinstance(node, dict):
        inner = next((node[k] for k in _WRAPPERS if isinstance(node.get(k), dict)), None)
        if inner is None:
            break
        node = inner
    return node


def _state_dict(tree: Any) -> dict[str, StoredTensor]:
    """The tensors of a checkpoint, from where trainers nest them (see the module docstring)."""
    node = _inner(tree)
    tensors: dict[str, StoredTensor] = {}

    def walk(value: Any, prefix: str) -> None:
        if isinstance(value, StoredTensor):
            tensors[prefix[:-1]] = value
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{prefix}{key}.")
        elif isinstance(value, PickledModule):
            for key, item in value.tensors():
                walk(item, f"{prefix}{key}.")

    walk(node, "")
    if tensors and all(key.startswith("module.") for key in tensors):
        tensors = {key[len("module."):]: value for key, value in tensors.items()}
    return tensors


def open_weights_file(path: str | Path) -> SafetensorsFile | TorchFile:
    """`TorchFile` for .ckpt/.pt/.pth/.bin/.pkl, else `SafetensorsFile` (by suffix)."""
    path = Path(path)
    if path.suffix.lower() in PICKLE_SUFFIXES:
        return TorchFile(path)
    return SafetensorsFile(path)
