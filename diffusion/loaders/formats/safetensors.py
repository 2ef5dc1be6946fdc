"""A small reader for the safetensors format: header parsed and checked up front, tensors read
one at a time on demand.

The format (https://github.com/huggingface/safetensors): an 8-byte little-endian header length
N, N bytes of JSON `{key: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`,
then the data, offsets relative to byte 8 + N.

Why not `safetensors.safe_open(..., framework="numpy")`: it cannot return bfloat16 (numpy has no
such dtype) and its errors on damaged files are terse; this reader widens bf16 to float32 and
names the file and key in every error. Each read is one `readinto` into a fresh array: nothing is
cached, so a caller that uploads each tensor and drops it never holds two copies of the weights.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import WeightsError
from ..reading import read_cast
from .float8 import FLOAT8, float8_scales, float8_to_float32
from .read_once import ReadOnce

__all__ = ["SafetensorsFile"]

# safetensors dtype -> numpy dtype of the stored bytes (bf16 is read as uint16, then widened)
STORED = {
    "F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2",
    "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1",
    "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1", "BOOL": "?",
    "F8_E4M3": "u1", "F8_E5M2": "u1",  # read as bytes, then widened (float8)
}
ITEMSIZE = {name: np.dtype(code).itemsize for name, code in STORED.items()}
# the safetensors library refuses headers above 100 MB; a larger length means a damaged file
_MAX_HEADER = 100_000_000


class _Entry(NamedTuple):
    dtype: str
    shape: tuple[int, ...]
    begin: int
    end: int


def bf16_to_f32(bits: np.ndarray) -> np.ndarray:
    """Widen bfloat16 stored as uint16 to float32 (bf16 is the top half of an f32)."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def bf16_to_f16(bits: np.ndarray) -> np.ndarray:
    """bfloat16 stored as uint16 to float16, bit for bit `bf16_to_f32(bits).astype(float16)`
    (every one of the 65,536 patterns, tested): bfloat16's 7 fraction bits fit in float16's
    10, so over float16's normal exponents the bits only move; the few others (float16's
    subnormals and zero, overflow, infinities, NaNs) take numpy's cast. 4x numpy's float32 ->
    float16 cast on one core, which made FLUX.1's bf16 files a minute of a cold load."""
    exponent = bits >> 7
    exponent &= 0xFF
    out = bits & 0x7F
    out <<= 3
    out |= bits & 0x8000
    exponent -= 113  # float16's normal exponents are now 0..29; the rest wrapped past them
    odd = exponent > 29
    exponent += 1
    exponent <<= 10
    out |= exponent
    if odd.any():
        with np.errstate(over="ignore"):  # overflow is infinity, as in the cast
            out[odd] = bf16_to_f32(bits[odd]).astype(np.float16).view(np.uint16)
    return out.view(np.float16)


# What read_as casts: stored float types, as numpy reads them, and how they are widened first
_CASTS = {"F64": ("<f8", None), "F32": ("<f4", None), "F16": ("<f2", None),
          "BF16": ("<u2", bf16_to_f32)}


