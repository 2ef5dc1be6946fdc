"""IP-Adapter (h94/IP-Adapter): a picture's CLIP embedding projected to a few extra context
tokens, and a second key/value projection of them in every cross-attention layer of the UNet
(the decoupled cross-attention: out = attn(q, text) + scale * attn(q, image tokens)).

Parameter names are h94's files' (`image_proj.*`, `ip_adapter.N.to_k_ip.weight`):
- `ImageProjection` (ip-adapter_sd15, ip-adapter_sdxl(_vit-h)): `proj` (the image embedding
  to 4 tokens) and `norm`; diffusers' `ImageProjection`.
- `Resampler` (the "plus" adapters): learned `latents` attending to the encoder's penultimate
  hidden states through 4 perceiver blocks; diffusers' `IPAdapterPlusImageProjection`.
- `ip_adapter.N` for N = 1, 3, 5, ...: the k-th cross-attention layer's `to_k_ip` / `to_v_ip`,
  in diffusers' `unet.attn_processors` order (down blocks, up blocks, mid block; each
  transformer block's attn2), the even N being the self-attention layers, which have none.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, concatenate, nn, take_slice

from .layers import Attention, Place

__all__ = ["IPAdapter", "IPLayer", "ImageProjection", "Resampler", "cross_attentions"]

_DIM_HEAD = 64  # the resampler's head width (h94's and diffusers' fixed value)


class ImageProjection(nn.Module):
    """Image embedding (B, E) -> (B, tokens, D): proj, reshape, LayerNorm."""

    def __init__(self, embed_dim: int, dim: int, tokens: int, place: Place) -> None:
        self.tokens, self.dim = tokens, dim
        self.proj = nn.Linear(embed_dim, dim * tokens, **place)
        self.norm = nn.LayerNorm(dim, **place)

    def forward(self, embeds: Tensor) -> Tensor:
        return self.norm(self.proj(embeds).reshape(embeds.shape[0], self.tokens, self.dim))


class _PerceiverAttention(nn.Module):
    def __init__(self, dim: int, heads: int, place: Place) -> None:
        inner = heads * _DIM_HEAD
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim, **place)
        self.norm2 = nn.LayerNorm(dim, **place)
        self.to_q = nn.Linear(dim, inner, bias=False, **place)
        self.to_kv = nn.Linear(dim, 2 * inner, bias=False, **place)
        self.to_out = nn.Linear(inner, dim, bias=False, **place)

    def forward(self, x: Tensor, latents: Tensor) -> Tensor:
        x, latents = self.norm1(x), self.norm2(latents)
        kv = self.to_kv(concatenate([x, latents], axis=1))
        inner = self.heads * _DIM_HEAD
        k, v = take_slice(kv, 0, inner, axis=2), take_slice(kv, inner, 2 * inner, axis=2)
        return self.to_out(nn.attention(self.to_q(latents), k, v, heads=self.heads))


class _FeedForward(nn.ModuleList):
    """h94's Sequential(LayerNorm, Linear, GELU, Linear): keys 0, 1, 3."""

    def __init__(self, dim: int, place: Place, mult: int = 4) -> None:
        super().__init__([nn.LayerNorm(dim, **place),
                          nn.Linear(dim, dim * mult, bias=False, **place),
                          nn.Module(), nn.Linear(dim * mult, dim, bias=False, **place)])

    def forward(self, x: Tensor) -> Tensor:
        norm, up, _, down = self
        return down(nn.gelu(up(norm(x))))


class Resampler(nn.Module):
    """Encoder hidden states (B, L, E) -> (B, queries, D) (IP-Adapter Plus)."""

    def __init__(self, embed_dim: int, hidden: int, dim: int, queries: int, heads: int,
                 depth: int, place: Place) -> None:
        self.latents = nn.parameter((1, queries, hidden), place["dtype"], place["device"])
        self.proj_in = nn.Linear(embed_dim, hidden, **place)
        self.proj_out = nn.Linear(hidden, dim, **place)
        self.norm_out = nn.LayerNorm(dim, **place)
        self.layers = nn.ModuleList([
            nn.ModuleList([_PerceiverAttention(hidden, heads, place), _FeedForward(hidden, place)])
            for _ in range(depth)])

    @property
    def tokens(self) -> int:
        return int(self.latents.shape[1])

    def forward(self, hidden_states: Tensor) -> Tensor:
        x = self.proj_in(hidden_states)
        latents = concatenate([self.latents] * hidden_states.shape[0])
        for attn, ff in self.layers:
            latents = attn(x, latents) + latents
            latents = ff(latents) + latents
        return self.norm_out(self.proj_out(latents))


