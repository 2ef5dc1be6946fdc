"""The Wan transformer's embedders (diffusers' WanTimeTextImageEmbedding and the patch
embedding): the timestep, the UMT5 prompt, Wan 2.1 I2V's CLIP image states and the latent
patches, each into the blocks' width (models.wan)."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, nn

from .dit_layers import TimestepEmbedding
from .layers import Place

__all__ = ["ImageEmbedding", "PatchEmbedding", "TextProjection", "WanTimeTextEmbedding"]


class TextProjection(nn.Module):
    """linear_1, tanh GELU, linear_2. diffusers: `PixArtAlphaTextProjection(act_fn=
    "gelu_tanh")`."""

    def __init__(self, in_dim: int, dim: int, place: Place) -> None:
        self.linear_1 = nn.Linear(in_dim, dim, **place)
        self.linear_2 = nn.Linear(dim, dim, **place)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_2(nn.gelu(self.linear_1(x), approximate="tanh"))


class ImageEmbedding(nn.Module):
    """CLIP image states (B, Li, image_dim) -> (B, Li, dim): norm1, ff (Linear, exact GELU,
    Linear), norm2. diffusers: `WanImageEmbedding` (without FLF2V's pos_embed)."""

    def __init__(self, in_dim: int, dim: int, place: Place) -> None:
        self.norm1 = nn.LayerNorm(in_dim, **place)
        self.ff = _GeluFeedForward(in_dim, dim, place)
        self.norm2 = nn.LayerNorm(dim, **place)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm2(self.ff(self.norm1(x)))


class _ExactGELU(nn.Module):
    """proj, exact GELU. diffusers: `GELU(approximate="none")`."""

    def __init__(self, dim: int, place: Place) -> None:
        self.proj = nn.Linear(dim, dim, **place)

    def forward(self, x: Tensor) -> Tensor:
        return nn.gelu(self.proj(x))


class _GeluFeedForward(nn.Module):
    """net.0.proj, exact GELU, net.2. diffusers: `FeedForward(in, out, mult=1,
    activation_fn="gelu")`."""

    def __init__(self, in_dim: int, dim: int, place: Place) -> None:
        self.net = nn.ModuleList([_ExactGELU(in_dim, place), nn.Identity(),
                                  nn.Linear(in_dim, dim, **place)])

    def forward(self, x: Tensor) -> Tensor:
        return self.net[2](self.net[0](x))


class WanTimeTextEmbedding(nn.Module):
    """timestep -> (temb (B, dim), its projection (B, 6, dim)); text states -> (B, Lt, dim);
    Wan 2.1 I2V's CLIP image states -> (B, Li, dim) (`image_embedder`). diffusers:
    `WanTimeTextImageEmbedding`."""

    def __init__(self, cfg: dict[str, Any], dim: int, place: Place) -> None:
        self.dtype, self.freq_dim = place["dtype"], cfg["freq_dim"]
        self.time_embedder = TimestepEmbedding(cfg["freq_dim"], dim, place)
        self.time_proj = nn.Linear(dim, 6 * dim, **place)
        self.text_embedder = TextProjection(cfg["text_dim"], dim, place)
        if cfg["image_dim"] is not None:
            self.image_embedder = ImageEmbedding(cfg["image_dim"], dim, place)

    def forward(self, timestep: Any, device: Device) -> tuple[Tensor, Tensor]:
        t = np.asarray(timestep, np.float32).reshape(-1)
        features = nn.timestep_embedding(t, self.freq_dim, flip_sin_to_cos=True,
                                         downscale_freq_shift=0, dtype=self.dtype,
                                         device=device)
        temb = self.time_embedder(features)
        projection = self.time_proj(nn.silu(temb))
        return temb, projection.reshape(t.shape[0], 6, -1)


class PatchEmbedding(nn.Module):
    """A Conv3d whose kernel equals its stride: each (pt, ph, pw) patch of every channel,
    times weight (dim, C, pt, ph, pw), plus bias. torch: `nn.Conv3d(C, dim, p, stride=p)`."""

    def __init__(self, in_channels: int, dim: int, patch: tuple[int, int, int],
                 place: Place) -> None:
        self.weight = nn.parameter((dim, in_channels, *patch), place["dtype"], place["device"])
        self.bias = nn.parameter((dim,), place["dtype"], place["device"])

    def forward(self, patches: Tensor) -> Tensor:
        """patches (B, L, C * pt * ph * pw) -> (B, L, dim)."""
        dim = self.weight.shape[0]
        return nn.linear(patches, self.weight.reshape(dim, -1), self.bias)
