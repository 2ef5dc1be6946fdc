"""`--vae PATH`: a separate VAE on the GPU, and the names the WebUI's infotext gives it.

    pipe.vae = load_vae("vae-ft-mse-840000-ema-pruned.safetensors", dtype=dtype,
                        device=device, config=pipe.vae.config)
    infotext["VAE hash"], infotext["VAE"] = vae_hash(path), vae_name(path)
"""

from __future__ import annotations

import hashlib
import os
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, FeatureError, as_dtype, default_device
from gpustd.nn import StateDictError, deferred

from ...models import AutoencoderKL
from ..errors import WeightsError
from .vae import load_vae_weights

__all__ = ["load_vae", "vae_hash", "vae_name", "vae_near_checkpoint"]


def load_vae(path: str | os.PathLike[str], *, dtype: Any = np.float32,
             device: Device | None = None, config: dict[str, Any] | None = None,
             variant: str | None = None, to_host: bool = False) -> AutoencoderKL:
    """The VAE at `path` on `device` with weights in `dtype`: a diffusers VAE folder
    (config.json + diffusion_pytorch_model[.fp16].safetensors) or a `.safetensors` file in the
    LDM layout (the WebUI's `*.vae.safetensors`) or diffusers' names.

    config: the config of the VAE it replaces (`pipe.vae.config`): a single file takes it (a file
    has none) after a check that its shapes fit; a folder keeps its own but must agree on the
    latent channels. Raises WeightsError naming the file (missing, a pickle naming a disallowed
    global, not a VAE, shapes that do not fit). diffusers: `AutoencoderKL.from_pretrained(path)`
    / `.from_single_file(path)`. `to_host`: built under gpustd.nn.deferred and every tensor
    kept in host memory as it is read, never on the GPU (a VAE for a pipeline in a memory
    mode, which brings it in when it runs).
    """
    device = device or default_device()
    dtype = as_dtype(dtype)
    if dtype == np.float16 and not device.has_f16:
        raise FeatureError("shader-f16", "float16 weights", device.info.label)
    weights = load_vae_weights(path, dtype=dtype, config=config, variant=variant)
    with deferred() if to_host else nullcontext():
        vae = AutoencoderKL(weights.config, dtype=dtype, device=device)
    try:
        vae.load_state_dict(weights, to_host=to_host)
    except StateDictError as exc:
        raise WeightsError(f"{path}: the VAE's tensors do not fit its config: {exc}") from None
    return vae


def vae_near_checkpoint(checkpoint: str | os.PathLike[str]) -> Path | None:
    """The VAE beside a single-file checkpoint, used when no --vae is given: `NAME.vae.pt`,
    `NAME.vae.ckpt` or `NAME.vae.safetensors` for `NAME.safetensors`, first found in that order
    (the WebUI's `find_vae_near_checkpoint` before 1.6 and SD.Next's; the WebUI 1.6+ takes any
    known VAE file whose name starts with NAME, from its VAE folder too). None when there is
    none. A pickle one is read without running it (`TorchFile`)."""
    stem = Path(checkpoint).with_suffix("")
    for suffix in (".vae.pt", ".vae.ckpt", ".vae.safetensors"):
        if (candidate := stem.with_name(stem.name + suffix)).is_file():
            return candidate
    return None


def _weights_file(path: Path) -> Path:
    """The file whose bytes identify the VAE at `path`: itself, or a folder's weights."""
    if not path.is_dir():
        return path
    folder = path / "vae" if (path / "vae" / "config.json").is_file() else path
    files = sorted(folder.glob("diffusion_pytorch_model*.safetensors"))
    if not files:
        raise WeightsError(f"{folder}: no diffusion_pytorch_model*.safetensors to identify the "
                           "VAE by")
    return files[0]


def vae_name(path: str | os.PathLike[str]) -> str:
    """The infotext's `VAE:` value: the file name with its extension, as the WebUI writes it
    (`os.path.basename` of the loaded file: "vae-ft-mse-840000-ema-pruned.safetensors"); for a
    folder, the folder's name."""
    return Path(path).name


def vae_hash(path: str | os.PathLike[str]) -> str:
    """The infotext's `VAE hash:` value: the first 10 hex digits of the SHA-256 of the whole
    file, as the WebUI's `hashes.sha256(file, "vae")[0:10]`; for a folder, of its weights file."""
    digest = hashlib.sha256()
    with open(_weights_file(Path(path)), "rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()[:10]
