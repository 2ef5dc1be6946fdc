"""The VAE in float32 under a float16 model: `--no-half-vae` (generate, serve; the server's
`no_half_vae`), and the WebUI's "Automatically revert VAE to 32-bit floats".

A float16 VAE overflows on some models and pictures (its activations pass float16's 65504:
SD 1.x fine-tunes and their VAE files are the known cases), and its pictures (or the latents
of a picture it encodes: an init image, an edit model's reference, a ControlNet map) come out
NaN. `generate` then does what the WebUI does by default: it makes that VAE float32 from its
own float16 weights (as the WebUI's `.to(torch.float32)` does), warns (VaeRevertWarning, naming
the VAE, what it gave and --no-half-vae), and makes the pictures again; the VAE stays float32
for the rest of the process. A run may hold several VAEs: the model's (or its --vae file), the
SDXL refiner's, a hires pass's own (Forge's `hr_additional_modules`: module_load.HiresModules,
kept float32 for the file's next hires passes). The check names the VAE that gave the NaN
(VaeNonFiniteError.vae) and only that one is reverted: the others keep float16's speed and
memory until they overflow themselves. (The WebUI sets one process-wide VAE dtype,
`devices.dtype_vae`, so every VAE it loads after a revert is float32; it holds one VAE at a
time, where a run here holds them side by side.) `--no-half-vae` starts with the model's
float32 (a hires VAE file is then read in float32 too).

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
from pathlib import Path
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
    decode); where a float16 VAE gave NaN or infinity, that VAE alone made float32 (the
    model's, the refiner's or the hires pass's own: the error names it), a warning naming it,
    and `call()` again (once more for each other VAE that overflows then). A VAE float32
    already raises the error, naming it and saying where else to look."""
    while True:
        try:
            return call()
        except VaeNonFiniteError as error:
            owner = _owner(family, request, error.vae)
            if owner is None:  # a VAE none of them holds: nothing to revert
                raise
            model, name = owner
            if not model.use_float32_vae():
                raise NonFiniteError(str(error).removesuffix(error.remedy) + (
                    f"{name} runs in float32 already, so the latents or that VAE's weights "
                    "hold the fault (check the model and VAE files)")) from error
            warnings.warn(
                f"{name} gave {error.detail} in its float16 {error.part} (float16 overflowed), "
                "so that VAE now runs in float32 for the rest of the process and the run was "
                "made again (the WebUI's automatic revert; the other VAEs stay float16); start "
                "with --no-half-vae (the server's no_half_vae) to run every VAE in float32 "
                "from the first pass", VaeRevertWarning, stacklevel=3)


def _owner(family: Any, request: Any, vae: Any) -> tuple[Any, str] | None:
    """Which of the VAE holders (the family, the request's refiner and hires modules) holds
    `vae` (None: the family's own), and its name for the messages; None where none does."""
    refiner, hires = (getattr(request, key, None) for key in ("refiner", "hires_modules"))
    holders = [(family, "the model's VAE"), (refiner, "the refiner's VAE"),
               (hires, "the hires pass's VAE")]
    for model, name in holders:
        if model is not None and (vae is None or getattr(model, "vae", None) is vae):
            path = getattr(model, "vae_path", None)
            said = [getattr(model, "name", None) if model is not hires else None,
                    path and f"from {Path(path).name}"]
            return model, f"{name} ({', '.join(filter(None, said))})" if any(said) else name
    return None
