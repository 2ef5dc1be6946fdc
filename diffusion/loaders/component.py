"""A component's weights put into its model with the GGUF blocks of its Linear weights kept
quantized: what a pipeline does with a text encoder that may come from a GGUF file (city96's
T5 encoders, diffusion.loaders.keymaps.t5_gguf) as easily as from a safetensors one.

Weights whose tensors all live in other files load as `model.load_state_dict(weights)` does.
Otherwise a tensor is kept as GGML blocks on the GPU (gpustd.nn.quantized) when its file is a
GGUF, its stored type one the GPU keeps (gguf_file.QUANTIZED), it is read as stored (whole,
not a row slice or swapped halves; unless `slices`: those are then cut from the blocks,
`quantized_rows`, as city96's FLUX / SD3 files need, diffusion.loaders.flow.gguf) and it is
a Linear or Conv2d weight; the rest (norms, the
token embedding, formats read only on the host: Q2_K, Q3_K, IQ*) is dequantized on the host
into the model's float parameters.

Build the model under gpustd.nn.deferred() (the pipelines do) and each parameter's GPU memory
is allocated only when its values arrive, as blocks or floats: the load peaks at the loaded
size plus one tensor, not at the float model's (T5-XXL Q8_0: 5.2 GB, not 11.5). Every
parameter is written (the load is strict), so none is left unloaded.
"""

from __future__ import annotations

from typing import Any, TypeVar

import numpy as np

from gpustd.nn import Module, StateDictError, unloaded
from gpustd.nn.deferred import UnloadedBuffer
from gpustd.nn.quantized import set_quantized_weight
from gpustd.quant import QuantizedTensor

from .formats.gguf_file import QUANTIZED, GGUFFile
from .weights import ComponentWeights, TensorRef

__all__ = ["load_component", "quantized_rows"]

M = TypeVar("M", bound=Module)


def _kept(name: str, ref: TensorRef) -> bool:
    return (isinstance(ref.file, GGUFFile) and name.endswith(".weight") and not ref.transposed
            and ref.file.format(ref.key) in QUANTIZED)


def quantized_rows(file: GGUFFile, ref: TensorRef, *, swapped: bool) -> np.ndarray:
    """The stored blocks of `ref`'s rows (all rows, or `ref.rows`), the two halves exchanged
    when `swapped`: a byte slice of the matrix, each row being whole blocks."""
    if ref.rows is None and not swapped:
        return file.raw(ref.key)
    rows = file.shape(ref.key)[0]
    data = file.raw(ref.key).reshape(rows, -1)
    if ref.rows is not None:
        data = data[ref.rows[0]:ref.rows[1]]
    if swapped:
        half = data.shape[0] // 2
        data = np.concatenate([data[half:], data[:half]])
    return np.ascontiguousarray(data).reshape(-1)


def load_component(model: M, weights: ComponentWeights, *, slices: bool = False,
                   to_host: bool = False) -> M:
    """`model` with `weights` loaded (module docstring); returns it. `to_host`: the quantized
    blocks, and the float tensors of a model built under gpustd.nn.deferred, are kept in host
    memory, never uploaded (`QuantizedTensor.on_host`: a model loaded
    for a memory mode to stream, gpustd.nn.offload). StateDictError naming every missing,
    unexpected or mis-shaped tensor, before anything is written, as load_state_dict. torch
    has no equivalent (ComfyUI-GGUF's GGMLOps layers keep the blocks the same way)."""
    if weights.dtype is None:  # each float tensor read straight as its parameter's dtype
        weights = weights.cast_to({name: p.dtype for name, p in model.named_parameters()
                                   if p.dtype.kind == "f"})
    refs = weights.refs
    swapped: frozenset[str] = getattr(weights, "swapped", frozenset())  # halves reordered
    kept = {name: ref for name, ref in refs.items()
            if _kept(name, ref) and (slices or (ref.rows is None and name not in swapped))}
    if not kept:
        model.load_state_dict(weights, to_host=to_host)
        return model
    params = dict(model.named_parameters())
    missing = [key for key in params if key not in refs]
    unexpected = [key for key in refs if key not in params]
    wrong = [f"{key}: expected {params[key].shape}, got {ref.shape}"
             for key, ref in kept.items() if key in params and params[key].shape != ref.shape]
    if missing or unexpected or wrong:
        raise StateDictError(f"{type(model).__name__}: missing {missing}, unexpected "
                             f"{unexpected}, shape mismatches {wrong}")
    floats = {name: ref for name, ref in refs.items() if name not in kept}
    rest = weights.with_refs(floats)  # the same reading (dtype, swapped halves), fewer tensors
    model.load_state_dict(rest, strict=False, to_host=to_host)
    # one tensor at a time: its blocks uploaded in the dtype its layer computes in (T5's
    # float32 `wo` too), the parameter it replaces dropped (built deferred: it held nothing;
    # otherwise its float buffer goes back to the driver)
    for name, ref in kept.items():
        param = params[name]
        file: Any = ref.file
        blocks = quantized_rows(file, ref, swapped=name in swapped)
        make = QuantizedTensor.on_host if to_host else QuantizedTensor.from_bytes
        weight = make(blocks, ref.shape, file.format(ref.key), dtype=param.dtype,
                      device=param.device)
        try:
            set_quantized_weight(model, name, weight)
        except ValueError:  # an Embedding's or a norm's: expanded on the host
            model.load_state_dict({name: weights[name]}, strict=False, to_host=to_host)
        if not isinstance(param.buffer, UnloadedBuffer):
            param.device.empty_pool()
    if left := unloaded(model):  # cannot happen: every key was checked above
        raise StateDictError(f"{type(model).__name__}: no tensor for {left}")
    return model
