"""`--fp16-accumulation` (CLI), `fp16_accumulation` (the server's settings): a loaded
pipeline's denoisers (`Pipeline.denoisers`: an SD / SDXL UNet, a flow transformer, Wan's
transformers) have their float16 GEMMs on the matrix units accumulate in float16 while they
run (gpustd.nn.Module.gemm_accumulate, gpustd.gemm.accumulate): ComfyUI's
`--fast fp16_accumulation`. Text encoders, VAEs and ControlNets keep f32 accumulators (T5's
activations are the ones f16 sums would overflow).

Measured on an H100 (bench/NOTES.md, "f16 accumulation as an option"): FLUX.1 dev's step 453
-> 390 ms, SD 3.5 Large's 443 -> 417, the output 1.2% / 1.1% (largest difference over the
largest value) from diffusers fp16, as cuBLAS's own fp16 accumulation is (1.3% / 1.1%) and
nearer than diffusers bf16 (60% / 2.4% on random weights). The infotext says
"FP16 accumulation: True".
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpustd.gemm import accumulate, matrix_units

__all__ = ["accumulates_fp16", "use_fp16_accumulation"]


def use_fp16_accumulation(pipe: Any) -> str:
    """Make `pipe`'s denoiser accumulate its f16 GEMMs in f16 and say, in one line, whether
    that takes effect here (a float32 model or an adapter without f16 result matrices keeps
    f32 accumulators)."""
    models, what = pipe.denoisers.networks, pipe.denoisers.called
    for model in models:
        model.gemm_accumulate = "f16"
    # where and in what it runs: the pipeline's placement, or (Wan's pipeline has none) its
    # first weight's
    where: Any = getattr(pipe, "placement", None) or next(iter(models[0].parameters()))
    dtype, device = np.dtype(where.dtype), where.device
    if dtype != np.float16:
        return (f"fp16 accumulation: the {what} runs {dtype.name}, so it has no float16 "
                "GEMMs; use --fp16 (or --dtype float16) for it to apply")
    if not (matrix_units.available(device) and accumulate.f16_available(device)):
        return ("fp16 accumulation: this adapter has no float16 result matrices (Dawn on an "
                f"NVIDIA GPU has), so the {what}'s GEMMs keep f32 accumulators")
    return f"fp16 accumulation: the {what}'s float16 GEMMs accumulate in float16"


def accumulates_fp16(pipe: Any) -> bool:
    """Whether `pipe`'s denoiser was set to accumulate in f16 (the infotext's field)."""
    return any(m.gemm_accumulate == "f16" for m in pipe.denoisers.networks)
