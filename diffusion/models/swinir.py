"""SwinIR on gpustd (the WebUI's "SwinIR 4x": 003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN,
and the classical, lightweight, denoising and JPEG models), detected from its state dict as
spandrel detects it.

    model = SwinIR.from_state_dict(tensors, device=device)   # {key: numpy array}
    out = model(x)        # [1, 3, H, W], H and W multiples of model.size_multiple

The network: conv_first; residual Swin transformer blocks (`layers.{i}`: `depths[i]` Swin blocks
of windowed multi-head attention with a relative position bias, every second one on windows
shifted by half a window, then a conv); a LayerNorm; conv_after_body plus the first conv's
output; then the upsampler the keys name ("pixelshuffle", "pixelshuffledirect", "nearest+conv",
or none for restoration at 1x). torch: spandrel's `SwinIR` architecture (its `forward` reflect-
pads to a window multiple and crops back, as `upscalers.models._forward` does around this).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

import gpustd
from gpucore import Device, default_device
from gpustd import Tensor
from gpustd.nn import attention, concat, conv2d, gelu, layer_norm, linear, upsample_nearest2x

from .esrgan import leaky_relu, pixel_shuffle

__all__ = ["SwinIR", "is_swinir", "merge", "partition", "position_bias", "roll", "shift_mask"]

_RGB_MEAN = (0.4488, 0.4371, 0.4040)
_DETECT = ("layers.0.residual_group.blocks.0.norm1.weight", "conv_first.weight",
           "layers.0.residual_group.blocks.0.mlp.fc1.bias",
           "layers.0.residual_group.blocks.0.attn.relative_position_index")


def is_swinir(keys: set[str]) -> bool:
    """spandrel's SwinIR test on a state dict's keys."""
    return set(_DETECT) <= keys or ("conv_first.1.weight" in keys and
                                    set(_DETECT) - {"conv_first.weight"} <= keys)


class SwinIR:
    """SwinIR at `scale` 1, 2, 3, 4 or 8; built by `from_state_dict`."""

    def __init__(self, weights: Mapping[str, Tensor], *, depths: list[int], heads: list[int],
                 window: int, shifted: bool, upsampler: str, scale: int, img_range: float,
                 three_conv: bool, bias: Mapping[str, Tensor]) -> None:
        self.weights, self.bias = dict(weights), dict(bias)
        self.depths, self.heads, self.window, self.shifted = depths, heads, window, shifted
        self.upsampler, self.scale, self.img_range = upsampler, scale, img_range
        self.three_conv = three_conv
        self.size_multiple = window
        self._masks: dict[tuple[int, int], Tensor] = {}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *, dtype: Any = np.float32,
                        device: Device | None = None) -> SwinIR:
        """Build from numpy arrays, the hyperparameters read off the shapes as spandrel reads
        them. Raises ValueError for a layout that does not fit."""
        device = device or default_device()
        if "conv_first.1.weight" in state:
            raise ValueError("SwinIR with a pixel-unshuffled input (conv_first.1) is not "
                             "supported")
        keys = set(state)
        if "conv_before_upsample.0.weight" in keys:
            upsampler = "nearest+conv" if "conv_up1.weight" in keys else "pixelshuffle"
        else:
            upsampler = "pixelshuffledirect" if "upsample.0.weight" in keys else ""
        in_nc = int(np.shape(state["conv_first.weight"])[1])
        out_nc = int(np.shape(state["conv_last.weight"])[0]) if "conv_last.weight" in keys \
            else in_nc
        scale = _scale(state, upsampler, out_nc)
        window = math.isqrt(int(np.shape(
            state["layers.0.residual_group.blocks.0.attn.relative_position_index"])[0]))
        img_size = 64  # spandrel's default; the training size when a shifted block's mask says
        mask = state.get("layers.0.residual_group.blocks.1.attn_mask")
        if mask is not None:
            img_size = int(math.sqrt(np.shape(mask)[0]) * window)
        depths = [_count(keys, f"layers.{i}.residual_group.blocks")
                  for i in range(_count(keys, "layers"))]
        heads = [int(np.shape(state[f"layers.{i}.residual_group.blocks.0.attn."
                                    "relative_position_bias_table"])[1])
                 for i in range(len(depths))]
        bias = {}
        for i, depth in enumerate(depths):
            for j in range(depth):
                prefix = f"layers.{i}.residual_group.blocks.{j}.attn."
                # (1, heads, N, N), added to every window's scores (float32: attention's mask)
                table = position_bias(state[prefix + "relative_position_bias_table"],
                                      state[prefix + "relative_position_index"])
                if table.shape[2:] != (window**2,) * 2:
                    raise ValueError(f"{prefix}relative_position_index is not {window}² square")
                bias[prefix] = Tensor.from_numpy(table, device=device)
        skip = re.compile(r".*(relative_position_index|relative_position_bias_table|attn_mask)$")
        weights = {}
        for key, value in state.items():
            if skip.match(key):
                continue
            value = np.asarray(value, dtype=np.float32)
            weights[key] = Tensor.from_numpy(value, dtype=dtype, device=device)
        mean = np.asarray(_RGB_MEAN if in_nc == 3 else (0.0,) * in_nc, np.float32)
        weights["mean"] = Tensor.from_numpy(mean.reshape(1, -1, 1, 1), dtype=dtype,
                                            device=device)
        return cls(weights, depths=depths, heads=heads, window=min(window, img_size),
                   shifted=img_size > window, upsampler=upsampler, scale=scale,
                   img_range=255.0 if window == 7 else 1.0,
                   three_conv="conv_after_body.weight" not in keys, bias=bias)

    @property
    def dtype(self) -> np.dtype:
        return self.weights["conv_first.weight"].dtype

    def __call__(self, x: Tensor) -> Tensor:
        """[N, C, H, W] -> [N, C', H*scale, W*scale]; H and W multiples of the window.
        torch: spandrel's `SwinIR.forward` on an input already of such a size."""
        height, width = x.shape[2:]
        if height % self.window or width % self.window:
            raise ValueError(f"SwinIR: {height}x{width} is not a multiple of its window "
                             f"{self.window}; reflect-pad it first")
        w = self.weights
        x = (x - w["mean"]) * self.img_range if self.img_range != 1.0 else x - w["mean"]
        first = self._conv("conv_first", x)
        # 1. the transformer body on tokens [N, H*W, C], a conv on the image, the residual
        tokens = self._embed(first)
        for i in range(len(self.depths)):
            inner = self._group(i, tokens, (height, width))
            image = self._body_conv(f"layers.{i}.conv", self._unembed(inner, (height, width)))
            tokens = self._embed(image, norm=None) + tokens
        tokens = layer_norm(tokens, w["norm.weight"], w["norm.bias"])
        body = self._body_conv("conv_after_body", self._unembed(tokens, (height, width))) + first
        # 2. the upsampler
        if self.upsampler == "pixelshuffle":
            h = leaky_relu(self._conv("conv_before_upsample.0", body), 0.01)
            for index in range(0, 2 * _shuffle_steps(self.scale), 2):
                h = pixel_shuffle(self._conv(f"upsample.{index}", h),
                                  3 if self.scale == 3 else 2)
            out = self._conv("conv_last", h)
        elif self.upsampler == "pixelshuffledirect":
            out = pixel_shuffle(self._conv("upsample.0", body), self.scale)
        elif self.upsampler == "nearest+conv":
            h = leaky_relu(self._conv("conv_before_upsample.0", body), 0.01)
            for step in range(1, int(math.log2(self.scale)) + 1):
                h = leaky_relu(self._conv(f"conv_up{step}", upsample_nearest2x(h)))
            out = self._conv("conv_last", leaky_relu(self._conv("conv_hr", h)))
        else:
            out = x + self._conv("conv_last", body)
        out = out * (1.0 / self.img_range) if self.img_range != 1.0 else out
        return out + w["mean"]

    def _group(self, i: int, tokens: Tensor, size: tuple[int, int]) -> Tensor:
        """Layer i's Swin blocks, every second one on shifted windows."""
        for j in range(self.depths[i]):
            tokens = self._swin_block(f"layers.{i}.residual_group.blocks.{j}.", tokens, size,
                                      self.heads[i], shift=self.shifted and j % 2 == 1)
        return tokens

    def _conv(self, name: str, x: Tensor) -> Tensor:
        weight = self.weights[f"{name}.weight"]
        return conv2d(x, weight, self.weights[f"{name}.bias"], padding=weight.shape[-1] // 2)

    def _body_conv(self, name: str, x: Tensor) -> Tensor:
        """"1conv": one 3x3 conv; "3conv": 3x3 to C/4, 1x1, 3x3 back, leaky ReLUs between."""
        if not self.three_conv:
            return self._conv(name, x)
        h = leaky_relu(self._conv(f"{name}.0", x))
        h = leaky_relu(self._conv(f"{name}.2", h))
        return self._conv(f"{name}.4", h)

    def _embed(self, image: Tensor, norm: str | None = "patch_embed.norm") -> Tensor:
        """[N, C, H, W] -> tokens [N, H*W, C], LayerNorm'd where the model has the norm."""
        n, c, height, width = image.shape
        tokens = gpustd.permute(image.reshape(n, c, height * width), (0, 2, 1))
        if norm is None or f"{norm}.weight" not in self.weights:
            return tokens
        return layer_norm(tokens, self.weights[f"{norm}.weight"], self.weights[f"{norm}.bias"])

    @staticmethod
    def _unembed(tokens: Tensor, size: tuple[int, int]) -> Tensor:
        n, _, c = tokens.shape
        return gpustd.permute(tokens, (0, 2, 1)).reshape(n, c, *size)

    def _swin_block(self, prefix: str, x: Tensor, size: tuple[int, int], heads: int, *,
                    shift: bool) -> Tensor:
        """x + W-MSA(norm1(x)), then + MLP(norm2(.)); shifted windows with `shift`."""
        w = self.weights
        n, _, c = x.shape
        h = layer_norm(x, w[prefix + "norm1.weight"], w[prefix + "norm1.bias"])
        x = x + self._window_attention(prefix, h.reshape(n, *size, c), heads, shift=shift)
        return self._mlp(prefix, x)

    def _window_attention(self, prefix: str, h: Tensor, heads: int, *, shift: bool) -> Tensor:
        """[N, H, W, C] -> [N, H*W, C]: multi-head attention within each window (plus the
        relative position bias, and the shift mask on cyclically shifted windows), projected."""
        w, win = self.weights, self.window
        n, height, width, c = h.shape
        if shift:
            h = roll(h, -(win // 2))
        qkv = linear(partition(h, win), w[prefix + "attn.qkv.weight"],
                     w.get(prefix + "attn.qkv.bias"))
        q, k, v = (qkv[:, :, i * c:(i + 1) * c] for i in range(3))
        mask = self.bias[prefix + "attn."]
        if shift:
            mask = mask + self._shift_mask((height, width))
        if n > 1 and mask.shape[0] > 1:  # windows are ordered (image, window)
            mask = concat([mask] * n, axis=0)
        att = attention(q, k, v, heads=heads, mask=mask)
        att = linear(att, w[prefix + "attn.proj.weight"], w[prefix + "attn.proj.bias"])
        h = merge(att, n, height, width)
        if shift:
            h = roll(h, win // 2)
        return h.reshape(n, height * width, c)

    def _mlp(self, prefix: str, x: Tensor) -> Tensor:
        """x + fc2(gelu(fc1(norm2(x)))), the sum made in x's place."""
        w = self.weights
        h = layer_norm(x, w[prefix + "norm2.weight"], w[prefix + "norm2.bias"])
        h = gelu(linear(h, w[prefix + "mlp.fc1.weight"], w[prefix + "mlp.fc1.bias"]))
        return linear(h, w[prefix + "mlp.fc2.weight"], w[prefix + "mlp.fc2.bias"], add_to=x)

    def _shift_mask(self, size: tuple[int, int]) -> Tensor:
        """`shift_mask` for this size, kept on the device while the size stays the same."""
        if size not in self._masks:
            self._masks = {size: Tensor.from_numpy(shift_mask(size, self.window),
                                                   device=self.weights["mean"].device)}
        return self._masks[size]


def shift_mask(size: tuple[int, int], window: int) -> np.ndarray:
    """(nW, 1, N, N) float32: -100 between tokens of a window that the cyclic shift by half a
    window brought from different parts of the image. torch: spandrel's
    `SwinTransformerBlock.calculate_mask` (HAT's `calculate_mask` likewise)."""
    shift = window // 2
    regions = np.zeros(size, np.float32)
    cuts = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    for i, rows in enumerate(cuts):
        for j, cols in enumerate(cuts):
            regions[rows, cols] = 3 * i + j
    split = regions.reshape(size[0] // window, window, size[1] // window, window)
    labels = split.transpose(0, 2, 1, 3).reshape(-1, window * window)
    mask = np.where(labels[:, None, :] != labels[:, :, None], -100.0, 0.0)
    return mask[:, None].astype(np.float32)


def position_bias(table: Any, index: Any) -> np.ndarray:
    """(1, heads, Nq, Nk) float32: a relative position bias table [entries, heads] looked up by
    an index [Nq, Nk]; negative entries count from the end, as torch indexes (HAT's
    overlapping windows have some). Raises ValueError when the index does not fit the table."""
    table = np.asarray(table, np.float32)
    index = np.asarray(index).astype(np.int64)
    if index.ndim != 2 or index.min(initial=0) < -table.shape[0] or \
            index.max(initial=0) >= table.shape[0]:
        raise ValueError(f"relative position index of shape {index.shape} does not fit a table "
                         f"of {table.shape[0]} entries")
    return table[index].transpose(2, 0, 1)[None]


def partition(x: Tensor, window: int) -> Tensor:
    """[N, H, W, C] -> windows [N * H/window * W/window, window², C], row-major."""
    n, height, width, c = x.shape
    split = x.reshape(n, height // window, window, width // window, window, c)
    return gpustd.permute(split, (0, 1, 3, 2, 4, 5)).reshape(-1, window * window, c)


def merge(windows: Tensor, n: int, height: int, width: int) -> Tensor:
    """`partition`'s inverse: [N * nW, window², C] -> [N, H, W, C]."""
    window, c = math.isqrt(windows.shape[1]), windows.shape[2]
    split = windows.reshape(n, height // window, width // window, window, window, c)
    return gpustd.permute(split, (0, 1, 3, 2, 4, 5)).reshape(n, height, width, c)


def roll(x: Tensor, shift: int) -> Tensor:
    """torch.roll(x, (shift, shift), dims=(1, 2)) for [N, H, W, C]."""
    for axis in (1, 2):
        cut = shift % x.shape[axis]
        if cut:
            index = [slice(None)] * 4
            head, tail = list(index), list(index)
            head[axis], tail[axis] = slice(x.shape[axis] - cut, None), slice(0, x.shape[axis] - cut)
            x = concat([x[tuple(head)], x[tuple(tail)]], axis=axis)
    return x


def _count(keys: set[str], prefix: str) -> int:
    """How many `prefix.{i}.` entries there are (0..n-1)."""
    found = {int(m[1]) for key in keys if (m := re.match(re.escape(prefix) + r"\.(\d+)\.", key))}
    return max(found) + 1 if found else 0


def _shuffle_steps(scale: int) -> int:
    return 1 if scale == 3 else int(math.log2(scale))


def _scale(state: Mapping[str, Any], upsampler: str, out_nc: int) -> int:
    if upsampler == "nearest+conv":
        return 2 ** sum(1 for key in state if re.fullmatch(r"conv_up\d\.weight", key))
    if upsampler == "pixelshuffle":
        steps = sum(1 for key in state if re.fullmatch(r"upsample\.\d+\.weight", key))
        features = int(np.shape(state["upsample.0.weight"])[1])
        if steps == 1 and int(np.shape(state["upsample.0.weight"])[0]) == 9 * features:
            return 3
        return 2 ** steps
    if upsampler == "pixelshuffledirect":
        return math.isqrt(int(np.shape(state["upsample.0.bias"])[0]) // out_nc)
    return 1