class IPLayer(nn.Module):
    """One cross-attention layer's image key/value projections (context_dim -> inner)."""

    def __init__(self, context_dim: int, inner: int, place: Place) -> None:
        self.to_k_ip = nn.Linear(context_dim, inner, bias=False, **place)
        self.to_v_ip = nn.Linear(context_dim, inner, bias=False, **place)


class IPAdapter(nn.Module):
    """An IP-Adapter's weights: `image_proj` and `ip_adapter` (one IPLayer per UNet
    cross-attention layer at the odd indices). Build with `IPAdapter.from_shapes(shapes)`
    (the file's key -> shape; diffusion.loaders.control.ip_adapter_file loads one).

    `plus` adapters read the image encoder's penultimate hidden states, the others its image
    embeddings; `tokens` is how many context tokens one picture becomes."""

    # the extension's "name [hash]" of the file it came from, set by whoever loads it
    title: str | None = None

    def __init__(self, image_proj: ImageProjection | Resampler, layers: list[IPLayer | None], *,
                 name: str = "ip-adapter") -> None:
        self.image_proj = image_proj
        self.ip_adapter = nn.ModuleList([layer or nn.Module() for layer in layers])
        self.name = name
        self._layers = [layer for layer in layers if layer is not None]
        # the CLIP image encoder it reads pictures with (set by the loader; not a parameter)
        self._image_encoder: Any = None

    @classmethod
    def from_shapes(cls, shapes: Mapping[str, tuple[int, ...]], *, dtype: Any = np.float32,
                    device: Device | None = None, name: str = "ip-adapter") -> IPAdapter:
        """The adapter a file with these keys and shapes holds (its weights not yet loaded):
        ValueError naming what is missing for anything else (its caller names the file)."""
        place: Place = {"dtype": dtype, "device": device}
        if "image_proj.proj.weight" in shapes:
            out, embed_dim = shapes["image_proj.proj.weight"]
            dim = shapes["image_proj.norm.weight"][0]
            proj: ImageProjection | Resampler = ImageProjection(embed_dim, dim, out // dim, place)
        elif "image_proj.latents" in shapes:
            _, queries, hidden = shapes["image_proj.latents"]
            depth = 1 + max((int(k.split(".")[2]) for k in shapes
                             if k.startswith("image_proj.layers.")), default=-1)
            proj = Resampler(shapes["image_proj.proj_in.weight"][1], hidden,
                             shapes["image_proj.proj_out.weight"][0], queries,
                             shapes["image_proj.layers.0.0.to_q.weight"][0] // _DIM_HEAD, depth,
                             place)
        else:
            raise ValueError("it has no image_proj.proj.weight (ip-adapter_sd15, _sdxl) nor "
                             "image_proj.latents (the plus adapters); face-ID and full-face "
                             "adapters are not supported")
        ids = sorted(int(k.split(".")[1]) for k in shapes
                     if k.startswith("ip_adapter.") and k.endswith(".to_k_ip.weight"))
        if not ids:
            raise ValueError("it has no ip_adapter.N.to_k_ip.weight keys")
        layers: list[IPLayer | None] = [None] * (ids[-1] + 1)
        for i in ids:
            inner, context_dim = shapes[f"ip_adapter.{i}.to_k_ip.weight"]
            layers[i] = IPLayer(context_dim, inner, place)
        return cls(proj, layers, name=name)

    @property
    def image_encoder(self) -> Any:
        """The CLIPVisionModelWithProjection given to the loader, or None."""
        return self._image_encoder

    @image_encoder.setter
    def image_encoder(self, encoder: Any) -> None:
        self._image_encoder = encoder

    @property
    def plus(self) -> bool:
        return isinstance(self.image_proj, Resampler)

    @property
    def tokens(self) -> int:
        return self.image_proj.tokens

    @property
    def embed_dim(self) -> int:
        """The width of what it reads: the image embedding (plain) or the encoder's hidden
        states (plus)."""
        proj = self.image_proj
        weight = proj.proj_in.weight if isinstance(proj, Resampler) else proj.proj.weight
        return int(weight.shape[1])

    @property
    def encoder_name(self) -> str | None:
        """The CLIP image encoder it was trained with, by that width: "ViT-H/14" (1024-wide
        embeddings, 1280-wide states), "ViT-bigG/14" (1280, 1664), else None."""
        widths = {(False, 1024): "ViT-H/14", (False, 1280): "ViT-bigG/14",
                  (True, 1280): "ViT-H/14", (True, 1664): "ViT-bigG/14"}
        return widths.get((self.plus, self.embed_dim))

    @property
    def dtype(self) -> np.dtype:
        return self._layers[0].to_k_ip.weight.dtype

    @property
    def context_dim(self) -> int:
        return int(self._layers[0].to_k_ip.weight.shape[1])

    @property
    def layers(self) -> list[IPLayer]:
        """The cross-attention layers' projections, in the UNet's order."""
        return list(self._layers)


def cross_attentions(unet: Any) -> Iterator[Attention]:
    """The UNet's cross-attention layers (each transformer block's attn2) in diffusers'
    `attn_processors` order: down blocks, up blocks, then the mid block."""
    blocks = [*unet.down_blocks, *unet.up_blocks]
    for block in blocks:
        for attention in getattr(block, "attentions", None) or ():
            for transformer in attention.transformer_blocks:
                yield transformer.attn2
    for attention in unet.mid_block.attentions:
        for transformer in attention.transformer_blocks:
            yield transformer.attn2


class _ScaledLayer(nn.Module):
    """An adapter's IPLayer as one UNet layer uses it: to_v_ip times the unit's scale (the
    attention's output is linear in v), both in the UNet's dtype."""

    def __init__(self, layer: IPLayer, scale: float, dtype: np.dtype) -> None:
        def linear(weight: Tensor, factor: float) -> nn.Linear:
            module = nn.Linear.__new__(nn.Linear)
            module.weight = weight if weight.dtype == dtype else weight.astype(dtype)
            if factor != 1.0:
                module.weight = module.weight * factor
            module.bias = None
            return module

        self.to_k_ip = linear(layer.to_k_ip.weight, 1.0)
        self.to_v_ip = linear(layer.to_v_ip.weight, float(scale))


def install(unet: Any, adapters: list[tuple[IPAdapter, float]]) -> None:
    """Make `adapters` (each with its scale) the IP-Adapters of `unet`'s cross-attention
    layers, in this order (the order of `ip_hidden_states`); [] removes them. Installing the
    same adapters at the same scales again changes nothing (so a kept capture of the UNet
    stays valid). ValueError when an adapter was made for another UNet."""
    wanted = [(id(adapter), float(scale)) for adapter, scale in adapters]
    if getattr(unet, "_ip_installed", []) == wanted:
        return
    layers = list(cross_attentions(unet))
    width = int(unet.config["cross_attention_dim"])
    for adapter, _ in adapters:
        inner = [int(attn.to_k.weight.shape[0]) for attn in layers]
        theirs = [int(layer.to_k_ip.weight.shape[0]) for layer in adapter.layers]
        if adapter.context_dim != width or theirs != inner:
            raise ValueError(
                f"IP-Adapter {adapter.name} was made for another UNet ({len(theirs)} "
                f"cross-attention layers of context width {adapter.context_dim}); this model's "
                f"UNet has {len(inner)} of width {width}: use an IP-Adapter for this model "
                "family (ip-adapter_sd15 for SD 1.5, ip-adapter_sdxl* for SDXL)")
    for i, attn in enumerate(layers):
        dtype = attn.to_k.weight.dtype
        if adapters:
            attn.ip_layers = [_ScaledLayer(adapter.layers[i], scale, dtype)
                              for adapter, scale in adapters]
        elif hasattr(attn, "ip_layers"):
            del attn.ip_layers
    unet._ip_installed = wanted
