"""The VAE in float32 under a float16 model: `--no-half-vae` (generate, serve; the server's
`no_half_vae`), and the WebUI's "Automatically revert VAE to 32-bit floats".

A float16 VAE overflows on some models and pictures (its activations pass float16's 65504:
SD 1.x fine-tunes and their VAE files are the known cases), and its pictures (or the latents
of a picture it encodes: an init image, an edit model's reference, a ControlNet map) come out
NaN. `generate` then does what the WebUI does by default: it makes the VAE float32 from its
own float16 weights (as the WebUI's `.to(torch.float32)` does), warns once (VaeRevertWarning),
and makes the pictures again; the VAE stays float32 for the rest of the process. The
refiner's VAE goes with the model's, and so does a hires pass's own VAE file (Forge's
`hr_additional_modules`: module_load.HiresModules, kept float32 for the file's next hires
passes): each is one more model whose `use_float32_vae()` the revert calls. `--no-half-vae`
starts with the model's float32 (a hires VAE file is then read in float32 too).

On matrix units a float32 VAE under a float16 SD or SDXL model decodes and encodes by its
scaled float16 twin (diffusion.models.vae_half: a calibrated power-of-two scale keeps every
activation in range), as SDXL's own VAE does, so the revert costs one float32 pass;
AVX_VAE_FLOAT32=1 keeps every pass in float32. The flow families' VAEs run float32.

    print(use_float32_vae(pipe))                       # --no-half-vae
    run = reverting(family, request, lambda: family.decode(latents, request))
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

from gpustd.nn import deferred

from .finite import NonFiniteError, VaeNonFiniteError

__all__ = ["VaeRevertWarning", "float32_copy", "reverting", "use_float32_vae"]

T = TypeVar("T")


class VaeRevertWarning(UserWarning):
    """A float16 VAE gave NaN or infinity and was made float32 (the module doc)."""


def _weight(vae: Any) -> Any:
    return next(iter(vae.parameters()))


def float32_copy(vae: Any) -> Any:
    """`vae` (an AutoencoderKL, FLUX.2's or Qwen-Image's VAE: each built from its config)
    rebuilt in float32 from its own weights, on its device; `vae` itself where it is float32
    already."""
    if np.dtype(_weight(vae).dtype) == np.float32:
        return vae
    state = {key: tensor.numpy().astype(np.float32) for key, tensor in vae.named_parameters()}
    with deferred():
        copy = type(vae)(vae.config, dtype=np.float32, device=_weight(vae).device)
    copy.load_state_dict(state)
    return copy


def use_float32_vae(pipe: Any) -> str:
    """Make `pipe`'s VAE float32 (`pipe.use_float32_vae()`: its own float32 copy; the
    model's weights stay as they are) and say so in one line."""
    if not pipe.use_float32_vae():
        return "no-half-vae: the VAE runs in float32 already"
    return "no-half-vae: the VAE runs in float32 (the model keeps its float16 weights)"


def reverting(family: Any, request: Any, call: Callable[[], T]) -> T:
    """`call()` (the family's denoising, which may encode and, in a hires pass, decode; or its
    decode); where a VAE gave NaN or infinity in float16, the VAEs made float32 (the model's,
    the refiner's and the hires pass's own: any of them may have been the one), a warning, and
    `call()` again. VAEs float32 already raise the error, saying where else to look."""
    try:
        return call()
    except VaeNonFiniteError as error:
        others = (getattr(request, name, None) for name in ("refiner", "hires_modules"))
        changed = [model.use_float32_vae() for model in (family, *others)
                   if model is not None and hasattr(model, "use_float32_vae")]
        if not any(changed):
            raise NonFiniteError(str(error).removesuffix(error.remedy) + (
                "the VAE runs in float32 already, so the latents or the VAE's weights hold the "
                "fault (check the model and VAE files)")) from error
    warnings.warn("the VAE's float16 pictures were NaN or infinite, so the VAE now runs in "
                  "float32 and they were made again (the WebUI's automatic revert); start with "
                  "--no-half-vae (the server's no_half_vae) to skip the float16 attempt",
                  VaeRevertWarning, stacklevel=3)
    return call()
