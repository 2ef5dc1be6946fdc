"""`--int8` (CLI), `int8` (the server's settings): a loaded pipeline's denoiser (an SD / SDXL
UNet, a flow transformer: FLUX.1, SD 3/3.5, Chroma, Z-Image, FLUX.2, Qwen-Image) with W8A8
linear layers (diffusion.models.int8: attention projections and MLPs; convs, norms, attention
products, embedders and modulations stay as they were), per-token activations and
per-channel weights. `--int8 smooth` first runs a calibration pass (one denoising step of
the request, float weights), then quantizes with SmoothQuant's smoothing (alpha 0.5): flow
models only, whose steps run eagerly; an SD UNet's step is captured and replayed, where the
activations are never read back. A prompt's LoRAs patch the int8 layers per request
(diffusion.lora: merged into their int8 values and quantized again, then restored).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from gpustd.gemm.dispatch import w8a8_on_matrix_units

from ..models.int8 import calibrate, mark, marked, quantize_linears
from .flow.flow_model import FlowModel
from .sd.stable_diffusion import StableDiffusion

__all__ = ["use_int8"]


def use_int8(pipe: Any, *, calibration: Callable[[], Any] | None = None) -> str:
    """Quantize `pipe`'s denoiser to W8A8 (once; the float weights are dropped) and say, in
    one line, where its products run. calibration: a run of the pipeline (one step of the
    request) whose activations SmoothQuant's factors come from (flow models). ValueError for
    a pipeline without that mode."""
    # beyond the contract: load_pipeline's own families, whose denoiser this replaces
    if isinstance(pipe, StableDiffusion):
        model, what = pipe.unet, "UNet"
    elif isinstance(pipe, FlowModel):
        model, what = pipe.transformer, "transformer"
    else:
        raise ValueError(f"--int8: {pipe.family} models have no W8A8 mode (SD, SDXL and the "
                         "flow transformers have); leave --int8 off")
    if calibration is not None and not isinstance(pipe, FlowModel):
        raise ValueError("--int8 smooth: the UNet's step runs captured, where its activations "
                         "are never read back for calibration; use --int8 alone")
    placement = pipe.placement
    count = 0
    if not marked(pipe):
        ranges = calibrate(model, calibration) if calibration is not None else None
        _drop_loras(pipe)  # (the calibration's) off the float weights, before they go
        count = quantize_linears(model, ranges)
        mark(pipe, "W8A8 SmoothQuant" if ranges is not None else "W8A8")
    if w8a8_on_matrix_units(placement.device, placement.dtype):
        where = "on the matrix units (i8 x i8 -> i32)"
    else:
        where = ("on the portable int8 kernel: this adapter has no i8 matrix units (Dawn "
                 "on an NVIDIA GPU has), so this is slower than float16")
    smoothed = ", smoothed from a calibration step," if calibration is not None and count else ""
    return f"int8: {count} linear layers of the {what}{smoothed} run W8A8 {where}"


def _drop_loras(pipe: Any) -> None:
    """Take the prompt LoRAs off `pipe`'s float weights and forget them: the LoRA manager
    finds the int8 layers anew (diffusion.lora patches those per request too)."""
    loras = getattr(pipe, "loras", None)
    if loras is not None and getattr(loras, "manager", None) is not None:
        loras.manager.clear()
        loras.manager = None
