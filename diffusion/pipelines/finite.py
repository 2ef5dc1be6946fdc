"""NaN and infinity caught where a network hands its result on, as the WebUI's NaN check does
("A tensor with all NaNs was produced in Unet ..."), instead of saved as a black picture.

float16 holds values up to 65504; some models overflow it at some prompts, sizes or LoRA
weights (SDXL's original VAE is the known one, which is why it decodes in float32 here as in
diffusers; FLUX and SD 3.5 rows may pass it too), and `--fp16-accumulation`'s float16 sums
and `--int8`'s quantized products add their own ways. One overflowed value spreads through
the next attention to every pixel. The checks read arrays already on the host (the final
latents, the decoded pictures): they cost nothing on the GPU.

    check_latents(run.latents, family)     # generate(), after the denoising
    pictures_uint8(pictures)               # a VAE's [0, 1] pictures as uint8, checked
    check_encoded(mean)                    # an encode's posterior (SD's, the flow img2img's)
    check_decoded(video)                   # Wan's frames, before they are written
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from ..models.int8 import marked as int8_marked
from .fp16_accumulation import accumulates_fp16

__all__ = ["NonFiniteError", "VaeNonFiniteError", "check_decoded", "check_encoded",
           "check_finite", "check_latents", "pictures_uint8"]


class NonFiniteError(ValueError):
    """A network gave NaN or infinite values; the message says which and what to change. A
    ValueError, so the CLI prints it as one line and the server answers it as a 422 that
    names the way out, as any request its settings cannot make. `remedy`: the message's
    closing way out; `detail`: what was found ("NaN in 12.5% of its values")."""

    remedy: str = ""
    detail: str = ""


class VaeNonFiniteError(NonFiniteError):
    """The VAE's pictures held NaN or infinity (`generate` makes a float16 VAE float32 and
    decodes again: diffusion.pipelines.vae_float32). `vae`: the VAE that gave them, so that
    only that one is reverted (None: the model's own); `part`: "decode" or "encode"."""

    vae: Any = None
    part: str = "decode"


def check_finite(values: np.ndarray, what: str, remedy: str,
                 error: type[NonFiniteError] = NonFiniteError) -> None:
    """`error` (a NonFiniteError) naming `what` and `remedy` where `values` hold NaN or
    infinity."""
    bad = ~np.isfinite(values)
    if not bad.any():
        return
    kinds = " and ".join(k for k, hit in (("NaN", np.isnan(values).any()),
                                          ("infinity", np.isinf(values).any())) if hit)
    detail = f"{kinds} in {bad.mean():.1%} of its values"
    raised = error(f"{what} gave {detail}, so the picture would be black or noise: {remedy}")
    raised.remedy, raised.detail = remedy, detail
    raise raised


def check_latents(latents: np.ndarray, pipe: Any) -> None:
    """The final latents of `pipe`'s denoiser, checked (see the module docstring); the
    remedy names the settings of `pipe` that can overflow."""
    models, what = pipe.denoisers.networks, pipe.denoisers.called
    first = next(iter(models[0].parameters()), None)
    ways = []
    if accumulates_fp16(pipe):
        ways.append("leave out --fp16-accumulation (float16 sums)")
    if int8_marked(pipe):
        ways.append("leave out --int8")
    if first is None or np.dtype(first.dtype) == np.float16:
        ways.append("run in float32 (--dtype float32; the server's --dtype)")
    remedy = ("; or ".join(ways) + ", where float16 overflowed") if ways else (
        "the weights themselves may hold NaN or infinity (check the model file)")
    check_finite(latents, f"the {what}", remedy)


_VAE_REMEDY = ("run it in float32 (--no-half-vae; the server's no_half_vae), where float16 "
               "overflowed")


def pictures_uint8(pictures: Iterable[np.ndarray], vae: Any = None) -> list[np.ndarray]:
    """Pictures in [0, 1] (clipped: a VAE overshoots a little) as uint8, each checked first:
    a VAE that overflowed float16 gives NaN, which a cast to uint8 would turn into black.
    `vae`: the VAE that decoded them, named by the error (None: the model's own)."""
    out = []
    for picture in pictures:
        check_decoded(picture, vae)
        out.append(np.round(np.clip(picture, 0.0, 1.0) * 255).astype(np.uint8))
    return out


def check_decoded(values: np.ndarray, vae: Any = None) -> None:
    """The VAE decoder's pictures or video frames, checked: NaN would be cast to black.
    `vae`: the VAE that decoded them (None: the model's own)."""
    _check_vae(values, "decode", vae)


def check_encoded(mean: np.ndarray, vae: Any = None) -> None:
    """The VAE encoder's posterior mean, checked: NaN there would reach the denoiser, whose
    check would then blame it. `vae`: the VAE that encoded (None: the model's own)."""
    _check_vae(mean, "encode", vae)


def _check_vae(values: np.ndarray, part: str, vae: Any) -> None:
    try:
        check_finite(values, f"the VAE's {part}", _VAE_REMEDY, VaeNonFiniteError)
    except VaeNonFiniteError as error:  # which VAE, for the revert (vae_float32.reverting)
        error.vae, error.part = vae, part
        raise
