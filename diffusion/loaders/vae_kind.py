"""Which kind of VAE a `--vae` file holds, read from its header, so that a family given
another family's VAE says so in one line before anything loads.

    vae_kind("ae.safetensors")                   # VaeKind("2d", 16): FLUX.1's, Z-Image's
    vae_kind("flux2-vae.safetensors")            # VaeKind("flux2", 32)
    vae_kind("qwen_image_vae.safetensors")       # VaeKind("causal3d", 16): Qwen-Image's
    require_vae("ae.safetensors", "flux2", 32, model="FLUX.2", usual="flux2-vae.safetensors")
    # WeightsError: ae.safetensors holds a 2D VAE of 16 latent channels (FLUX.1's, SD3's,
    # Z-Image's); FLUX.2 decodes with FLUX.2's VAE of 32 latent channels: give ...

The kinds: "2d" (the LDM autoencoder: SD's 4 channels, FLUX.1's and SD3's 16; original or
diffusers names), "flux2" (the same network with a batch norm over its patchified latents,
`bn.running_mean`), "causal3d" (Wan 2.1's causal 3D network, Qwen-Image's VAE: 5-D
convolution kernels; Wan's original names or diffusers'), "dc-ae" (the deep-compression
autoencoder, Sana's: GLUMBConvs' `conv_inverted` in the decoder, or mit-han-lab's
`decoder.project_in`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from .errors import WeightsError
from .formats.safetensors import SafetensorsFile

__all__ = ["VaeKind", "require_vae", "vae_kind"]

_PREFIXES = ("", "first_stage_model.", "vae.")
# the decoder's first convolution: LDM / diffusers names, Wan's original names
_DECODER_IN = ("decoder.conv_in.weight", "decoder.conv1.weight")
_USED_BY = {("2d", 4): " (SD 1.x/2.x's, SDXL's)", ("2d", 16): " (FLUX.1's, SD3's, Z-Image's)",
            ("causal3d", 16): " (Qwen-Image's, Wan 2.1's)", ("dc-ae", 32): " (Sana's)"}
_NAMES = {"2d": "a 2D VAE", "flux2": "FLUX.2's VAE", "causal3d": "a causal 3D VAE",
          "dc-ae": "a DC-AE"}


class VaeKind(NamedTuple):
    """A VAE file's network ("2d", "flux2", "causal3d") and latent channels."""

    kind: str
    channels: int

    def describe(self) -> str:
        return (f"{_NAMES[self.kind]} of {self.channels} latent channels"
                f"{_USED_BY.get((self.kind, self.channels), '')}")


def vae_kind(path: str | os.PathLike[str]) -> VaeKind | None:
    """The kind of VAE the .safetensors file `path` holds, None when it holds none.
    WeightsError naming the file when it cannot be read."""
    file = SafetensorsFile(Path(path))
    for prefix in _PREFIXES:
        if prefix + "decoder.project_in.conv.weight" in file:  # mit-han-lab's DC-AE names
            return VaeKind("dc-ae", int(file.shape(prefix + "decoder.project_in.conv.weight")[1]))
        for name in _DECODER_IN:
            if prefix + name not in file:
                continue
            shape = file.shape(prefix + name)
            if len(shape) == 5:
                return VaeKind("causal3d", int(shape[1]))
            if any(key.startswith(prefix + "decoder.") and ".conv_inverted." in key
                   for key in file.keys()):
                return VaeKind("dc-ae", int(shape[1]))
            flux2 = prefix + "bn.running_mean" in file
            return VaeKind("flux2" if flux2 else "2d", int(shape[1]))
    return None


def require_vae(path: str | os.PathLike[str], kind: str, channels: int, *, model: str,
                usual: str) -> None:
    """WeightsError in one line unless `path` holds a VAE of `kind` with `channels` latent
    channels: what it holds instead, what `model` decodes with, and the file to give
    (`usual`)."""
    found = vae_kind(path)
    wanted = VaeKind(kind, channels)
    if found == wanted:
        return
    held = "holds no VAE" if found is None else f"holds {found.describe()}"
    raise WeightsError(f"{Path(path).name} {held}; {model} decodes with {wanted.describe()}: "
                       f"give that VAE ({usual})")
