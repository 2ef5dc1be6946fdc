"""CodeFormer on gpustd: a VQGAN encoder, a transformer that predicts the codebook entry of each
16x16 latent, the codebook's features (AdaIN-matched to the encoder's), and the VQGAN generator
with the encoder's features fused back in by `w` (CodeFormer's fidelity weight: 0 trusts the
codebook, 1 the input).

    model = CodeFormer.from_state_dict(tensors, device=device)   # {key: numpy array}
    out = model(x, w=0.5)          # x: [1, 3, 512, 512] in -1..1 -> [1, 3, 512, 512] in -1..1

Keys as in `codeformer.pth` (`params_ema`): `encoder.blocks.{i}`, `generator.blocks.{i}`
(convs, ResBlocks with `norm1/conv1/norm2/conv2[/conv_out]`, AttnBlocks with `norm/q/k/v/
proj_out`, Downsample/Upsample `conv`, GroupNorms), `quantize.embedding.weight`,
`position_emb`, `feat_emb`, `ft_layers.{i}` (self-attention layers, 8 heads), `idx_pred_layer`,
`fuse_convs_dict.{size}`. The block list is read from the keys, so the fusion points follow
the layout: the encoder's last feature at each size, fused after the generator's first ResBlock
there. torch: spandrel_extra_arches' `CodeFormer`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

import gpustd
from gpucore import Device, default_device
from gpustd import Tensor
from gpustd.nn import attention, concat, conv2d, gelu, group_norm, layer_norm, linear, pad

from .esrgan import leaky_relu

__all__ = ["CodeFormer", "block_layout"]

HEADS = 8  # CodeFormer's transformer; the weights do not say


def block_layout(state: Mapping[str, Any], prefix: str) -> list[str]:
    """The kinds of `prefix.blocks.{i}` in order, from the state dict's keys and shapes:
    "conv", "res", "attn", "norm", "down" (encoder) / "up" (generator)."""
    parts: dict[int, set[str]] = {}
    for key in state:
        if key.startswith(f"{prefix}.blocks."):
            index, rest = key[len(prefix) + 8:].split(".", 1)
            parts.setdefault(int(index), set()).add(rest)
    kinds = []
    for i in range(len(parts)):
        rests = parts.get(i, set())
        if "norm1.weight" in rests:
            kinds.append("res")
        elif "q.weight" in rests:
            kinds.append("attn")
        elif "conv.weight" in rests:
            kinds.append("down" if prefix == "encoder" else "up")
        elif "weight" in rests:
            kinds.append("conv" if len(np.shape(state[f"{prefix}.blocks.{i}.weight"])) == 4
                         else "norm")
        else:
            raise ValueError(f"CodeFormer: {prefix}.blocks.{i} is no block this program knows "
                             f"(keys {sorted(rests)[:3]})")
    return kinds


def _fusion_points(encoder: list[str],
                   generator: list[str]) -> tuple[dict[int, int], dict[int, int]]:
    """{level: block index} of the encoder's feature at each level (the block before its
    Downsample) and of the generator's block after which that level is fused (its first
    ResBlock after an Upsample); level 0 is the full size."""
    downs = [i for i, kind in enumerate(encoder) if kind == "down"]
    taken = {level: i - 1 for level, i in enumerate(downs)}
    ups = [i for i, kind in enumerate(generator) if kind == "up"]
    fused = {len(ups) - 1 - n: i + 1 for n, i in enumerate(ups)}
    return taken, fused


class CodeFormer:
    """CodeFormer with weights on `device` (the module docstring says which keys)."""

    def __init__(self, weights: Mapping[str, Tensor], *, encoder: list[str],
                 generator: list[str], fused_sizes: list[int], size: int) -> None:
        self.weights = dict(weights)
        self.encoder, self.generator = encoder, generator
        self.size, self.fused_sizes = size, fused_sizes
        self.taken, self.fused = _fusion_points(encoder, generator)
        self.levels = {level: size >> level for level in range(len(self.taken) + 1)}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Any], *, dtype: Any = np.float32,
                        device: Device | None = None) -> CodeFormer:
        """Build from a state dict of numpy arrays. Raises ValueError naming what does not
        fit (a missing key, a fusion at the 16x16 bottom)."""
        device = device or default_device()
        needed = ("position_emb", "quantize.embedding.weight", "idx_pred_layer.1.weight",
                  "ft_layers.0.self_attn.in_proj_weight", "encoder.blocks.0.weight")
        missing = [key for key in needed if key not in state]
        if missing:
            raise ValueError(f"not a CodeFormer state dict (no {missing[0]!r})")
        encoder = block_layout(state, "encoder")
        generator = block_layout(state, "generator")
        side = math.isqrt(int(np.shape(state["position_emb"])[0]))
        size = side << encoder.count("down")
        sizes = sorted({int(key.split(".")[1]) for key in state
                        if key.startswith("fuse_convs_dict.")}, reverse=True)
        if side in sizes:
            raise ValueError(f"CodeFormer fusing at the {side}x{side} bottom is not supported")
        weights = {}
        for key, value in state.items():
            value = np.asarray(value, dtype=np.float32)
            if key.endswith("in_proj_weight") or key.endswith("in_proj_bias"):
                for name, part in zip("qkv", np.split(value, 3)):
                    weights[key.replace("in_proj", f"{name}_proj")] = Tensor.from_numpy(
                        part, dtype=dtype, device=device)
            else:
                weights[key] = Tensor.from_numpy(value, dtype=dtype, device=device)
        return cls(weights, encoder=encoder, generator=generator, fused_sizes=sizes, size=size)

    @property
    def dtype(self) -> np.dtype:
        return self.weights["position_emb"].dtype

    def _w(self, name: str) -> Tensor:
        return self.weights[name]

    def _conv(self, name: str, x: Tensor, padding: int = 1, **options: Any) -> Tensor:
        return conv2d(x, self._w(f"{name}.weight"), self._w(f"{name}.bias"), padding=padding,
                      **options)

    def _norm(self, name: str, x: Tensor, *, silu: bool = False) -> Tensor:
        out = group_norm(x, 32, self._w(f"{name}.weight"), self._w(f"{name}.bias"), eps=1e-6)
        return out * gpustd.sigmoid(out) if silu else out

    def _res(self, name: str, x: Tensor) -> Tensor:
        h = self._conv(f"{name}.conv1", self._norm(f"{name}.norm1", x, silu=True))
        h = self._norm(f"{name}.norm2", h, silu=True)
        skip = self._conv(f"{name}.conv_out", x, padding=0) \
            if f"{name}.conv_out.weight" in self.weights else x
        return self._conv(f"{name}.conv2", h, add=skip)

    def _attn(self, name: str, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        normed = self._norm(f"{name}.norm", x)
        q, k, v = (gpustd.permute(self._conv(f"{name}.{p}", normed, padding=0)
                                  .reshape(n, c, h * w), (0, 2, 1)) for p in "qkv")
        out = gpustd.permute(attention(q, k, v, heads=1), (0, 2, 1)).reshape(n, c, h, w)
        return self._conv(f"{name}.proj_out", out, padding=0, add=x)

    def _block(self, prefix: str, kind: str, i: int, x: Tensor) -> Tensor:
        name = f"{prefix}.blocks.{i}"
        if kind == "res":
            return self._res(name, x)
        if kind == "attn":
            return self._attn(name, x)
        if kind == "norm":
            return self._norm(name, x)
        if kind == "down":  # torch pads right and bottom by one, then a stride-2 valid conv
            return self._conv(f"{name}.conv", pad(x, (0, 1, 0, 1)), padding=0, stride=2)
        if kind == "up":
            return self._conv(f"{name}.conv", x, upsample=2)
        return self._conv(name, x)

    def _transformer(self, tokens: Tensor) -> Tensor:
        """[L, d] latent tokens -> [L, codebook] logits (the ft_layers, pre-norm)."""
        pos = self._w("position_emb")
        layers = len({key.split(".")[1] for key in self.weights if key.startswith("ft_layers.")})
        x = linear(tokens, self._w("feat_emb.weight"), self._w("feat_emb.bias"))
        for i in range(layers):
            name = f"ft_layers.{i}"
            h = layer_norm(x, self._w(f"{name}.norm1.weight"), self._w(f"{name}.norm1.bias"))
            query = h + pos
            q, k, v = (linear(inp, self._w(f"{name}.self_attn.{p}_proj_weight"),
                              self._w(f"{name}.self_attn.{p}_proj_bias"))
                       for p, inp in (("q", query), ("k", query), ("v", h)))
            out = attention(q[None], k[None], v[None], heads=HEADS)[0]
            x = linear(out, self._w(f"{name}.self_attn.out_proj.weight"),
                       self._w(f"{name}.self_attn.out_proj.bias"), add_to=x)
            h = layer_norm(x, self._w(f"{name}.norm2.weight"), self._w(f"{name}.norm2.bias"))
            h = gelu(linear(h, self._w(f"{name}.linear1.weight"), self._w(f"{name}.linear1.bias")))
            x = linear(h, self._w(f"{name}.linear2.weight"), self._w(f"{name}.linear2.bias"),
                       add_to=x)
        x = layer_norm(x, self._w("idx_pred_layer.0.weight"), self._w("idx_pred_layer.0.bias"))
        return linear(x, self._w("idx_pred_layer.1.weight"))

    def __call__(self, x: Tensor, w: float = 0.5) -> Tensor:
        """[1, 3, S, S] (S the model's size, 512; an image in -1..1) -> [1, 3, S, S].
        w: the fidelity weight (0..1): how much of the input's features the generator takes
        back. torch: `CodeFormer.forward(x, weight=w)[0]`."""
        if x.shape != (1, 3, self.size, self.size):
            raise ValueError(f"CodeFormer takes one [1, 3, {self.size}, {self.size}] face, got "
                             f"{x.shape}")
        # 1. the encoder, keeping its last feature at each size the generator fuses
        kept = {}
        wanted = {self.taken[level]: level for level, size in self.levels.items()
                  if size in self.fused_sizes}
        for i, kind in enumerate(self.encoder):
            x = self._block("encoder", kind, i, x)
            if i in wanted:
                kept[wanted[i]] = x
        # 2. each latent's codebook entry, predicted by the transformer
        _, channels, side, _ = x.shape
        tokens = gpustd.permute(x.reshape(channels, side * side), (1, 0))
        index = gpustd.argmax(self._transformer(tokens), axis=-1)
        codes = gpustd.take(self._w("quantize.embedding.weight"), index, axis=0)
        quant = gpustd.permute(codes, (1, 0)).reshape(1, channels, side, side)
        # 3. AdaIN: the codes' features given the encoder's mean and (unbiased) deviation
        quant = _adain(quant, x)
        # 4. the generator, the encoder's features fused in by w after each level's first block
        fuse_at = {self.fused[level]: level for level in kept}
        for i, kind in enumerate(self.generator):
            quant = self._block("generator", kind, i, quant)
            if i in fuse_at and w > 0:
                quant = self._fuse(fuse_at[i], kept[fuse_at[i]], quant, w)
        return quant

    def _fuse(self, level: int, encoded: Tensor, x: Tensor, w: float) -> Tensor:
        name = f"fuse_convs_dict.{self.levels[level]}"
        enc = self._res(f"{name}.encode_enc", concat([encoded, x]))
        scale = self._conv(f"{name}.scale.2", leaky_relu(self._conv(f"{name}.scale.0", enc)))
        shift = self._conv(f"{name}.shift.2", leaky_relu(self._conv(f"{name}.shift.0", enc)))
        return x + (x * scale + shift) * w


def _adain(content: Tensor, style: Tensor, eps: float = 1e-5) -> Tensor:
    """content normalized per channel, then given style's per-channel mean and deviation
    (variances unbiased, plus eps). torch: CodeFormer's `adaptive_instance_normalization`."""
    def stats(x: Tensor) -> tuple[Tensor, Tensor]:
        n, c, h, w = x.shape
        flat = x.reshape(n, c, h * w)
        mean = gpustd.mean(flat, axis=-1).reshape(n, c, 1, 1)
        var = gpustd.var(flat, axis=-1, ddof=1).reshape(n, c, 1, 1)
        return mean, gpustd.sqrt(var + eps)

    content_mean, content_std = stats(content)
    style_mean, style_std = stats(style)
    return (content - content_mean) / content_std * style_std + style_mean
