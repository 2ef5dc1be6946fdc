"""`--int8` (CLI), `int8` (the server's settings): a loaded pipeline's denoiser (an SD / SDXL
UNet, a flow transformer: FLUX.1, SD 3/3.5, Chroma, Z-Image, FLUX.2, Qwen-Image) with W8A8
linear layers (diffusion.models.int8: attention projections and MLPs; convs, norms, attention
products, embedders and modulations stay as they were), per-token activations and
per-channel weights, no smoothing: the pipelines' steps run captured and replayed, where
SmoothQuant's calibration cannot read the activations back (the Python API can:
diffusion.models.int8.calibrate, then quantize_linears with its result).
"""

from __future__ import annotations

from typing import Any

from gpustd.gemm.dispatch import w8a8_on_matrix_units

from ..models.int8 import mark, marked, quantize_linears
from .flow.flow_model import FlowModel
from .sd.stable_diffusion import StableDiffusion

__all__ = ["use_int8"]


def use_int8(pipe: Any) -> str:
    """Quantize `pipe`'s denoiser to W8A8 (once; the float weights are dropped) and say, in
    one line, where its products run. ValueError for a pipeline without that mode."""
    # beyond the contract: load_pipeline's own families, whose denoiser this replaces
    if isinstance(pipe, StableDiffusion):
        model, what = pipe.unet, "UNet"
    elif isinstance(pipe, FlowModel):
        model, what = pipe.transformer, "transformer"
    else:
        raise ValueError(f"--int8: {pipe.family} models have no W8A8 mode (SD, SDXL and the "
                         "flow transformers have); leave --int8 off")
    placement = pipe.placement
    count = 0 if marked(pipe) else quantize_linears(model)
    mark(pipe)
    if w8a8_on_matrix_units(placement.device, placement.dtype):
        where = "on the matrix units (i8 x i8 -> i32)"
    else:
        where = ("on the portable int8 kernel: this adapter has no i8 matrix units (Dawn "
                 "on an NVIDIA GPU has), so this is slower than float16")
    return f"int8: {count} linear layers of the {what} run W8A8 {where}"
