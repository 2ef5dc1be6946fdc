"""The VAE decoder's kernels begun with the UNet's, on a device that builds in the background.

A cold process found the decoder's kernels only when its first decode recorded, after the last
step: on an H100 (Dawn, SD 1.5 float16, 512 px) its 10 kernels were begun 9.7 s into the
process and cost 1.3 s of waiting there, while the build threads had sat idle since the UNet's
kernels were ready. `begin_decode` runs the decoder once on a latent of the picture's size
under gpucore.begin_only, before the denoising records its first step: every dispatch begins
its kernel's build and records nothing, so the builds run beside the UNet's, and the real
decode finds them built. Once per VAE and latent size; nothing where the device builds in
place (CPU adapters, OpenGL: begun there would mean built now, on the recording thread).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import numpy as np

import gpucore

__all__ = ["begin_decode"]

_begun: weakref.WeakKeyDictionary[Any, set[tuple[int, ...]]] = weakref.WeakKeyDictionary()


def begin_decode(decode: Callable[[np.ndarray], Any], vae: Any,
                 latent_shape: tuple[int, ...]) -> bool:
    """Begin the kernels `decode(latents)` will use for latents of `latent_shape` on `vae`'s
    device (module docstring); `decode` is the pipeline's decode of host latents. True
    when begun now."""
    device = vae.decoder.conv_in.weight.device
    if not device.builds_later:
        return False
    seen = _begun.setdefault(vae, set())
    if latent_shape in seen:
        return False
    seen.add(latent_shape)
    with gpucore.begin_only(device):
        decode(np.zeros(latent_shape, np.float32))
    return True
