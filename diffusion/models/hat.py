"""HAT (Hybrid Attention Transformer: Real_HAT_GAN_SRx4, HAT-L_SRx4...) on gpustd, detected from
its state dict as spandrel detects it.

    model = HAT.from_state_dict(tensors, device=device)   # {key: numpy array}
    out = model(x)        # [1, 3, H, W], H and W multiples of model.size_multiple

SwinIR's frame (conv_first, residual groups of windowed-attention blocks with a conv after each
group, LayerNorm, conv_after_body, a pixel-shuffle upsampler) with two additions: each block
(HAB) adds a channel-attention conv branch (CAB: conv, GELU, conv, squeeze-and-excite) scaled by
0.01 beside its window attention, and each group ends with an overlapping cross-attention
block (OCAB): every window's queries attend to keys and values of a larger window around it
(torch's `nn.Unfold`, zero-padded at the image border). torch: spandrel's `HAT` architecture.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

import gpustd
from gpucore import Device, default_device
from gpustd import Tensor
from gpustd.nn import attention, concat, gelu, layer_norm, linear, pad

from .swinir import SwinIR, _count, _scale, merge, partition, position_bias

__all__ = ["HAT", "is_hat"]

_CONV_SCALE = 0.01  # HAB's weight of the conv branch (not in the state dict; spandrel's default)
_DETECT = ("relative_position_index_SA", "relative_position_index_OCA", "conv_first.weight",
           "layers.0.residual_group.blocks.0.conv_block.cab.0.weight",
           "layers.0.residual_group.blocks.0.conv_block.cab.3.attention.1.weight",
           "layers.0.residual_group.overlap_attn.relative_position_bias_table",
           "layers.0.residual_group.overlap_attn.qkv.weight", "conv_last.weight")


def is_hat(keys: set[str]) -> bool:
    """spandrel's HAT test on a state dict's keys (the ones the network needs)."""
    return set(_DETECT) <= keys


class HAT(SwinIR):
    """HAT at `scale` 2, 3, 4 or 8 ("pixelshuffle", its only upsampler); built by
    `from_state_dict`."""

    overlap: int  # the side of OCAB's key/value windows

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *, dtype: Any = np.float32,
                        device: Device | None = None) -> HAT:
        """Build from numpy arrays, the hyperparameters read off the shapes as spandrel reads
        them. Raises ValueError for a layout that does not fit."""
        device = device or default_device()
        keys = set(state)
        window = math.isqrt(int(np.shape(state["relative_position_index_SA"])[0]))
        overlap = math.isqrt(int(np.shape(state["relative_position_index_OCA"])[1]))
        if (overlap - window) % 2 or overlap < window:
            raise ValueError(f"HAT: overlapping window {overlap} does not fit window {window}")
        img_size = 64  # spandrel's assumption, unless an absolute position embedding says
        if "absolute_pos_embed" in state:
            img_size = math.isqrt(int(np.shape(state["absolute_pos_embed"])[1]))
        depths = [_count(keys, f"layers.{i}.residual_group.blocks")
                  for i in range(_count(keys, "layers"))]
        heads = [int(np.shape(state[f"layers.{i}.residual_group.overlap_attn."
                                    "relative_position_bias_table"])[1])
                 for i in range(len(depths))]
        bias = {}
        for i, depth in enumerate(depths):
            group = f"layers.{i}.residual_group."
            for j in range(depth):
                bias[f"{group}blocks.{j}.attn."] = Tensor.from_numpy(position_bias(
                    state[f"{group}blocks.{j}.attn.relative_position_bias_table"],
                    state["relative_position_index_SA"]), device=device)
            bias[f"{group}overlap_attn."] = Tensor.from_numpy(position_bias(
                state[f"{group}overlap_attn.relative_position_bias_table"],
                state["relative_position_index_OCA"]), device=device)
        weights = {key: Tensor.from_numpy(np.asarray(value, np.float32), dtype=dtype,
                                          device=device)
                   for key, value in state.items()
                   if not key.startswith("relative_position_index")
                   and not key.endswith("relative_position_bias_table")}
        in_nc = int(np.shape(state["conv_first.weight"])[1])
        mean = np.asarray((0.4488, 0.4371, 0.4040) if in_nc == 3 else (0.0,) * in_nc,
                          np.float32)
        weights["mean"] = Tensor.from_numpy(mean.reshape(1, -1, 1, 1), dtype=dtype,
                                            device=device)
        model = cls(weights, depths=depths, heads=heads, window=min(window, img_size),
                    shifted=img_size > window, upsampler="pixelshuffle",
                    scale=_scale(state, "pixelshuffle", in_nc), img_range=1.0,
                    three_conv=False, bias=bias)
        model.overlap = overlap
        return model

    def _group(self, i: int, tokens: Tensor, size: tuple[int, int]) -> Tensor:
        """Layer i's hybrid attention blocks, then its overlapping cross-attention block."""
        group = f"layers.{i}.residual_group."
        for j in range(self.depths[i]):
            tokens = self._hab(f"{group}blocks.{j}.", tokens, size, self.heads[i],
                               shift=self.shifted and j % 2 == 1)
        return self._ocab(f"{group}overlap_attn.", tokens, size, self.heads[i])

    def _body_conv(self, name: str, x: Tensor) -> Tensor:
        """"1conv", or "identity" where the file has no such conv."""
        return self._conv(name, x) if f"{name}.weight" in self.weights else x

    def _embed(self, image: Tensor, norm: str | None = "patch_embed.norm") -> Tensor:
        tokens = super()._embed(image, norm)
        if norm is not None and "absolute_pos_embed" in self.weights:
            tokens = tokens + self.weights["absolute_pos_embed"]
        return tokens

    def _hab(self, prefix: str, x: Tensor, size: tuple[int, int], heads: int, *,
             shift: bool) -> Tensor:
        """x + W-MSA(norm1(x)) + 0.01 CAB(norm1(x)), then + MLP(norm2(.))."""
        w = self.weights
        n, _, c = x.shape
        h = layer_norm(x, w[prefix + "norm1.weight"], w[prefix + "norm1.bias"])
        h = h.reshape(n, *size, c)
        # 1. the conv branch on the image: conv, GELU, conv, channel attention
        cab = prefix + "conv_block.cab."
        image = gpustd.permute(h, (0, 3, 1, 2))
        branch = self._conv(cab + "2", gelu(self._conv(cab + "0", image)))
        squeeze = gpustd.mean(branch, axis=(2, 3), keepdims=True)
        squeeze = gpustd.maximum(self._conv(cab + "3.attention.1", squeeze), 0.0)
        branch = branch * gpustd.sigmoid(self._conv(cab + "3.attention.3", squeeze))
        branch = gpustd.permute(branch, (0, 2, 3, 1)).reshape(n, size[0] * size[1], c)
        # 2. window attention beside it
        x = x + self._window_attention(prefix, h, heads, shift=shift) + branch * _CONV_SCALE
        return self._mlp(prefix, x)

    def _ocab(self, prefix: str, x: Tensor, size: tuple[int, int], heads: int) -> Tensor:
        """Each window's queries against the keys and values of the `overlap`-sized window
        centred on it, then the projection and an MLP, both residual."""
        w, win, big = self.weights, self.window, self.overlap
        n, _, c = x.shape
        height, width = size
        h = layer_norm(x, w[prefix + "norm1.weight"], w[prefix + "norm1.bias"])
        qkv = linear(h, w[prefix + "qkv.weight"], w.get(prefix + "qkv.bias"))
        q = partition(qkv[:, :, :c].reshape(n, height, width, c), win)
        # 1. the big windows of keys and values: zero-padded, cut at stride `win`
        kv = gpustd.permute(qkv[:, :, c:].reshape(n, height, width, 2 * c), (0, 3, 1, 2))
        edge = (big - win) // 2
        kv = pad(kv, (edge, edge, edge, edge))
        rows, cols = height // win, width // win
        kv = concat([kv[:, :, r * win:r * win + big] for r in range(rows)], axis=2)
        kv = concat([kv[:, :, :, s * win:s * win + big] for s in range(cols)], axis=3)
        kv = gpustd.permute(kv.reshape(n, 2 * c, rows, big, cols, big), (0, 2, 4, 3, 5, 1))
        kv = kv.reshape(n * rows * cols, big * big, 2 * c)
        att = attention(q, kv[:, :, :c], kv[:, :, c:], heads=heads, mask=self.bias[prefix])
        att = merge(att, n, height, width).reshape(n, height * width, c)
        x = linear(att, w[prefix + "proj.weight"], w[prefix + "proj.bias"]) + x
        return self._mlp(prefix, x)
