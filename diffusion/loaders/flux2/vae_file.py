"""FLUX.2's VAE in one file (`--vae flux2-vae.safetensors`, as ComfyUI ships it and Black
Forest Labs' `ae.safetensors` of FLUX.2 is): the LDM autoencoder's names (`encoder.down.0.
block.0...`, `mid.attn_1.q` as 1x1 convolutions) with its quant convolutions inside the
encoder and decoder (`encoder.quant_conv`, `decoder.post_quant_conv`) and the batch norm over
the patchified latents (`bn.running_mean`, `bn.running_var`); or a file under diffusers'
AutoencoderKLFlux2 names. Read lazily under diffusers' names, with the config of the VAE it
replaces (a file has none)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..formats.safetensors import SafetensorsFile
from ..keymaps.ldm_keys import ldm_vae_refs
from ..weights import ComponentWeights, TensorRef, resolve_dtype

__all__ = ["load_flux2_vae_file"]

_NESTED = {"encoder.quant_conv.": "quant_conv.", "decoder.post_quant_conv.": "post_quant_conv."}
_STATISTICS = ("bn.running_mean", "bn.running_var")
_TRAINING_STATE = "bn.num_batches_tracked"


def load_flux2_vae_file(path: str | os.PathLike[str], *, config: Mapping[str, Any],
                        dtype: Any = None) -> ComponentWeights:
    """Lazy AutoencoderKLFlux2 weights of the VAE file `path` under `config` (the model's own
    VAE's). Check the file's kind first (vae_kind.require_vae): a tensor that is missing or
    does not fit is named when the model loads them. diffusers has no single-file loader for
    it; ComfyUI: `VAELoader` of `flux2-vae.safetensors`."""
    file = SafetensorsFile(Path(path))
    keys = file.keys()
    if any(key.startswith("encoder.down_blocks.") for key in keys):  # diffusers' names
        refs = {key: TensorRef(file, key, file.shape(key)) for key in keys
                if key != _TRAINING_STATE}
    else:
        refs = ldm_vae_refs(file, "")
        for key in keys:
            for old, new in _NESTED.items():
                if key.startswith(old):
                    refs[new + key[len(old):]] = TensorRef(file, key, file.shape(key))
        for key in _STATISTICS:
            if key in file:
                refs[key] = TensorRef(file, key, file.shape(key))
    return ComponentWeights("vae", dict(config), refs, dtype=resolve_dtype(dtype))
