"""UNet2DConditionModel as Stable Diffusion 1.x / 2.x use it (diffusers' names and config)."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, nn
from gpustd.shape import concatenate

from .layers import (
    Attention,
    Downsample2D,
    Place,
    ResnetBlock2D,
    Upsample2D,
    to_image,
    to_tokens,
)

_DEFAULTS: dict[str, Any] = {
    "in_channels": 4, "out_channels": 4, "layers_per_block": 2, "norm_num_groups": 32,
    "norm_eps": 1e-5, "flip_sin_to_cos": True, "freq_shift": 0, "cross_attention_dim": 768,
    "attention_head_dim": 8, "num_attention_heads": None, "use_linear_projection": False,
    "upcast_attention": False, "transformer_layers_per_block": 1,
    "block_out_channels": (320, 640, 1280, 1280),
    "down_block_types": ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    "up_block_types": ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
}
_UNSUPPORTED = ("class_embed_type", "addition_embed_type", "encoder_hid_dim", "time_cond_proj_dim")


def _per_block(value: Any, count: int) -> list[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value] * count


class FeedForward(nn.Module):
    """GEGLU feed-forward: net.0.proj (dim -> 2*inner), gelu gate, net.2 (inner -> dim)."""

    def __init__(self, dim: int, *, place: Place, mult: int = 4) -> None:
        inner = dim * mult
        self.net = nn.ModuleList([nn.GEGLU(dim, inner, **place), nn.Identity(),
                                  nn.Linear(inner, dim, **place)])

    def forward(self, x: Tensor) -> Tensor:
        return self.net[2](self.net[0](x))


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, context_dim: int, *, place: Place) -> None:
        self.norm1 = nn.LayerNorm(dim, **place)
        self.attn1 = Attention(dim, heads, dim // heads, place=place)
        self.norm2 = nn.LayerNorm(dim, **place)
        self.attn2 = Attention(dim, heads, dim // heads, context_dim=context_dim, place=place)
        self.norm3 = nn.LayerNorm(dim, **place)
        self.ff = FeedForward(dim, place=place)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Transformer2DModel(nn.Module):
    """GroupNorm, projection to tokens (1x1 conv or linear), transformer blocks, back."""

    def __init__(self, channels: int, heads: int, context_dim: int, *, depth: int,
                 linear_projection: bool, groups: int, place: Place) -> None:
        self.linear_projection = linear_projection
        self.norm = nn.GroupNorm(groups, channels, eps=1e-6, **place)

        def project() -> nn.Module:
            if linear_projection:
                return nn.Linear(channels, channels, **place)
            return nn.Conv2d(channels, channels, 1, **place)

        self.proj_in = project()
        self.transformer_blocks = nn.ModuleList(
            [BasicTransformerBlock(channels, heads, context_dim, place=place)
             for _ in range(depth)])
        self.proj_out = project()

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        _, _, height, width = x.shape
        h = self.norm(x)
        h = self.proj_in(to_tokens(h)) if self.linear_projection else to_tokens(self.proj_in(h))
        for block in self.transformer_blocks:
            h = block(h, context)
        if self.linear_projection:
            h = to_image(self.proj_out(h), height, width)
        else:
            h = self.proj_out(to_image(h, height, width))
        return h + x


class _Block(nn.Module):
    """A down or up block: resnets, optional transformers, optional resampler."""

    def __init__(self, resnets: list[ResnetBlock2D], attentions: list[Transformer2DModel] | None,
                 sampler: nn.Module | None, sampler_name: str) -> None:
        self.resnets = nn.ModuleList(resnets)
        if attentions is not None:
            self.attentions = nn.ModuleList(attentions)
        self._sampler_name = sampler_name
        if sampler is not None:
            setattr(self, sampler_name, nn.ModuleList([sampler]))

    def sampler(self) -> nn.Module | None:
        found = getattr(self, self._sampler_name, None)
        return found[0] if found is not None else None

    def attention(self, i: int) -> Transformer2DModel | None:
        attentions = getattr(self, "attentions", None)
        return attentions[i] if attentions is not None else None


class UNet2DConditionModel(nn.Module):
    """The SD 1.x/2.x UNet. Config: diffusers' `unet/config.json` dict."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        place: Place = {"dtype": dtype, "device": device}
        cfg = {**_DEFAULTS, **config}
        for key in _UNSUPPORTED:
            if cfg.get(key) is not None:
                raise ValueError(f"UNet config {key}={cfg[key]!r} is not supported (SD 1.x/2.x "
                                 "UNets leave it unset)")
        self.config = cfg
        channels = list(cfg["block_out_channels"])
        blocks = len(channels)
        layers = _per_block(cfg["layers_per_block"], blocks)
        heads = _per_block(cfg["num_attention_heads"] or cfg["attention_head_dim"], blocks)
        depth = _per_block(cfg["transformer_layers_per_block"], blocks)
        groups, eps, ctx = cfg["norm_num_groups"], cfg["norm_eps"], cfg["cross_attention_dim"]
        temb = channels[0] * 4

        def resnet(i: int, o: int) -> ResnetBlock2D:
            return ResnetBlock2D(i, o, temb_channels=temb, groups=groups, eps=eps, place=place)

        def transformer(c: int, h: int, d: int) -> Transformer2DModel:
            return Transformer2DModel(c, h, ctx, depth=d, groups=groups, place=place,
                                      linear_projection=cfg["use_linear_projection"])

        self.conv_in = nn.Conv2d(cfg["in_channels"], channels[0], 3, padding=1, **place)
        self.time_embedding = nn.Module()
        self.time_embedding.linear_1 = nn.Linear(channels[0], temb, **place)
        self.time_embedding.linear_2 = nn.Linear(temb, temb, **place)

        down = []
        for i, kind in enumerate(cfg["down_block_types"]):
            cin, cout, last = channels[max(i - 1, 0)], channels[i], i == blocks - 1
            resnets = [resnet(cin if j == 0 else cout, cout) for j in range(layers[i])]
            attns = ([transformer(cout, heads[i], depth[i]) for _ in range(layers[i])]
                     if kind == "CrossAttnDownBlock2D" else None)
            if kind not in ("CrossAttnDownBlock2D", "DownBlock2D"):
                raise ValueError(f"unsupported down block type {kind!r}")
            down.append(_Block(resnets, attns, None if last else Downsample2D(cout, place=place),
                               "downsamplers"))
        self.down_blocks = nn.ModuleList(down)

        self.mid_block = nn.Module()
        self.mid_block.resnets = nn.ModuleList([resnet(channels[-1], channels[-1])
                                                for _ in range(2)])
        self.mid_block.attentions = nn.ModuleList(
            [transformer(channels[-1], heads[-1], depth[-1])])

        up = []
        rev, rev_heads, rev_layers = channels[::-1], heads[::-1], layers[::-1]
        rev_depth = depth[::-1]
        for i, kind in enumerate(cfg["up_block_types"]):
            prev, cout = rev[max(i - 1, 0)], rev[i]
            cin, last, n = rev[min(i + 1, blocks - 1)], i == blocks - 1, rev_layers[i] + 1
            resnets = [resnet((prev if j == 0 else cout) + (cin if j == n - 1 else cout), cout)
                       for j in range(n)]
            attns = ([transformer(cout, rev_heads[i], rev_depth[i]) for _ in range(n)]
                     if kind == "CrossAttnUpBlock2D" else None)
            if kind not in ("CrossAttnUpBlock2D", "UpBlock2D"):
                raise ValueError(f"unsupported up block type {kind!r}")
            up.append(_Block(resnets, attns, None if last else Upsample2D(cout, place=place),
                             "upsamplers"))
        self.up_blocks = nn.ModuleList(up)

        self.conv_norm_out = nn.GroupNorm(groups, channels[0], eps=eps, **place)
        self.conv_out = nn.Conv2d(channels[0], cfg["out_channels"], 3, padding=1, **place)

    def forward(self, sample: Tensor, timesteps: Any, context: Tensor) -> Tensor:
        """sample: (B, in_channels, h, w) latents; timesteps: B numbers; context: (B, 77, D).

        Returns the model output (noise or v), (B, out_channels, h, w).
        """
        cfg = self.config
        batch = sample.shape[0]
        steps = np.broadcast_to(np.asarray(timesteps, np.float32).reshape(-1), (batch,))
        t = nn.timestep_embedding(asarray(steps, device=sample.device),
                                  cfg["block_out_channels"][0],
                                  flip_sin_to_cos=cfg["flip_sin_to_cos"],
                                  downscale_freq_shift=cfg["freq_shift"])
        if t.dtype != sample.dtype:
            t = t.astype(sample.dtype)
        emb = self.time_embedding.linear_2(nn.silu(self.time_embedding.linear_1(t)))
        temb_act = nn.silu(emb)  # every resnet's time projection starts with SiLU

        h = self.conv_in(sample)
        skips = [h]
        for block in self.down_blocks:
            for i, res in enumerate(block.resnets):
                h = res(h, temb_act)
                attn = block.attention(i)
                if attn is not None:
                    h = attn(h, context)
                skips.append(h)
            sampler = block.sampler()
            if sampler is not None:
                h = sampler(h)
                skips.append(h)

        mid = self.mid_block
        h = mid.resnets[1](mid.attentions[0](mid.resnets[0](h, temb_act), context), temb_act)

        for block in self.up_blocks:
            for i, res in enumerate(block.resnets):
                h = res(concatenate([h, skips.pop()], axis=1), temb_act)
                attn = block.attention(i)
                if attn is not None:
                    h = attn(h, context)
            sampler = block.sampler()
            if sampler is not None:
                h = sampler(h)
        return self.conv_out(self.conv_norm_out(h, silu=True))
