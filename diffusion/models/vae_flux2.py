"""FLUX.2's VAE (diffusers' AutoencoderKLFlux2): the KL autoencoder with 32 latent channels,
whose latents the transformer sees patchified (2x2 patches to channels) and normalized by
the batch-norm statistics the VAE carries (`bn.running_mean`, `bn.running_var`) in place of
a scaling and shift factor."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device
from gpustd import nn

from .layers import Place
from .vae import AutoencoderKL, Decoder

__all__ = ["AutoencoderKLFlux2", "patchify", "unpatchify"]

_DEFAULTS: dict[str, Any] = {
    "latent_channels": 32, "batch_norm_eps": 1e-4, "patch_size": (2, 2),
    "decoder_block_out_channels": None,
    # the transformer's space comes from the batch norm, not from these
    "scaling_factor": 1.0, "shift_factor": 0.0, "force_upcast": True,
}


def patchify(latents: np.ndarray) -> np.ndarray:
    """(B, C, H, W) -> (B, 4C, H/2, W/2): each 2x2 patch's values to channels c*4 + 2*i + j.
    diffusers: `Flux2KleinPipeline._patchify_latents`."""
    batch, channels, height, width = latents.shape
    patches = latents.reshape(batch, channels, height // 2, 2, width // 2, 2)
    return patches.transpose(0, 1, 3, 5, 2, 4).reshape(batch, channels * 4, height // 2,
                                                       width // 2)


def unpatchify(patches: np.ndarray) -> np.ndarray:
    """patchify's inverse, (B, 4C, h, w) -> (B, C, 2h, 2w). diffusers:
    `Flux2KleinPipeline._unpatchify_latents`."""
    batch, channels, height, width = patches.shape
    latents = patches.reshape(batch, channels // 4, 2, 2, height, width)
    return latents.transpose(0, 1, 4, 2, 5, 3).reshape(batch, channels // 4, height * 2,
                                                       width * 2)


class _BatchNormStatistics(nn.Module):
    """torch's `BatchNorm2d(affine=False)` statistics, float32 whatever the model's dtype
    (its `num_batches_tracked` counter is training state, not loaded)."""

    def __init__(self, channels: int, device: Device | None) -> None:
        self.running_mean = nn.parameter((channels,), np.float32, device)
        self.running_var = nn.parameter((channels,), np.float32, device)


class AutoencoderKLFlux2(AutoencoderKL):
    """The FLUX.2 VAE. Config: diffusers' `vae/config.json` of a FLUX.2 folder
    (AutoencoderKLFlux2's fields; `decoder_block_out_channels` where the decoder is wider
    or narrower than the encoder). `encode`/`decode` work on raw latents as
    AutoencoderKL's; `to_transformer`/`from_transformer` map them to and from the
    transformer's patchified, normalized space. Parameter names are diffusers' except
    `bn.num_batches_tracked`, which a state dict may hold and loading must leave out."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        if tuple(cfg["patch_size"]) != (2, 2):
            raise ValueError(f"FLUX.2 VAE patch_size {tuple(cfg['patch_size'])} is not "
                             "supported: FLUX.2's is (2, 2)")
        super().__init__(cfg, dtype=dtype, device=device)
        if cfg["decoder_block_out_channels"]:
            place: Place = {"dtype": dtype, "device": device}
            self.decoder = Decoder(
                {**cfg, "block_out_channels": cfg["decoder_block_out_channels"]}, place)
        self.bn = _BatchNormStatistics(4 * cfg["latent_channels"], device)

    def _statistics(self) -> tuple[np.ndarray, np.ndarray]:
        mean = self.bn.running_mean.numpy().astype(np.float64).reshape(1, -1, 1, 1)
        var = self.bn.running_var.numpy().astype(np.float64).reshape(1, -1, 1, 1)
        return mean, np.sqrt(var + float(self.config["batch_norm_eps"]))

    def to_transformer(self, latents: np.ndarray) -> np.ndarray:
        """Raw latents (B, C, H, W) -> the transformer's (B, 4C, H/2, W/2), float32:
        patchified, then normalized by the batch-norm statistics. diffusers:
        `(_patchify_latents(z) - bn.running_mean) / sqrt(bn.running_var + eps)`."""
        mean, std = self._statistics()
        return ((patchify(latents) - mean) / std).astype(np.float32)

    def from_transformer(self, patches: np.ndarray) -> np.ndarray:
        """to_transformer's inverse: the raw latents decode takes, float32. diffusers:
        `_unpatchify_latents(z * sqrt(bn.running_var + eps) + bn.running_mean)`."""
        mean, std = self._statistics()
        return unpatchify(patches * std + mean).astype(np.float32)
