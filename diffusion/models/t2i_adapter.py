"""T2IAdapter (full and light, SD 1.5 and SDXL) with diffusers' parameter names and config.

The adapter turns a control image into one feature map per UNet down block (the UNet adds
them inside its down blocks: `UNet2DConditionModel.forward(
down_intrablock_additional_residuals=...)`); it runs once per image, not once per step.
Config: diffusers' `T2IAdapter` config.json (in_channels, channels, num_res_blocks,
downscale_factor, adapter_type "full_adapter" | "full_adapter_xl" | "light_adapter").
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, maximum, nn
from gpustd.reduction import mean
from gpustd.shape import permute

from .layers import Place

__all__ = ["T2IAdapter", "avg_pool2x2", "pixel_unshuffle"]

_TYPES = ("full_adapter", "full_adapter_xl", "light_adapter")


def pixel_unshuffle(x: Tensor, factor: int) -> Tensor:
    """(B, C, H, W) -> (B, C * factor**2, H / factor, W / factor). torch:
    `F.pixel_unshuffle(x, factor)`."""
    b, c, h, w = x.shape
    if h % factor or w % factor:
        raise ValueError(f"the adapter's control image is {h}x{w}; its sides must be multiples "
                         f"of {factor} (the adapter's downscale factor): resize it")
    r = factor
    split = x.reshape(b, c, h // r, r, w // r, r)
    return permute(split, (0, 1, 3, 5, 2, 4)).reshape(b, c * r * r, h // r, w // r)


def avg_pool2x2(x: Tensor) -> Tensor:
    """2x2 average pooling, stride 2, ceil mode (an odd side's last window averages what it
    covers). torch: `F.avg_pool2d(x, 2, 2, ceil_mode=True)`."""
    b, c, h, w = x.shape
    oh, ow = -(-h // 2), -(-w // 2)
    if (h, w) != (2 * oh, 2 * ow):
        x = nn.pad(x, (0, 2 * ow - w, 0, 2 * oh - h))
    windows = permute(x.reshape(b, c, oh, 2, ow, 2), (0, 1, 2, 4, 3, 5))
    pooled = mean(windows.reshape(b, c, oh, ow, 4), axis=-1)
    if (h, w) == (2 * oh, 2 * ow):
        return pooled
    # ceil_mode divides by the window's part inside the image, not by 4
    rows = np.minimum(2, h - 2 * np.arange(oh))[:, None]
    cols = np.minimum(2, w - 2 * np.arange(ow))[None, :]
    correction = (4.0 / (rows * cols)).astype(np.float32)
    return pooled * asarray(correction, device=x.device).astype(x.dtype)


class _Block(nn.Module):
    """AdapterBlock / LightAdapterBlock: optional 2x2 average pool, 1x1 in_conv, resnets
    (conv, ReLU, conv, plus the input), and the light block's 1x1 out_conv."""

    def __init__(self, cin: int, cout: int, count: int, *, down: bool, light: bool,
                 place: Place) -> None:
        self._down = down
        width = cout // 4 if light else cout
        self.in_conv = nn.Conv2d(cin, width, 1, **place) if light or cin != cout else None
        second = 3 if light else 1
        self.resnets = nn.ModuleList([_resnet(width, second, place) for _ in range(count)])
        self.out_conv = nn.Conv2d(width, cout, 1, **place) if light else None

    def forward(self, x: Tensor) -> Tensor:
        if self._down:
            x = avg_pool2x2(x)
        if self.in_conv is not None:
            x = self.in_conv(x)
        for res in self.resnets:
            h = maximum(res.block1(x), 0.0)
            x = res.block2(h, add=x)  # the residual added in the conv's epilogue
        return x if self.out_conv is None else self.out_conv(x)


def _resnet(width: int, second: int, place: Place) -> nn.Namespace:
    module = nn.Namespace()
    module.block1 = nn.Conv2d(width, width, 3, padding=1, **place)
    module.block2 = nn.Conv2d(width, width, second, padding=second // 2, **place)
    return module


class T2IAdapter(nn.Module):
    """diffusers' `T2IAdapter`: `adapter.unshuffle`, (full) `adapter.conv_in`,
    `adapter.body.N` blocks."""

    def __init__(self, config: Mapping[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        place: Place = {"dtype": dtype, "device": device}
        kind = config.get("adapter_type", "full_adapter")
        if kind not in _TYPES:
            raise ValueError(f"T2IAdapter config adapter_type={kind!r} is not supported; "
                             f"expected one of {', '.join(_TYPES)} (MultiAdapter: load each "
                             "adapter and sum their features)")
        light = kind == "light_adapter"
        defaults = ([320, 640, 1280], 4) if light else ([320, 640, 1280, 1280], 2)
        channels = list(config.get("channels", defaults[0]))
        count = int(config.get("num_res_blocks", defaults[1]))
        self.factor = int(config.get("downscale_factor", 16 if kind.endswith("xl") else 8))
        self.config = {"in_channels": 3, **config, "adapter_type": kind, "channels": channels,
                       "num_res_blocks": count, "downscale_factor": self.factor}
        cin = int(self.config["in_channels"]) * self.factor ** 2
        self.adapter = nn.Namespace()
        if light:
            widths = [cin, *channels, channels[-1]]
            body = [_Block(widths[i], widths[i + 1], count, down=i > 0, light=True,
                           place=place) for i in range(len(channels) + 1)]
        else:
            self.adapter.conv_in = nn.Conv2d(cin, channels[0], 3, padding=1, **place)
            if kind == "full_adapter":
                downs = [i > 0 for i in range(len(channels))]
            else:  # XL: features at 1/16, 1/16, 1/32, 1/32 of the image
                downs = [i == 2 for i in range(len(channels))]
            body = [_Block(channels[max(i - 1, 0)], channels[i], count, down=downs[i],
                           light=False, place=place) for i in range(len(channels))]
        self.adapter.body = nn.ModuleList(body)

    def forward(self, image: Tensor) -> list[Tensor]:
        """image: (B, in_channels, H, W) in [0, 1], H and W multiples of the downscale factor
        -> one feature map per block, (B, channels[i], H_i, W_i). diffusers: `adapter(image)`.
        """
        if image.ndim != 4 or image.shape[1] != self.config["in_channels"]:
            raise ValueError(f"T2IAdapter input has shape {image.shape}; expected (B, "
                             f"{self.config['in_channels']}, H, W)")
        dtype = self.adapter.body[0].resnets[0].block1.weight.dtype
        if image.dtype != dtype:
            image = image.astype(dtype)
        x = pixel_unshuffle(image, self.factor)
        conv_in = getattr(self.adapter, "conv_in", None)
        if conv_in is not None:
            x = conv_in(x)
        features = []
        for block in self.adapter.body:
            x = block(x)
            features.append(x)
        return features
