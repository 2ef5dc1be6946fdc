"""A model loaded with module files: Forge's `forge_additional_modules` (the VAE / Text Encoder
list), what the server's `--text-encoder` files and per-request module choices load with.

    pipe = load_with_modules("FLUX.1-dev", ["ae.safetensors", "t5xxl_fp16.safetensors"],
                             dtype="float16")

Each file's parts (diffusion.loaders.module_file) go where the model takes them, as Forge's
loader puts them: text encoders into a FLUX / SD3 model (`load_pipeline(text_encoders=)`), a
VAE in place of any model's own (a FLUX / SD3 single file takes it as one of what it lacks; a
folder or an SD model gets `load_vae` with its VAE's config). What a model has no place for
is left out, as the server's `--text-encoder` files always were for other models: text
encoders given to an SD 1.x / 2.x / SDXL model (Forge maps only the CLIPs a model has, and no
SD model has a T5), a VAE of other latent channels (FLUX's 16-channel `ae.safetensors` beside
an SD 1.5 model). So one module list serves every model a server switches between.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..loaders.flow_file import flow_model_family
from ..loaders.module_file import module_roles, vae_latent_channels
from ..loaders.text_encoder_file import module_stem
from .load import load_pipeline

__all__ = ["load_with_modules"]


def load_with_modules(path: str | os.PathLike[str], modules: Sequence[str | os.PathLike[str]],
                      *, dtype: Any = np.float32, device: Any = None) -> Any:
    """`load_pipeline(path, dtype=, device=)` with `modules` (module docstring) in place of
    the model's parts. WeightsError (a ValueError) naming a file that is no module, or a VAE
    whose shapes do not fit the model's."""
    files = [Path(m) for m in modules]
    roles = {file: module_roles(file) for file in files}
    vaes = [f for f in files if "vae" in roles[f]]
    encoders = [f for f in files if set(roles[f]) - {"vae"}]
    where: dict[str, Any] = {"dtype": dtype} if device is None else {"dtype": dtype,
                                                                       "device": device}
    flow = flow_model_family(path) is not None
    if flow and Path(path).is_file():  # a single file takes its VAE with its text encoders
        return load_pipeline(path, text_encoders=files, **where)
    pipe = load_pipeline(path, text_encoders=encoders if flow else (), **where)
    channels = int(pipe.vae.config["latent_channels"])
    vaes = [f for f in vaes if vae_latent_channels(f) == channels]
    for vae in vaes[-1:]:  # the last one named wins, as in Forge's state dict replacement
        _replace_vae(pipe, vae)
        if flow:
            pipe.modules.append(module_stem(vae))
    return pipe


def _replace_vae(pipe: Any, file: Path) -> None:
    """`pipe`'s VAE replaced by the one in `file`, in the dtype and on the device its own was
    (an SDXL VAE kept float32 under float16 weights stays so, as the CLI's --vae does)."""
    from ..loaders.vae_file import load_vae

    own = pipe.vae
    weight = own.decoder.conv_in.weight
    loaded = load_vae(file, dtype=weight.dtype, device=weight.device, config=own.config)
    if hasattr(pipe, "pipe"):  # a FlowModel: its diffusers-style pipeline holds the VAE
        pipe.pipe.vae = loaded
    else:
        pipe.vae = loaded
    pipe.vae_path = file
