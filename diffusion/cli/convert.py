"""`python -m diffusion convert FILE.ckpt OUT.safetensors`: a PyTorch file's tensors, once, as a
safetensors file (read without running the pickle; written atomically, one tensor at a time)."""

from __future__ import annotations

import argparse
import json
import math
import os
import struct
from pathlib import Path

import numpy as np

from ..loaders.errors import PICKLE_SUFFIXES, WeightsError
from ..loaders.formats.torch_file import TorchFile
from .paths import check_output_file

__all__ = ["add_parser", "convert", "run"]

_DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "I64": "<i8", "I32": "<i4", "I16": "<i2",
           "I8": "i1", "U8": "u1", "BOOL": "?", "BF16": "<u2"}


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add the `convert` sub-command to `python -m diffusion`'s sub-parsers."""
    text = ("convert a PyTorch checkpoint (.ckpt/.pt/.pth/.bin) to .safetensors, reading it "
            "without running its pickle")
    sub = subparsers.add_parser("convert", help=text, description=text)
    sub.add_argument("file", metavar="FILE.ckpt", help="the PyTorch file")
    sub.add_argument("out", metavar="OUT.safetensors", help="where to write (replaced whole)")
    sub.add_argument("--fp16", action="store_true",
                     help="store float32/float64 tensors as float16 (half the size)")
    sub.set_defaults(run=run)
    return sub


def run(args: argparse.Namespace) -> int:
    """Run `convert` for parsed arguments; prints the written path."""
    out = convert(args.file, args.out, fp16=args.fp16)
    print(out, flush=True)
    return 0


def convert(source: str | os.PathLike[str], target: str | os.PathLike[str], *,
            fp16: bool = False) -> Path:
    """Write every tensor of the PyTorch file `source` to the safetensors file `target` (the
    nested `state_dict` a checkpoint holds, as `TorchFile` finds it; bf16 stays bf16).

    Raises WeightsError for an unreadable or refused source, or one without tensors, and
    ValueError for a target that is not a `.safetensors` path in a folder that takes new files;
    on any error no file is left at `target`.
    torch: `safetensors.torch.save_file(torch.load(source)["state_dict"])`.
    """
    source, target = Path(source), Path(target)
    if source.suffix.lower() not in PICKLE_SUFFIXES:
        raise ValueError(f"{source}: convert reads PyTorch files ({', '.join(PICKLE_SUFFIXES)})")
    if target.suffix.lower() != ".safetensors":
        raise ValueError(f"{target}: the output must be named *.safetensors")
    if target.resolve() == source.resolve():
        raise ValueError(f"{target}: the output must not be the input file")
    check_output_file(target, "output", ".safetensors")  # before the source is read
    file = TorchFile(source)
    if not file.keys():
        raise WeightsError(f"{source}: holds no tensors; nothing to convert")
    # 1. the header, from shapes and dtypes alone
    dtypes = {key: _stored_dtype(file.dtype(key), fp16) for key in file.keys()}
    header: dict[str, object] = {"__metadata__": {"format": "pt", "converted_from": source.name}}
    offset = 0
    for key in file.keys():
        size = math.prod(file.shape(key)) * np.dtype(_DTYPES[dtypes[key]]).itemsize
        header[key] = {"dtype": dtypes[key], "shape": list(file.shape(key)),
                       "data_offsets": [offset, offset + size]}
        offset += size
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the data starts 8-byte aligned, as safetensors writes it
    # 2. the data, one tensor at a time, into a temporary file renamed over the target at the end
    partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with open(partial, "wb") as out:
            out.write(struct.pack("<Q", len(raw)) + raw)
            for key in file.keys():
                out.write(_stored(file.read(key), dtypes[key]).tobytes())
            out.flush()
            os.fsync(out.fileno())
        os.replace(partial, target)
    finally:
        partial.unlink(missing_ok=True)
    return target


def _stored_dtype(dtype: str, fp16: bool) -> str:
    if dtype not in _DTYPES:
        raise WeightsError(f"tensors of dtype {dtype} cannot be converted")
    return "F16" if fp16 and dtype in ("F32", "F64") else dtype


def _stored(array: np.ndarray, dtype: str) -> np.ndarray:
    """The array in the file's dtype: bf16, which `read` widened to float32, is narrowed back
    exactly (its low 16 bits are zero)."""
    if dtype == "BF16":
        return (array.astype("<f4").view("<u4") >> 16).astype("<u2")
    return np.ascontiguousarray(array, dtype=_DTYPES[dtype])
