"""Weight-only quantization: tensors kept on the GPU in GGML's block formats (the ones GGUF
files store) and dequantized by shaders/quant/dequantize.wgsl right before each use.

A `QuantizedTensor` holds a tensor's raw blocks, exactly the bytes of its GGUF file, in a u32
buffer (Q8_0 is 8.5 bits a value, Q4_K 4.5); `dequantize` expands it into a float32/float16
Tensor, bitwise equal to `gguf.quants.dequantize` (float32) or that cast to float16.
`materialize` is what layers call on a weight: a Tensor passes through, a QuantizedTensor is
dequantized into a scratch Tensor the caller drops after its GEMM/conv (so the pool hands the
same memory to the next layer's weight: one layer's expanded weight at a time, at the cost of
one extra pass over it per use). Linear layers with Q8_0 / Q4_K / Q5_0 weights skip the scratch: the
GEMM reads the blocks itself (gpustd.nn.quantized_linear).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple, overload

import numpy as np

from gpucore import Buffer, Device, Kernel, as_dtype, default_device, fold_grid, wgsl_scalar

from ._tensor import Tensor

__all__ = ["FORMATS", "BlockFormat", "QuantizedTensor", "dequantize", "materialize"]


class BlockFormat(NamedTuple):
    """A GGML format: `values` values are stored in `nbytes` bytes (ggml's blck/type size)."""

    values: int
    nbytes: int
    entry: str  # the entry point of shaders/quant/dequantize.wgsl


# gguf's GGMLQuantizationType names, lower case.
FORMATS: dict[str, BlockFormat] = {
    "q8_0": BlockFormat(32, 34, "q8_0"),
    "q4_0": BlockFormat(32, 18, "q4_0"),
    "q4_1": BlockFormat(32, 20, "q4_1"),
    "q5_0": BlockFormat(32, 22, "q5_0"),
    "q5_1": BlockFormat(32, 24, "q5_1"),
    "q4_k": BlockFormat(256, 144, "q4_k"),
    "q5_k": BlockFormat(256, 176, "q5_k"),
    "q6_k": BlockFormat(256, 210, "q6_k"),
    "f16": BlockFormat(1, 2, "float16"),
    "bf16": BlockFormat(1, 2, "bfloat16"),
}


def _format(name: str) -> BlockFormat:
    found = FORMATS.get(name.lower())
    if found is None:
        raise ValueError(f"unknown quantization format {name!r}; supported: "
                         f"{', '.join(FORMATS)}")
    return found


def _words(raw: Any, shape: tuple[int, ...], format: str) -> np.ndarray:
    """`raw` (bytes or a uint8 array: a tensor's blocks as in a GGUF file) as the uint32 words a
    QuantizedTensor's buffer holds (zero-padded to 4 bytes); ValueError when it is not whole
    blocks of `shape`."""
    data = np.frombuffer(raw, np.uint8) if isinstance(raw, (bytes, bytearray, memoryview)) \
        else np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
    spec = _format(format)
    want = math.prod(shape) // spec.values * spec.nbytes
    if data.size != want or math.prod(shape) % spec.values:
        raise ValueError(f"{format} data for shape {tuple(shape)} must be {want} bytes "
                         f"(whole blocks of {spec.values} values in {spec.nbytes} bytes), "
                         f"got {data.size}")
    if data.size % 4:
        data = np.concatenate([data, np.zeros(-data.size % 4, np.uint8)])
    return data.view(np.uint32)


class QuantizedTensor:
    """A tensor of `shape` stored as GGML blocks of `format` ('q8_0', 'q4_k', ...) on the GPU;
    `dtype` is what it dequantizes to (float32 or float16). numpy/torch have no equivalent:
    gguf-py's `dequantize(raw, qtype).reshape(shape)` is the host form.

    Blocks run along the last dimension, as in GGUF: the row length (shape[-1], or the product
    of all but the first dimension for a conv weight) must be a multiple of the block's values.
    """

    __slots__ = ("_device", "_host", "blocks", "dtype", "format", "shape")

    def __init__(self, blocks: Buffer[Any], shape: tuple[int, ...], format: str,
                 dtype: Any = np.float32) -> None:
        spec = _format(format)
        self.shape = tuple(int(s) for s in shape)
        self.format = format.lower()
        self.dtype = as_dtype(dtype)
        size = math.prod(self.shape)
        if size % spec.values:
            raise ValueError(f"a {self.format} tensor holds whole blocks of {spec.values} "
                             f"values; shape {self.shape} has {size}")
        if blocks.dtype != np.uint32 or blocks.nbytes < size // spec.values * spec.nbytes:
            raise ValueError(f"{self.format} blocks of shape {self.shape} need a uint32 buffer "
                             f"of {size // spec.values * spec.nbytes} bytes, got "
                             f"{blocks.dtype} of {blocks.nbytes}")
        self.blocks: Buffer[Any] | None = blocks
        self._device = blocks.device
        self._host: np.ndarray | None = None  # the blocks while offloaded

    @classmethod
    def from_bytes(cls, raw: Any, shape: tuple[int, ...], format: str, *, dtype: Any = np.float32,
                   device: Device | None = None) -> QuantizedTensor:
        """Upload `raw` (bytes or a uint8 array: the tensor's blocks as in a GGUF file)."""
        blocks = Buffer.from_numpy(_words(raw, shape, format), device=device or default_device(),
                                   read_only=True)
        return cls(blocks, tuple(shape), format, dtype)

    @classmethod
    def on_host(cls, raw: Any, shape: tuple[int, ...], format: str, *, dtype: Any = np.float32,
                device: Device | None = None) -> QuantizedTensor:
        """As `from_bytes`, but the blocks stay in host memory, as after `offload()`: nothing is
        uploaded until `restore()` (a model loaded straight to host memory for a memory mode to
        stream)."""
        # whole blocks of `shape`, as __init__ checks; a copy: `raw` may map a file
        words = np.array(_words(raw, shape, format))
        tensor = cls.__new__(cls)
        tensor.shape, tensor.format = tuple(int(s) for s in shape), format.lower()
        tensor.dtype, tensor.blocks = as_dtype(dtype), None
        tensor._device, tensor._host = device or default_device(), words
        return tensor

    @property
    def device(self) -> Device:
        return self._device

    # -- where the blocks live: the hook the budget modes (--medvram/--lowvram) build on ---
    @property
    def on_device(self) -> bool:
        """Whether the blocks are in GPU memory (False after `offload()`)."""
        return self.blocks is not None

    def offload(self) -> None:
        """Move the blocks to host memory, freeing their GPU buffer; `dequantize` still works
        (it uploads them for that one use) and `restore()` brings them back for good."""
        if self.blocks is not None:
            known = self.blocks.host_copy  # set by restore(), cleared by a write: no read-back
            self._host = known if known is not None else self.blocks.read()
            self.blocks = None

    def restore(self) -> None:
        """Upload offloaded blocks again (a no-op when they are on the device)."""
        if self.blocks is None and self._host is not None:
            self.blocks = self._upload()
            self.blocks.host_copy = self._host
            self._host = None

    def _upload(self) -> Buffer[Any]:
        assert self._host is not None
        return Buffer.from_numpy(self._host, device=self._device, read_only=True)

    def raw(self) -> np.ndarray:
        """The blocks' bytes (uint8, as in a GGUF file), wherever they are (no read-back when
        the device's copy is known on the host)."""
        if self.blocks is None:
            words = self._host
        else:
            words = self.blocks.host_copy if self.blocks.host_copy is not None \
                else self.blocks.read()
        assert words is not None
        return np.asarray(words).view(np.uint8)[:self.nbytes].copy()

    def replace(self, raw: Any, format: str) -> None:
        """New blocks (`raw` bytes in `format`, the same shape): written into the same buffer
        when they have its size, so a capture replaying this weight sees them (as a LoRA's
        float weights are patched in place); else a new buffer (a capture that read the old
        one must be recorded again: diffusion.pipelines.sd.capture compares the buffers)."""
        spec = _format(format)
        data = np.frombuffer(raw, np.uint8) if isinstance(raw, (bytes, bytearray)) \
            else np.ascontiguousarray(raw).view(np.uint8).reshape(-1)
        if data.size != self.size // spec.values * spec.nbytes:
            raise ValueError(f"{format} blocks of shape {self.shape} are "
                             f"{self.size // spec.values * spec.nbytes} bytes, got {data.size}")
        words = np.concatenate([data, np.zeros(-data.size % 4, np.uint8)]).view(np.uint32)
        self.format = format.lower()
        if self.blocks is None:
            self._host = words
        elif self.blocks.length == words.size:  # the host copy kept: no read-back to offload
            self.blocks.write(words, keep_host_copy=True)
        else:
            self.blocks = Buffer.from_numpy(words, device=self._device, read_only=True)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return math.prod(self.shape)

    @property
    def nbytes(self) -> int:
        """Bytes the blocks take (a float16 copy would take 2 * size), on device or host."""
        spec = FORMATS[self.format]
        return self.size // spec.values * spec.nbytes

    def __repr__(self) -> str:
        return f"QuantizedTensor({self.format}, shape={self.shape}, dtype={self.dtype})"

    def dequantize(self, dtype: Any = None) -> Tensor:
        """A new Tensor of the values, `dtype` or self.dtype. gguf: `dequantize(raw, qtype)`."""
        return dequantize(self, dtype)


def dequantize(weight: QuantizedTensor, dtype: Any = None) -> Tensor:
    """`weight`'s values as a new float32/float16 Tensor of its shape, bitwise equal to
    `gguf.quants.dequantize(raw, qtype).reshape(shape)` (float32; float16 is that cast).
    An offloaded weight's blocks are uploaded for the call and dropped after it."""
    target = as_dtype(dtype if dtype is not None else weight.dtype)
    if target not in (np.dtype(np.float32), np.dtype(np.float16)):
        raise TypeError(f"dequantize gives float32 or float16, not {target}")
    device = weight.device
    out = Tensor.empty(weight.shape, target, device=device)
    if out.size == 0:
        return out
    kernel = Kernel.cached("quant/dequantize", entry=FORMATS[weight.format].entry,
                           types={"Dst": wgsl_scalar(target)})
    grid = fold_grid(kernel.groups_for(out.size),
                     device.limits["max-compute-workgroups-per-dimension"])
    # offloaded: uploaded for this use only, freed (pooled) when the dispatch's owner drops it
    blocks = weight.blocks if weight.blocks is not None else weight._upload()
    kernel.dispatch(grid, blocks, out.buffer, n=out.size)
    return out


@overload
def materialize(weight: Tensor | QuantizedTensor) -> Tensor: ...


@overload
def materialize(weight: None) -> None: ...


def materialize(weight: Tensor | QuantizedTensor | None) -> Tensor | None:
    """The Tensor an op reads: `weight` itself, or a QuantizedTensor dequantized into a fresh
    (pooled) Tensor of its dtype for this one use. None passes through."""
    if isinstance(weight, QuantizedTensor):
        return dequantize(weight)
    return weight
