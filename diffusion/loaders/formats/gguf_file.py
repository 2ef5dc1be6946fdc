"""GGUF model files (llama.cpp's format, as ComfyUI-GGUF and stable-diffusion.cpp write Stable
Diffusion UNets): read with the `gguf` package's reader, checked tensor by tensor up front.

A UNet-only GGUF names its tensors as the original LDM checkpoint does without the
`model.diffusion_model.` prefix (ComfyUI-GGUF's convert.py: `input_blocks.1.0.in_layers.2.
weight`, ...), or with diffusers' names (`down_blocks.0.resnets.0.conv1.weight`). Shapes are
stored in ggml order (innermost first) and given here in numpy order. A tensor quantized as a
2-D matrix for a 4-D conv weight carries its true shape in the metadata key
`comfy.gguf.orig_shape.<name>` (ComfyUI-GGUF's convention; the bytes are the same C order).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import WeightsError
from ..weights import TensorFile
from .read_once import ReadOnce
from .safetensors import SafetensorsFile

__all__ = ["ORIG_SHAPE_KEY", "GGUFFile", "tensor_file"]

ORIG_SHAPE_KEY = "comfy.gguf.orig_shape."
# Formats the GPU keeps quantized (gpustd.quant.FORMATS' names) and float ones read as arrays.
QUANTIZED = ("q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q5_k", "q6_k")
FLOATS = ("f32", "f16", "bf16")


def import_gguf() -> Any:
    try:
        import gguf
    except ImportError:
        raise WeightsError("reading GGUF files needs the `gguf` package: pip install "
                           "'avx-gpu[diffusion]' (or pip install gguf)") from None
    return gguf


def _reader_class(gguf: Any) -> type:
    class CheckedReader(gguf.GGUFReader):
        """gguf's reader, but every tensor's type, size and extent is checked before it is
        mapped, so a damaged file names the tensor and offset instead of a numpy error."""

        def _build_tensors(self, start_offs: int, fields: list[Any]) -> None:
            size = len(self.data)
            for field in fields:
                _, name_bytes, _, dims, raw_type, relative = field.parts
                try:
                    name = bytes(name_bytes).decode("utf-8")
                except UnicodeDecodeError:
                    raise _Damaged(f"the name of the tensor described at byte {field.offset} "
                                   "is not UTF-8") from None
                try:
                    qtype = gguf.GGMLQuantizationType(int(raw_type[0]))
                except ValueError:
                    raise _Damaged(f"tensor {name!r} (described at byte {field.offset}) has "
                                   f"unknown type {int(raw_type[0])}") from None
                block, nbytes = gguf.GGML_QUANT_SIZES[qtype]
                count = math.prod(int(d) for d in dims)
                begin = int(start_offs + relative[0])
                end = begin + count * nbytes // block
                if count % block or int(dims[0]) % block:
                    raise _Damaged(f"tensor {name!r} at byte {begin}: {count} values do not "
                                   f"fill whole {qtype.name} blocks of {block}")
                if end > size:
                    raise _Damaged(f"tensor {name!r} at byte {begin} needs {end - begin} bytes "
                                   f"but the file ends at byte {size} (truncated)")
            super()._build_tensors(start_offs, fields)

    return CheckedReader


class _Damaged(Exception):
    pass


def _read_once(path: Path) -> tuple[dict[str, Any], list[Any]]:
    """`_read_file(path)`, from the files read before when unchanged since (a copy of its
    metadata). The readers' tensors are views of the file's memory map, which a kept entry
    keeps open."""
    metadata, tensors = _READ(path)
    return dict(metadata), tensors


def _read_file(path: Path, gguf: Any) -> tuple[dict[str, Any], list[Any]]:
    """The metadata values and the reader's tensors of the GGUF file `path`, every tensor
    checked (CheckedReader); WeightsError naming the file where it is damaged."""
    try:
        reader = _reader_class(gguf)(path)
    except _Damaged as exc:
        raise WeightsError(f"{path}: damaged GGUF file: {exc}; re-download or "
                           "re-convert it") from None
    except (ValueError, IndexError, KeyError, OverflowError, UnicodeDecodeError) as exc:
        raise WeightsError(f"{path}: not a readable GGUF file: its header (metadata "
                           f"and tensor list) is damaged or truncated ({exc}); re-download "
                           "or re-convert it") from None
    metadata: dict[str, Any] = {}
    for name, field in reader.fields.items():
        try:
            metadata[name] = field.contents()
        except (ValueError, IndexError, UnicodeDecodeError):
            continue  # a value gguf cannot decode is not one we use
    return metadata, list(reader.tensors)


class GGUFFile:
    """The tensors of one `.gguf` file. `keys()` in file order (with `prefix` put in front of
    each, so a UNet-only file reads like a full checkpoint's `model.diffusion_model.` keys);
    `shape(key)` (numpy order), `format(key)` ("q8_0", "f16", ...), `raw(key)` (the stored
    bytes, as uint8) and `read(key)` (float32 values, dequantized on the host by gguf).

    Raises WeightsError naming the file, and the tensor and byte offset, when the file is
    missing, not GGUF, truncated or damaged.
    """

    def __init__(self, path: str | os.PathLike[str], *, prefix: str = "") -> None:
        self.path = Path(path)
        self.prefix = prefix
        gguf = import_gguf()
        self._gguf = gguf
        if not self.path.is_file():
            raise WeightsError(f"{self.path}: file not found")
        self.metadata, tensors = _read_once(self.path)
        self.architecture = str(self.metadata.get("general.architecture", ""))
        self._tensors = {prefix + t.name: t for t in tensors}

    def __repr__(self) -> str:
        return f"GGUFFile({str(self.path)!r}, {len(self._tensors)} tensors)"

    def keys(self) -> list[str]:
        return list(self._tensors)

    def __contains__(self, key: object) -> bool:
        return key in self._tensors

    def __len__(self) -> int:
        return len(self._tensors)

    def _tensor(self, key: str) -> Any:
        try:
            return self._tensors[key]
        except KeyError:
            raise KeyError(f"{self.path}: no tensor named {key!r}") from None

    def shape(self, key: str) -> tuple[int, ...]:
        """Shape in numpy order: the metadata's original shape where the writer stored one."""
        tensor = self._tensor(key)
        stored = tuple(int(d) for d in reversed(tensor.shape.tolist()))
        original = self.metadata.get(ORIG_SHAPE_KEY + key[len(self.prefix):])
        if original is not None:
            original = tuple(int(d) for d in original)
            if math.prod(original) != math.prod(stored):
                raise WeightsError(f"{self.path}: tensor {key!r} has {math.prod(stored)} values "
                                   f"but its {ORIG_SHAPE_KEY} metadata says {list(original)}")
            return original
        return stored

    def format(self, key: str) -> str:
        """The stored type as gpustd.quant names it: "q8_0", "q4_k", "f16", "f32", ..."""
        return self._tensor(key).tensor_type.name.lower()

    def raw(self, key: str) -> np.ndarray:
        """The tensor's stored bytes as a flat uint8 array (a view of the mapped file)."""
        return np.asarray(self._tensor(key).data).reshape(-1).view(np.uint8)

    def read(self, key: str, *, rows: tuple[int, int] | None = None) -> np.ndarray:
        """float32 values of `key` in its numpy shape (floats as stored; quantized formats
        through gguf.quants.dequantize). Same contract as SafetensorsFile.read."""
        tensor, kind = self._tensor(key), self.format(key)
        if kind == "f32":
            values = np.array(tensor.data, np.float32)
        elif kind == "f16":
            values = np.array(tensor.data, np.float16)
        else:
            try:
                values = self._gguf.quants.dequantize(self.raw(key), tensor.tensor_type)
            except NotImplementedError:
                raise WeightsError(f"{self.path}: tensor {key!r} is stored as {kind}, which "
                                   f"this loader cannot read (supported: "
                                   f"{', '.join(FLOATS + QUANTIZED)})") from None
        values = values.reshape(self.shape(key))
        return values[rows[0]:rows[1]] if rows is not None else values


def tensor_file(path: str | os.PathLike[str]) -> TensorFile:
    """A single weights file, read one format like the other: a `.gguf` as a GGUFFile (its
    quantized matrices kept quantized), anything else as a SafetensorsFile."""
    path = Path(path)
    return GGUFFile(path) if path.suffix.lower() == ".gguf" else SafetensorsFile(path)


# the last few files read (read_once); `_read_file` looked up at each call
_READ = ReadOnce(lambda path: _read_file(path, import_gguf()))
