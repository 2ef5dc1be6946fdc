"""ControlNetModel (SD 1.x/2.x and SDXL) with diffusers' parameter names and config.

A ControlNet is a copy of the UNet's input half (`unet.UNetEncoder`: conv_in, time embedding,
down blocks, mid block) that also reads a control image: `controlnet_cond_embedding` turns the
image (B, 3, 8h, 8w) into conv_in's width at latent size, added to conv_in's output. Zero
convolutions (1x1) then give one residual per UNet skip and one for the mid block, which the
UNet adds (`UNet2DConditionModel.forward(down_block_additional_residuals=...,
mid_block_additional_residual=...)`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, nn
from gpustd.reduction import mean
from gpustd.shape import concatenate, split

from .layers import Place
from .unet import UNetEncoder, check_config

__all__ = ["ControlNetModel", "soft_injection_scales"]

# Where ControlNetModel's defaults differ from the UNet's (diffusers' ControlNetModel.__init__)
_DEFAULTS: dict[str, Any] = {
    "cross_attention_dim": 1280, "conditioning_channels": 3,
    "conditioning_embedding_out_channels": (16, 32, 96, 256),
    "controlnet_conditioning_channel_order": "rgb", "global_pool_conditions": False,
}


def soft_injection_scales(count: int, weight: float = 1.0) -> list[float]:
    """The WebUI ControlNet extension's soft weights ("My prompt is more important" and
    "ControlNet is more important"): weight * 0.825 ** (12 - i) for the i-th residual, skips
    first and the mid block's last. The exponent counts from SD 1.5's 13 residuals for every
    model, as the extension does (SDXL's mid residual gets 0.825 ** 3)."""
    return [weight * 0.825 ** float(12 - i) for i in range(count)]


class ControlNetModel(UNetEncoder):
    """diffusers' `ControlNetModel`. Config: its `config.json` dict (SD 1.x/2.x: the UNet's
    blocks; SDXL: `addition_embed_type="text_time"`, then `forward` needs `added_cond`)."""

    def __init__(self, config: Mapping[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        place: Place = {"dtype": dtype, "device": device}
        cfg = check_config({**_DEFAULTS, **config})
        if cfg["encoder_hid_dim_type"] is not None:
            raise ValueError("ControlNet config encoder_hid_dim_type="
                             f"{cfg['encoder_hid_dim_type']!r}: Kolors ControlNets are not "
                             "supported")
        order = cfg["controlnet_conditioning_channel_order"]
        if order not in ("rgb", "bgr"):
            raise ValueError(f"ControlNet config controlnet_conditioning_channel_order={order!r}:"
                             " expected 'rgb' or 'bgr'")
        if not isinstance(cfg["layers_per_block"], int):
            raise ValueError(f"ControlNet config layers_per_block={cfg['layers_per_block']!r}: "
                             "a ControlNet has one int for every level")
        super().__init__(cfg, place)
        channels = list(cfg["block_out_channels"])
        embed = list(cfg["conditioning_embedding_out_channels"])

        def conv(i: int, o: int, kernel: int = 3, stride: int = 1) -> nn.Conv2d:
            return nn.Conv2d(i, o, kernel, stride=stride, padding=kernel // 2, **place)

        cond = self.controlnet_cond_embedding = nn.Namespace()
        cond.conv_in = conv(cfg["conditioning_channels"], embed[0])
        cond.blocks = nn.ModuleList([layer for i in range(len(embed) - 1)
                                     for layer in (conv(embed[i], embed[i]),
                                                   conv(embed[i], embed[i + 1], stride=2))])
        cond.conv_out = conv(embed[-1], channels[0])

        # one zero conv per UNet skip: conv_in's output, each resnet's, each downsampler's
        widths = [channels[0]]
        for i, width in enumerate(channels):
            widths += [width] * (cfg["layers_per_block"] + (i < len(channels) - 1))
        self.controlnet_down_blocks = nn.ModuleList([conv(w, w, 1) for w in widths])
        self.controlnet_mid_block = conv(channels[-1], channels[-1], 1)

    def forward(self, sample: Tensor, timesteps: Any, context: Tensor, controlnet_cond: Tensor,
                added_cond: Mapping[str, Any] | None = None, *,
                conditioning_scale: float | Sequence[float] = 1.0,
                guess_mode: bool = False,
                union_mode: int | None = None) -> tuple[list[Tensor], Tensor]:
        """(down residuals, mid residual) for the UNet: one per skip, (B, C_i, h_i, w_i), and
        (B, C_mid, h_mid, w_mid).

        sample (B, in_channels, h, w), timesteps, context and added_cond as the UNet takes them;
        controlnet_cond: the control image (B, conditioning_channels, 8h, 8w) in [0, 1] (RGB;
        a "bgr" model's flip is done here). conditioning_scale: one number for every residual,
        or one per residual (skips then mid: `soft_injection_scales`). guess_mode: diffusers'
        scales logspace(-1, 0) * conditioning_scale. diffusers: `controlnet(sample, t, context,
        controlnet_cond, conditioning_scale, guess_mode, added_cond_kwargs=added_cond)`.
        union_mode: a ControlNet Union's control type (diffusion.models.controlnet_union);
        the others take None.
        """
        if controlnet_cond.ndim != 4 or controlnet_cond.shape[0] != sample.shape[0] or (
                controlnet_cond.shape[1] != self.config["conditioning_channels"]):
            raise ValueError(f"controlnet_cond has shape {controlnet_cond.shape}; this ControlNet"
                             f" takes ({sample.shape[0]}, {self.config['conditioning_channels']},"
                             " H, W), the batch of the sample and the image 8x its size")
        if self.config["controlnet_conditioning_channel_order"] == "bgr":
            controlnet_cond = _flip_channels(controlnet_cond)
        if controlnet_cond.dtype != sample.dtype:
            controlnet_cond = controlnet_cond.astype(sample.dtype)
        temb_act = self.control_embedding(sample, timesteps, added_cond, union_mode)
        h = self.control_input(sample, controlnet_cond, union_mode)
        h, skips = self.down(h, temb_act, context)
        h = self.mid(h, temb_act, context)
        count = len(skips) + 1
        if isinstance(conditioning_scale, (int, float)):
            if guess_mode:  # diffusers: torch.logspace(-1, 0, count)
                scales = [conditioning_scale * 10.0 ** (-1 + i / (count - 1))
                          for i in range(count)]
            else:
                scales = [float(conditioning_scale)] * count
        else:
            scales = [float(s) for s in conditioning_scale]
            if len(scales) != count:
                raise ValueError(f"conditioning_scale has {len(scales)} values; this ControlNet "
                                 f"gives {count} residuals (one per skip, then the mid block)")
        if not all(math.isfinite(s) for s in scales):
            raise ValueError(f"conditioning_scale must be finite, got {scales}")
        down = [self._zero_conv(zero, s, scale)
                for zero, s, scale in zip(self.controlnet_down_blocks, skips, scales)]
        mid = self._zero_conv(self.controlnet_mid_block, h, scales[-1])
        if self.config["global_pool_conditions"]:
            down = [_spatial_mean(d) for d in down]
            mid = _spatial_mean(mid)
        return down, mid

    @property
    def union(self) -> bool:
        """Whether it is a ControlNet Union, which takes a control type."""
        return False

    def control_embedding(self, sample: Tensor, timesteps: Any,
                          added_cond: Mapping[str, Any] | None,
                          union_mode: int | None) -> Tensor:
        """silu(the time embedding) every resnet reads (UNetEncoder.embedding)."""
        if union_mode is not None:
            raise ValueError(f"union_mode={union_mode}: this ControlNet is not a Union one; "
                             "give no control type")
        return self.embedding(sample, timesteps, added_cond)

    def control_input(self, sample: Tensor, image: Tensor, union_mode: int | None) -> Tensor:
        """conv_in(sample) + the control image's embedding: the down blocks' input."""
        return self.conv_in(sample) + self.cond_embedding(image)

    def cond_embedding(self, image: Tensor) -> Tensor:
        """controlnet_cond_embedding: the control image at conv_in's width and latent size."""
        cond = self.controlnet_cond_embedding
        h = nn.silu(cond.conv_in(image))
        for block in cond.blocks:
            h = nn.silu(block(h))
        return cond.conv_out(h)

    @staticmethod
    def _zero_conv(conv: nn.Conv2d, x: Tensor, scale: float) -> Tensor:
        out = conv(x)
        return out if scale == 1.0 else out * scale


def _flip_channels(x: Tensor) -> Tensor:
    return concatenate(split(x, x.shape[1], axis=1)[::-1], axis=1)


def _spatial_mean(x: Tensor) -> Tensor:
    return mean(x, axis=(2, 3), keepdims=True)