class SafetensorsFile:
    """The parsed, validated header of one `.safetensors` file; tensors are read on demand.

    Construction reads only the header (raises WeightsError when the file is missing, too short,
    has a bad header, or a tensor whose bytes lie outside the file). `read(key)` returns a fresh
    numpy array in the stored dtype, except bfloat16 and float8 (e4m3fn, e5m2), which come back
    as float32.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.metadata: dict[str, str]
        self._entries: dict[str, _Entry]
        self.metadata, self._entries, self._data_start = _parse_once(self.path)
        # ComfyUI's scaled float8 (float8): factors applied on reading, then hidden
        self._scales, self._hidden = float8_scales(
            {key: (e.dtype, math.prod(e.shape)) for key, e in self._entries.items()})

    def __repr__(self) -> str:
        return f"SafetensorsFile({str(self.path)!r}, {len(self._entries)} tensors)"

    def keys(self) -> list[str]:
        """Tensor names in file order (a scaled float8 file's factors and markers left out)."""
        return [key for key in self._entries if key not in self._hidden]

    def __contains__(self, key: object) -> bool:
        return key in self._entries and key not in self._hidden

    def __len__(self) -> int:
        return len(self._entries) - len(self._hidden)

    def shape(self, key: str) -> tuple[int, ...]:
        """Shape of tensor `key` (no data is read)."""
        return self._entry(key).shape

    def dtype(self, key: str) -> str:
        """Stored safetensors dtype name of `key`: "F32", "F16", "BF16", "I64", ..."""
        return self._entry(key).dtype

    def read(self, key: str, *, rows: tuple[int, int] | None = None) -> np.ndarray:
        """Read tensor `key` (or only rows `start:stop` of its first axis, which are contiguous
        bytes, so a fused q/k/v matrix is split without reading the rest). Like
        `safe_open(path, "numpy").get_tensor(key)`, but bf16 is widened to float32, and a
        scaled float8 weight comes back as float32 values times its factor (float8).
        """
        if key not in self._scales:
            return self._read(key, rows)
        factor = self._scales[key]
        if factor is None:
            raise WeightsError(
                f"{self.path}: tensor {key!r} is stored as {self.dtype(key)} with ComfyUI's "
                "block or integer scales (a mixed-precision nvfp4 / int8 file), which this "
                "loader cannot read; use the model's fp16, bf16, fp8 or fp8_scaled file")
        return self._read(key, rows) * self._read(factor, None).reshape(-1)[0]

    def read_as(self, key: str, dtype: np.dtype, *, rows: tuple[int, int] | None = None
                ) -> np.ndarray | None:
        """`read(key, rows=rows).astype(dtype)`, bit for bit, for a float tensor stored as
        F64, F32, F16 or BF16, without holding the stored values: read and cast in pieces on
        threads (loaders.reading). None for every other stored type (integers, float8)."""
        entry = self._entry(key)
        if entry.dtype not in _CASTS or key in self._scales:
            return None
        shape, begin, end = self._span(key, entry, rows)
        stored, widen = _CASTS[entry.dtype]
        if widen is bf16_to_f32 and np.dtype(dtype) == np.float16:
            widen = bf16_to_f16
        flat = read_cast(self.path, self._data_start + begin, np.dtype(stored),
                         (end - begin) // np.dtype(stored).itemsize, np.dtype(dtype),
                         widen=widen, what=repr(key))
        return flat.reshape(shape)

    def locate(self, key: str, *, rows: tuple[int, int] | None = None
               ) -> tuple[str, tuple[int, ...], int, int] | None:
        """(stored dtype name, shape, byte offset in the file, byte count) of tensor `key`
        (or of rows `start:stop` of its first axis), for a reader that moves the stored
        bytes itself (bfloat16 converted on the GPU, loaders.device_cast); None where the
        bytes alone are not the values (a scaled float8 weight)."""
        entry = self._entry(key)
        if key in self._scales:
            return None
        shape, begin, end = self._span(key, entry, rows)
        return entry.dtype, shape, self._data_start + begin, end - begin

    @staticmethod
    def _span(key: str, entry: _Entry, rows: tuple[int, int] | None
              ) -> tuple[tuple[int, ...], int, int]:
        """(shape, begin, end) of the tensor, or of rows `start:stop` of its first axis."""
        shape, begin, end = entry.shape, entry.begin, entry.end
        if rows is not None:
            start, stop = rows
            if not (shape and 0 <= start <= stop <= shape[0]):
                raise ValueError(f"rows {rows} out of range for {key!r} of shape {shape}")
            row_bytes = (end - begin) // shape[0] if shape[0] else 0
            shape = (stop - start, *shape[1:])
            begin, end = begin + start * row_bytes, begin + stop * row_bytes
        return shape, begin, end

    def _read(self, key: str, rows: tuple[int, int] | None) -> np.ndarray:
        entry = self._entry(key)  # its dtype is one of STORED's: _check_entry saw to it
        shape, begin, end = self._span(key, entry, rows)
        out = np.empty(shape, dtype=STORED[entry.dtype])
        try:
            with open(self.path, "rb") as file:
                file.seek(self._data_start + begin)
                got = file.readinto(out.reshape(-1).view(np.uint8).data)
        except OSError as error:
            raise WeightsError(f"{self.path}: cannot read tensor {key!r}: {error}") from error
        if got != end - begin:
            raise WeightsError(f"{self.path}: file ended inside tensor {key!r} (it changed or was "
                               "truncated after opening); re-download or re-save it")
        if entry.dtype in FLOAT8:
            return float8_to_float32(out, entry.dtype)
        return bf16_to_f32(out) if entry.dtype == "BF16" else out

    def _entry(self, key: str) -> _Entry:
        try:
            return self._entries[key]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {key!r}") from None


def _parse_once(path: Path) -> tuple[dict[str, str], dict[str, _Entry], int]:
    """`_parse(path)`, from the files read before when unchanged since (copies of its
    dicts)."""
    metadata, entries, data_start = _PARSED(path)
    return dict(metadata), dict(entries), data_start


def _parse(path: Path) -> tuple[dict[str, str], dict[str, _Entry], int]:
    hint = ""

    def bad(why: str) -> WeightsError:
        return WeightsError(f"{path}: not a valid safetensors file: {why}{hint}; the file is "
                            "damaged or incomplete (re-download it) or is not a safetensors file")

    try:
        with open(path, "rb") as file:
            size = file.seek(0, 2)
            file.seek(0)
            prefix = file.read(8)
            if len(prefix) < 8:
                raise bad(f"{size} bytes, shorter than the 8-byte header length")
            # zip (torch.save) or pickle protocol 2-5 magic; a valid length may start alike, so
            # this only explains a failure below
            if prefix[:4] == b"PK\x03\x04" or (prefix[0] == 0x80 and 2 <= prefix[1] <= 5):
                hint = " (it looks like a PyTorch zip/pickle checkpoint with a .safetensors name)"
            (length,) = struct.unpack("<Q", prefix)
            if length > min(_MAX_HEADER, size - 8):
                raise bad(f"header length {length} runs past the end of the {size}-byte file")
            raw = file.read(length)
    except FileNotFoundError:
        raise WeightsError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise WeightsError(f"{path}: is a directory, expected a .safetensors file") from None
    except OSError as error:
        raise WeightsError(f"{path}: cannot read: {error}") from error
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise bad(f"header is not JSON ({error})") from None
    if not isinstance(header, dict):
        raise bad("header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise bad("__metadata__ is not an object")
    data_size = size - 8 - length
    entries = {key: _check_entry(key, info, data_size, bad) for key, info in header.items()}
    return {str(k): str(v) for k, v in metadata.items()}, entries, 8 + length


def _check_entry(key: str, info: Any, data_size: int, bad: Any) -> _Entry:
    try:
        dtype, shape, (begin, end) = info["dtype"], tuple(info["shape"]), info["data_offsets"]
        valid = (dtype in ITEMSIZE and all(isinstance(d, int) and d >= 0 for d in shape)
                 and isinstance(begin, int) and isinstance(end, int) and 0 <= begin <= end)
    except (TypeError, KeyError, ValueError):
        valid = False
    if not valid:
        raise bad(f"entry for tensor {key!r} is malformed: {info!r}")
    if end > data_size:
        raise bad(f"tensor {key!r} has data offsets {begin}..{end} past the end of the data "
                  f"({data_size} bytes)")
    if end - begin != math.prod(shape) * ITEMSIZE[dtype]:
        raise bad(f"tensor {key!r} of shape {list(shape)} {dtype} needs "
                  f"{math.prod(shape) * ITEMSIZE[dtype]} bytes, its offsets span {end - begin}")
    return _Entry(dtype, shape, begin, end)


# the last few headers parsed (read_once); `_parse` looked up at each call
_PARSED = ReadOnce(lambda path: _parse(path))
