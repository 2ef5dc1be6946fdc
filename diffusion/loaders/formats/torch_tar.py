"""torch.save's format before torch 0.4: an uncompressed tar of four members, read without torch.

- `sys_info`: a pickled dict (`little_endian`, type sizes).
- `storages`: a pickled count, then per storage a pickled (key, location, storage type), an
  int64 element count and the storage's bytes; then a pickled list of storage views
  (view key, root key, element offset, element count).
- `tensors`: a pickled count, then per tensor a pickled (key, storage key, tensor type) and its
  metadata: int32 ndim, 4 bytes of padding, int64 sizes, int64 strides, int64 storage offset.
- `pickle`: the object, whose persistent ids are the keys (as strings) of those tensors and
  storages.

torch: `serialization._legacy_load`'s tar branch (torch >= 0.4 reads these files, never writes
them). Every pickle goes through `torch_pickle.safe_loads`; the storages are not read here:
their places in the file go into `records` for `TorchFile` to map.
"""

from __future__ import annotations

import io
import pickle
import struct
import tarfile
from pathlib import Path
from typing import Any, BinaryIO

from ..errors import WeightsError
from .safetensors import ITEMSIZE
from .torch_pickle import DtypeMarker, StorageRef, StoredTensor, safe_loads

__all__ = ["read_tar"]

_MEMBERS = ("sys_info", "pickle", "storages", "tensors")
_MAX_METADATA = 256 * 2**20  # the object's and the tensors' pickles; storages are not read
_MAX_NDIM = 64


def read_tar(file: BinaryIO, records: dict[str, tuple[int, int]], path: Path) -> Any:
    """The object of the tar-format PyTorch file open as `file`, with tensors as StoredTensors;
    fills `records` with each storage's (file offset, bytes). Raises WeightsError naming `path`
    for a damaged file, a missing member or a global outside the allowlist."""
    try:
        file.seek(0)
        with tarfile.open(fileobj=file, mode="r:") as archive:
            members = {m.name: m for m in archive.getmembers() if m.isfile()}
    except (tarfile.TarError, EOFError) as error:
        raise WeightsError(f"{path}: damaged tar container ({error}); re-download it") from None
    missing = [name for name in _MEMBERS if name not in members]
    if missing:
        raise WeightsError(f"{path}: a tar archive but not a PyTorch file (no {missing[0]!r} "
                           "member); pass a torch.save file")

    def small(name: str) -> bytes:
        info = members[name]
        if info.size > _MAX_METADATA:
            raise WeightsError(f"{path}: its {name!r} member claims {info.size} bytes; the file "
                               "is damaged or not a checkpoint")
        file.seek(info.offset_data)
        data = file.read(info.size)
        if len(data) != info.size:
            raise WeightsError(f"{path}: file ends inside its {name!r} member; re-download it")
        return data

    info = safe_loads(small("sys_info"), _no_storage, path)
    if not isinstance(info, dict) or info.get("little_endian") is not True:
        raise WeightsError(f"{path}: saved on a big-endian machine or without sys_info; re-save "
                           "it on a little-endian one")
    objects: dict[str, Any] = _storages(file, members["storages"], records, path)
    objects.update(_tensors(small("tensors"), objects, path))
    return safe_loads(small("pickle"), _no_storage, path, objects=objects)


def _no_storage(pid: Any) -> StorageRef:
    raise pickle.UnpicklingError(f"unexpected persistent id {pid!r:.80}")


def _storages(file: BinaryIO, member: tarfile.TarInfo, records: dict[str, tuple[int, int]],
              path: Path) -> dict[str, StorageRef]:
    """Storage key -> StorageRef, roots and views; each root's bytes located, none read."""
    begin, end = member.offset_data, min(member.offset_data + member.size, file.seek(0, 2))

    def load(what: str) -> Any:
        if file.tell() >= end:
            raise WeightsError(f"{path}: its storages member ends before {what}; the file is "
                               "damaged")
        return safe_loads(file, _no_storage, path)

    file.seek(begin)
    count = load("the storage count")
    if type(count) is not int or count < 0:
        raise WeightsError(f"{path}: damaged tar PyTorch file (storage count {count!r:.40})")
    out: dict[str, StorageRef] = {}
    for _ in range(count):
        record = load("a storage record")
        if not (isinstance(record, tuple) and len(record) == 3 and type(record[0]) is int
                and isinstance(record[2], DtypeMarker) and record[2].dtype in ITEMSIZE):
            raise WeightsError(f"{path}: damaged tar PyTorch file (storage record "
                               f"{record!r:.80})")
        key, dtype = str(record[0]), record[2].dtype
        size = file.read(8)
        numel = struct.unpack("<q", size)[0] if len(size) == 8 else -1
        where = file.tell()
        nbytes = numel * ITEMSIZE[dtype]
        if numel < 0 or where + nbytes > end:
            raise WeightsError(f"{path}: storage {key!r} runs past the end of its member or "
                               "of the file; re-download it")
        records[key] = (where, nbytes)
        out[key] = StorageRef(key, dtype, 0, numel)
        file.seek(where + nbytes)
    views = load("the storage views")
    if not isinstance(views, list):
        raise WeightsError(f"{path}: damaged tar PyTorch file (storage views {views!r:.80})")
    for view in views:
        if not (isinstance(view, tuple) and len(view) == 4
                and all(type(v) is int and v >= 0 for v in view) and str(view[1]) in out):
            raise WeightsError(f"{path}: damaged tar PyTorch file (storage view {view!r:.80})")
        root = out[str(view[1])]
        if view[2] + view[3] > root.numel:
            raise WeightsError(f"{path}: storage view {view[0]} reaches past its root storage")
        out[str(view[0])] = StorageRef(root.key, root.dtype, view[2], view[2] + view[3])
    return out


def _tensors(data: bytes, storages: dict[str, StorageRef],
             path: Path) -> dict[str, StoredTensor]:
    """Tensor key -> StoredTensor, from the tensors member."""
    stream = io.BytesIO(data)

    def load() -> Any:
        return safe_loads(stream, _no_storage, path)

    def ints(count: int, code: str) -> tuple[int, ...]:
        raw = stream.read(struct.calcsize(f"<{count}{code}"))
        if len(raw) != struct.calcsize(f"<{count}{code}"):
            raise WeightsError(f"{path}: its tensors member ends inside a tensor's metadata")
        return struct.unpack(f"<{count}{code}", raw)

    count = load()
    if type(count) is not int or count < 0:
        raise WeightsError(f"{path}: damaged tar PyTorch file (tensor count {count!r:.40})")
    out: dict[str, StoredTensor] = {}
    for _ in range(count):
        record = load()
        if not (isinstance(record, tuple) and len(record) == 3 and type(record[0]) is int
                and str(record[1]) in storages):
            raise WeightsError(f"{path}: damaged tar PyTorch file (tensor record {record!r:.80})")
        ndim = ints(2, "i")[0]  # int32 ndim, then 4 bytes torch never reads
        if not 0 <= ndim <= _MAX_NDIM:
            raise WeightsError(f"{path}: damaged tar PyTorch file (a tensor of {ndim} dimensions)")
        shape, stride, (offset,) = ints(ndim, "q"), ints(ndim, "q"), ints(1, "q")
        if min((*shape, *stride, offset), default=0) < 0:
            raise WeightsError(f"{path}: damaged tar PyTorch file (negative size or stride)")
        out[str(record[0])] = StoredTensor(storages[str(record[1])], offset, shape, stride)
    return out
