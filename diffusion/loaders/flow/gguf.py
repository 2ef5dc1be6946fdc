"""FLUX.1, SD3/3.5 (and Chroma) transformers from city96's GGUF files (`flux1-dev-Q8_0.gguf`,
`flux1-schnell-Q4_K_S.gguf`, `sd3.5_large-Q8_0.gguf`, ...: the most used way to run them on
small GPUs), their quantized matrices kept quantized on the GPU as the SD UNet's are
(diffusion.loaders.sd.gguf_unet, gpustd.quant).

city96's converter (ComfyUI-GGUF's convert.py) writes the original single file's tensor
names, bare (`double_blocks.0.img_attn.qkv.weight`, architecture "flux";
`joint_blocks.0.x_block.attn.qkv.weight`, "sd3"): the mapping is the single files'
(diffusion.loaders.flow.flux_file, .sd3_file). Fused matrices are split by rows on the quantized
bytes, since a ggml matrix stores each row as whole blocks (q, k and v; FLUX's single blocks'
`linear1`, q, k, v and the MLP's input); the adaLN (shift, scale) halves diffusers orders the
other way are swapped the same way. Float tensors (biases, norms, small or odd-sized
matrices) are read as floats.

    transformer = load_flux_gguf("flux1-dev-Q8_0.gguf", dtype="float16")
    mmdit = load_sd3_gguf("sd3.5_medium-Q8_0.gguf", dtype="float16")
    chroma = load_chroma_gguf("Chroma1-HD-Q8_0.gguf", dtype="float16")
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, as_dtype, default_device
from gpustd.nn import StateDictError, deferred

from ...models import ChromaTransformer2DModel, FluxTransformer2DModel, SD3Transformer2DModel
from ..component import load_component, quantized_rows
from ..errors import WeightsError
from ..formats.gguf_file import GGUFFile
from ..keymaps.chroma_keys import chroma_file_weights, is_chroma_file
from .flux_file import is_flux_file, load_flux_file
from .sd3_file import is_sd3_file, load_sd3_file

# quantized_rows: loaders.component's
__all__ = ["load_chroma_gguf", "load_flux_gguf", "load_sd3_gguf", "quantized_rows"]


def load_flux_gguf(path: str | os.PathLike[str], *, dtype: Any = np.float32,
                   device: Device | None = None, config: dict[str, Any] | None = None,
                   to_host: bool = False) -> FluxTransformer2DModel:
    """The FLUX transformer in city96's GGUF `path` on `device`, computing in `dtype`;
    quantized Linear weights stay quantized (dequantized inside the GEMMs' scratch, as
    gpustd.nn.quantized does). `config` overrides what the shapes give (as load_flux_file).
    `to_host`: the quantized blocks stay in host memory (load_component's), for a memory mode
    to stream.
    WeightsError naming the file when it is not a FLUX GGUF or a tensor does not fit.
    ComfyUI-GGUF: `UnetLoaderGGUF`; diffusers: `FluxTransformer2DModel.from_single_file(path,
    quantization_config=GGUFQuantizationConfig(...))`."""
    return _load(path, "FLUX", is_flux_file, load_flux_file, FluxTransformer2DModel,
                 dtype=dtype, device=device, config=config, to_host=to_host)


def load_sd3_gguf(path: str | os.PathLike[str], *, dtype: Any = np.float32,
                  device: Device | None = None, config: dict[str, Any] | None = None,
                  to_host: bool = False) -> SD3Transformer2DModel:
    """The SD3/3.5 MMDiT in city96's GGUF `path`, as load_flux_gguf (the patch embedding's
    conv kernel, stored as its matrix with ComfyUI-GGUF's original shape, stays quantized
    too)."""
    return _load(path, "SD3", is_sd3_file, load_sd3_file, SD3Transformer2DModel,
                 dtype=dtype, device=device, config=config, to_host=to_host)


def load_chroma_gguf(path: str | os.PathLike[str], *, dtype: Any = np.float32,
                     device: Device | None = None, config: dict[str, Any] | None = None,
                     to_host: bool = False) -> ChromaTransformer2DModel:
    """The Chroma transformer in a GGUF of its original file (`Chroma1-HD-Q8_0.gguf`,
    silveroxides' and city96's conversions: the original names), as load_flux_gguf."""
    return _load(path, "Chroma", is_chroma_file, chroma_file_weights, ChromaTransformer2DModel,
                 dtype=dtype, device=device, config=config, to_host=to_host)


def _load(path: str | os.PathLike[str], family: str, recognizes: Any, mapping: Any,
          model_class: Any, *, dtype: Any, device: Device | None,
          config: dict[str, Any] | None, to_host: bool) -> Any:
    device = device or default_device()
    dtype = as_dtype(dtype)
    file = GGUFFile(Path(path))
    if not recognizes(file):  # a GGUFFile reads like a safetensors file
        raise WeightsError(f"{file.path}: not a {family} GGUF (no {family} transformer blocks; "
                           "city96's conversions of the BFL / Stability files are)")
    weights = mapping(file, config=config, dtype=dtype)
    with deferred():  # each parameter allocated as its values arrive: no float copy first
        model = model_class(weights.config, dtype=dtype, device=device)
    try:  # the quantized matrices kept as blocks (row slices, swapped halves too); floats read
        return load_component(model, weights, slices=True, to_host=to_host)
    except (StateDictError, KeyError, ValueError) as exc:
        raise WeightsError(f"{file.path}: the {family} transformer's tensors do not fit its "
                           f"config: {exc}") from None
