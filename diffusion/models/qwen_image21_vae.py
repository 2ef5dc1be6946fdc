"""The Qwen-Image 2.1 VAE (diffusers' AutoencoderKLQwenImage21 names) over single pictures:
Wan 2.2's VAE network (residual down and up blocks whose shortcuts move pixels into channels
and back: wan_vae_residual) with plain 2D convolutions. diffusers' "causal 3D" convolutions of
this model are 2D ones already (4D kernels, one frame), and its `time_conv`s never run on a
clip's first frame, so a picture is Qwen-Image's network (qwen_image_vae) with Wan 2.2's
levels: 16x spatial compression (five levels), 64 latent channels, RGBA pictures (4
channels), a decoder wider than the encoder (`decoder_base_dim`), latents normalized per
channel by the config's `latents_mean` / `latents_std`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, concatenate, nn, take_slice

from . import qwen_image_vae as qwen
from . import wan_vae, wan_vae_residual
from .layers import Place
from .wan_vae_common import LatentStatistics, checked_config

__all__ = ["AutoencoderKLQwenImage21"]

# diffusers' AutoencoderKLQwenImage21 defaults: the released model's vae/config.json
_DEFAULTS: dict[str, Any] = {
    "base_dim": 96, "decoder_base_dim": 144, "z_dim": 64, "dim_mult": (1, 2, 4, 8, 8),
    "num_res_blocks": 2, "attn_scales": (), "temperal_downsample": (False, True, True, True),
    "is_residual": True, "in_channels": 4, "out_channels": 4, "patch_size": None,
    "latents_mean": (
        0.5126, 0.7721, -0.0631, 1.3506, -0.7855, -2.1025, -0.3458, 1.3722, 1.8873, -1.7177,
        -0.651, 0.2732, 0.7562, -0.6163, -1.0277, 3.8363, 2.021, 0.0472, 0.932, 2.0087, 2.4954,
        -0.1391, -1.4249, 1.8464, -0.5236, 1.2826, 3.7046, -1.3035, 2.7286, -1.4518, -1.9036,
        -1.9955, -0.0342, -1.0265, -0.7636, 3.0555, 0.0746, -3.0751, -0.1076, 1.7376, -1.0914,
        -1.9435, -0.2784, -1.368, 0.4809, -0.4433, 0.3764, 0.5729, -2.0595, 1.096, -1.326,
        -2.0211, -5.0179, 0.5275, 4.0162, 1.8505, 0.3026, 1.9373, 1.4937, 0.2632, 0.5547,
        -1.7121, -0.1562, 0.0304),
    "latents_std": (
        3.2001, 3.2936, 3.4321, 3.0091, 3.1061, 4.0379, 4.0705, 3.791, 3.0785, 3.65, 3.9308,
        3.0904, 2.8778, 3.7675, 3.732, 5.0756, 3.2864, 4.0397, 3.1317, 4.0443, 2.9249, 3.9454,
        3.0988, 4.2489, 3.4896, 3.8513, 3.9323, 3.4719, 3.7498, 4.283, 3.5694, 4.2467, 3.9037,
        3.2947, 5.077, 3.5075, 3.27, 3.4767, 2.8063, 5.1125, 3.5327, 4.7833, 3.1286, 4.1819,
        3.8527, 3.8312, 3.5605, 4.3875, 3.9624, 4.0168, 3.5643, 4.055, 5.5614, 4.2963, 4.408,
        3.4959, 3.8747, 3.7608, 3.5735, 3.149, 3.7662, 3.6746, 3.4563, 3.8161),
}


class ResidualDownBlock(wan_vae_residual.ResidualDownBlock):
    """Wan 2.2's residual down block over 2D parts. diffusers: `QwenImage21ResidualDownBlock`."""

    residual_kind, resample_kind = qwen.ResidualBlock, qwen.Resample


class ResidualUpBlock(wan_vae_residual.ResidualUpBlock):
    """Wan 2.2's residual up block over 2D parts. diffusers: `QwenImage21ResidualUpBlock`."""

    residual_kind, resample_kind = qwen.ResidualBlock, qwen.Resample


class Encoder(wan_vae.Encoder):
    """diffusers: `QwenImage21Encoder3d` on one frame: Wan 2.2's encoder over 2D parts."""

    make_conv = staticmethod(qwen._conv)
    residual_kind, resample_kind, mid_kind = qwen.ResidualBlock, qwen.Resample, qwen.MidBlock
    residual_down_kind = ResidualDownBlock


class Decoder(wan_vae.Decoder):
    """diffusers: `QwenImage21Decoder3d` on one frame: Wan 2.2's decoder (its own base dim,
    `decoder_base_dim`) over 2D parts."""

    make_conv = staticmethod(qwen._conv)
    up_kind, mid_kind = qwen.UpBlock, qwen.MidBlock
    residual_up_kind = ResidualUpBlock


