"""A Stable Diffusion 1.x/2.x or SDXL UNet from a UNet-only GGUF file (ComfyUI-GGUF's or
stable-diffusion.cpp's, or `python -m diffusion quantize`'s), its quantized Linear and Conv2d
weights kept quantized on the GPU.

    unet = load_unet_gguf("v1-5-unet-Q8_0.gguf", dtype="float16")
    pipe.unet = unet          # a UNet2DConditionModel like any other
    xl.unet = load_unet_gguf("sd_xl_base_1.0-Q4_K.gguf", dtype="float16")

Key layouts: the LDM/SGM names (`input_blocks.*`, SDXL's `label_emb.0.*`) with the
`model.diffusion_model.` prefix stripped (ComfyUI-GGUF's convert.py) or kept
(stable-diffusion.cpp's `convert`), or diffusers' names (`down_blocks.*`, `add_embedding.*`).
An SDXL file's config comes from its shapes as for SDXL single files, with SDXL's 256-wide
time ids: the base when the UNet attends to 2048-wide context, else the refiner.

Quantized weights are dequantized into a scratch tensor before each GEMM/convolution (see
gpustd.quant): the UNet holds its weights at 8.5 (Q8_0) down to 4.5 (Q4_K) bits a value plus
one layer's expanded weight, and pays one extra pass over each weight per step. The model is
built under gpustd.nn.deferred(), so each parameter's GPU memory is allocated only when its
values arrive (as blocks or as floats): loading peaks at the loaded size plus one tensor,
never at the float model's. Float tensors
(F32/F16/BF16, and any quantized tensor the GPU cannot keep quantized, such as a norm) are
converted to `dtype` on the host and uploaded as usual.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from gpucore import Device, FeatureError, as_dtype, default_device
from gpustd.nn import StateDictError, deferred

from ...models import UNet2DConditionModel
from ..component import load_component
from ..errors import WeightsError
from ..formats.gguf_file import GGUFFile
from ..keymaps.expected_keys import unet_keys
from ..keymaps.ldm_configs import unet_config
from ..keymaps.ldm_keys import UNET_PREFIX, unet_refs
from ..weights import ComponentWeights, TensorRef, require_keys
from .gguf_model import component_refs, read_model_metadata
from .sgm import TIME_IDS, sgm_unet_config

__all__ = ["gguf_unet_weights", "load_unet_gguf"]


def _sdxl_config(refs: dict[str, TensorRef], file: GGUFFile, path: Any,
                 prediction_type: str) -> dict[str, Any]:
    """An SDXL UNet's config from its shapes (a GGUF holds no text encoders to check it by)."""
    context = next(r.shape[-1] for k, r in refs.items() if k.endswith("attn2.to_k.weight"))
    family = "sdxl" if context == 2048 else "sdxl-refiner"
    add_in = refs["add_embedding.linear_1.weight"].shape[1]
    pooled = add_in - TIME_IDS[family] * 256
    if pooled <= 0:
        raise WeightsError(f"{path}: an SDXL-like UNet whose label_emb takes {add_in} inputs, "
                           "not SDXL's pooled embedding and 256-wide time ids; pass its config "
                           "(load_unet_gguf(..., config=...))")
    texts = {"text_encoder_2": {"hidden_size": context, "projection_dim": pooled}}
    return sgm_unet_config(refs, file, family, texts, prediction_type)


def gguf_unet_weights(path: str | os.PathLike[str], *, prediction_type: str = "epsilon",
                      config: dict[str, Any] | None = None
                      ) -> tuple[GGUFFile, dict[str, TensorRef], dict[str, Any]]:
    """(file, diffusers name -> where the tensor is, UNet2DConditionModel config) of a
    UNet-only GGUF with LDM/SGM (`input_blocks.*`, with or without `model.diffusion_model.`)
    or diffusers (`down_blocks.*`) names, SD 1.x/2.x or SDXL, or of a whole-model GGUF's UNet
    (diffusion.loaders.sd.gguf_model). `config`: the one to check the tensors against (default:
    the whole-model file's, else derived from their shapes)."""
    probe = GGUFFile(path)
    keys = set(probe.keys())
    if (whole := read_model_metadata(probe)) is not None:  # quantize's whole-model file
        config = config or whole["configs"]["unet"]
        refs = component_refs(probe, "unet")
        return probe, require_keys("unet", refs, unet_keys(config), str(path)), config
    if "input_blocks.0.0.weight" in keys:
        file = GGUFFile(path, prefix=UNET_PREFIX)
    elif UNET_PREFIX + "input_blocks.0.0.weight" in keys or "conv_in.weight" in keys:
        file = probe
    else:
        raise WeightsError(f"{path}: not a Stable Diffusion UNet GGUF: no 'input_blocks.0.0."
                           "weight' (LDM names) nor 'conv_in.weight' (diffusers names); pass a "
                           "UNet-only GGUF (ComfyUI-GGUF / stable-diffusion.cpp) or a "
                           "whole-model one (python -m diffusion quantize)")
    if UNET_PREFIX + "input_blocks.0.0.weight" in file:
        refs = unet_refs(file)
    else:
        refs = {k: TensorRef(file, k, file.shape(k)) for k in file.keys()}
    if config is not None:
        pass
    elif "add_embedding.linear_1.weight" in refs:
        config = _sdxl_config(refs, file, path, prediction_type)
    else:
        wide = any(k.endswith("attn2.to_k.weight") and r.shape[-1] == 1024
                   for k, r in refs.items())
        config = unet_config(refs, file, family="sd2" if wide else "sd1",
                             prediction_type=prediction_type)
    return file, require_keys("unet", refs, unet_keys(config), str(path)), config


def load_unet_gguf(path: str | os.PathLike[str], *, dtype: Any = np.float32,
                   device: Device | None = None, prediction_type: str = "epsilon",
                   config: dict[str, Any] | None = None) -> UNet2DConditionModel:
    """The UNet in GGUF file `path` on `device`, computing in `dtype`; quantized Linear/Conv2d
    weights stay quantized (gpustd.nn.quantized). config: the diffusers config to build (a
    GGUF file has none: by default derived from the tensors' shapes as for single files).
    Raises WeightsError naming the file (and tensor and offset for a damaged one).
    ComfyUI-GGUF: `UnetLoaderGGUF`; diffusers: `from_single_file(..., quantization_config=
    GGUFQuantizationConfig(...))`."""
    device = device or default_device()
    dtype = as_dtype(dtype)
    if dtype == np.float16 and not device.has_f16:
        raise FeatureError("shader-f16", "float16 weights", device.info.label)
    _, refs, derived = gguf_unet_weights(path, prediction_type=prediction_type, config=config)
    with deferred():  # no float weights allocated that the quantized ones replace
        unet = UNet2DConditionModel(derived, dtype=dtype, device=device)
    try:  # Linear/Conv2d weights kept as blocks, the rest as floats (loaders.component)
        return load_component(unet, ComponentWeights("unet", derived, refs, dtype=dtype))
    except (StateDictError, KeyError, ValueError) as exc:
        raise WeightsError(f"{path}: the UNet's tensors do not fit its config: {exc}") from None