def _each(x: Tensor, run: Any) -> Tensor:
    """`run` over the pictures of `x` (B, ...) one at a time, the outputs stacked again."""
    out = [run(take_slice(x, b, b + 1, axis=0)) for b in range(x.shape[0])]
    return out[0] if len(out) == 1 else concatenate(out, axis=0)


class AutoencoderKLQwenImage21(LatentStatistics, nn.Module):
    """Pictures (B, 4, H, W) (RGBA) in [-1, 1] <-> latents (B, z_dim, H / s, W / s), s =
    `spatial_factor` (16).

    Config: `vae/config.json` of a Qwen-Image 2.1 folder. Parameter names are diffusers'
    (`decoder.up_blocks.0.resnets.0.conv1.weight` of shape (out, in, 3, 3),
    `decoder.mid_block.attentions.0.to_qkv.weight`, `post_quant_conv.weight`, ...; the unused
    `time_conv`s skipped). diffusers: `AutoencoderKLQwenImage21.decode(z[:, :, None])` and
    `.encode(x[:, :, None]).latent_dist` with the frame axis squeezed back. The interface is
    AutoencoderKLQwenImage's (qwen_image_vae), so its pipeline code takes either.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        if cfg["patch_size"] not in (None, 1) or not cfg["is_residual"]:
            raise ValueError(f"Qwen-Image 2.1 VAE patch_size {cfg['patch_size']!r} with "
                             f"is_residual {cfg['is_residual']!r} is not supported (the released "
                             "VAE's are none and true); fix the VAE's config.json")
        self.config = checked_config(cfg, "Qwen-Image 2.1", "Qwen-Image 2.1's VAE")
        place: Place = {"dtype": dtype, "device": device}
        z_dim = cfg["z_dim"]
        self.encoder = Encoder(cfg, place)
        self.quant_conv = qwen._conv(2 * z_dim, 2 * z_dim, 1, place)
        self.post_quant_conv = qwen._conv(z_dim, z_dim, 1, place)
        self.decoder = Decoder(cfg, place)

    @property
    def spatial_factor(self) -> int:
        """Pixels per latent along a side: 16 for the released VAE."""
        return int(2 ** (len(self.config["dim_mult"]) - 1))

    def load_state_dict(self, state: Mapping[str, Any], *, strict: bool = True,
                        dtype: Any = None, to_host: bool = False) -> None:
        """Load diffusers' AutoencoderKLQwenImage21 tensors (4D kernels, 4D/3D gammas, the
        resamplers' `time_conv`s, which only a clip's later frames use, dropped)."""
        super().load_state_dict(qwen.single_frame_state(state), strict=strict, dtype=dtype,
                                to_host=to_host)

    def decode(self, latents: Tensor) -> Tensor:
        """(B, z_dim, h, w) VAE latents (denormalized) -> (B, out_channels, s h, s w), s =
        `spatial_factor`, clamped to [-1, 1]. One picture at a time: each up block's shortcut
        (dup_up) treats the batch axis as a clip's frames."""
        z_dim = self.config["z_dim"]
        if latents.ndim != 4 or latents.shape[1] != z_dim:
            raise ValueError(f"Qwen-Image 2.1 VAE latents must be (batch, {z_dim}, height, "
                             f"width), got shape {latents.shape}")
        out = _each(self.post_quant_conv(latents),
                    lambda z: self.decoder(z, first_chunk=True))
        return qwen._clamp_unit(out)

    def encode(self, pixels: Tensor) -> tuple[Tensor, Tensor]:
        """(B, in_channels, H, W) in [-1, 1], H and W multiples of s = `spatial_factor` -> the
        posterior's mean and log variance, each (B, z_dim, H / s, W / s) (not normalized).
        One picture at a time, as decode. diffusers: `encode(x[:, :, None]).latent_dist`
        (`.mean`, `.logvar`, the latter unclamped)."""
        channels, side = self.config["in_channels"], self.spatial_factor
        if pixels.ndim != 4 or pixels.shape[1] != channels or any(
                n % side for n in pixels.shape[2:]):
            raise ValueError(f"Qwen-Image 2.1 VAE input must be (batch, {channels}, height, "
                             f"width) with height and width multiples of {side}, got shape "
                             f"{pixels.shape}")
        moments = self.quant_conv(_each(pixels, self.encoder))
        z_dim = self.config["z_dim"]
        return (take_slice(moments, 0, z_dim, axis=1),
                take_slice(moments, z_dim, 2 * z_dim, axis=1))

    def normalize(self, latents: Tensor) -> Tensor:
        """(z - latents_mean) / latents_std: what the transformer reads.
        QwenImage21Pipeline's `_encode_vae_image`: `(z - mean) / std`."""
        mean_, std = self._statistics(latents.dtype)
        return (latents - mean_) / std

    def denormalize(self, latents: Tensor) -> Tensor:
        """latents * latents_std + latents_mean: what `decode` reads.
        QwenImage21Pipeline's final decode: `latents * std + mean`."""
        mean_, std = self._statistics(latents.dtype)
        return latents * std + mean_
