"""A torch reference of XLabs' FLUX ControlNet (x-flux's `ControlNetFlux`, typed from its
src/flux/controlnet.py, modules/layers.py and math.py: x-flux is not on PyPI), under x-flux's
tensor names, so its state dict is an XLabs file. Tiny widths are allowed: the hint block's
last convolution gives `in_channels / 4` channels (x-flux's real models: 16 for 64)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def _rope(pos: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    scale = torch.arange(0, dim, 2, dtype=torch.float64) / dim
    omega = 1.0 / theta**scale
    out = torch.einsum("...n,d->...nd", pos.double(), omega)
    out = torch.stack([torch.cos(out), -torch.sin(out), torch.sin(out), torch.cos(out)], -1)
    return out.reshape(*out.shape[:-1], 2, 2).float()


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               pe: torch.Tensor) -> torch.Tensor:
    def rotate(x: torch.Tensor) -> torch.Tensor:
        pairs = x.float().reshape(*x.shape[:-1], -1, 1, 2)
        return (pe[..., 0] * pairs[..., 0] + pe[..., 1] * pairs[..., 1]).reshape(*x.shape)

    out = nn.functional.scaled_dot_product_attention(rotate(q), rotate(k), v)
    b, h, length, d = out.shape
    return out.permute(0, 2, 1, 3).reshape(b, length, h * d)


def timestep_embedding(t: torch.Tensor, dim: int = 256) -> torch.Tensor:
    t = 1000.0 * t
    half = dim // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = t[:, None].float() * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class MLPEmbedder(nn.Module):
    def __init__(self, in_dim: int, hidden: int) -> None:
        super().__init__()
        self.in_layer = nn.Linear(in_dim, hidden)
        self.out_layer = nn.Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out_layer(nn.functional.silu(self.in_layer(x)))


class RMSNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(torch.mean(x**2, dim=-1, keepdim=True) + 1e-6) * self.scale


class QKNorm(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.query_norm, self.key_norm = RMSNorm(dim), RMSNorm(dim)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.qkv = nn.Linear(dim, dim * 3)
        self.norm = QKNorm(dim // heads)
        self.proj = nn.Linear(dim, dim)


class Modulation(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.lin = nn.Linear(dim, 6 * dim)

    def forward(self, vec: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.lin(nn.functional.silu(vec))[:, None, :].chunk(6, dim=-1)


class DoubleStreamBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        hidden = int(dim * mlp_ratio)
        self.heads = heads
        for side in ("img", "txt"):
            setattr(self, f"{side}_mod", Modulation(dim))
            setattr(self, f"{side}_attn", SelfAttention(dim, heads))
            setattr(self, f"{side}_mlp", nn.Sequential(
                nn.Linear(dim, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, dim)))

    def forward(self, img: torch.Tensor, txt: torch.Tensor, vec: torch.Tensor,
                pe: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        def norm(x: torch.Tensor) -> torch.Tensor:
            return nn.functional.layer_norm(x, x.shape[-1:], eps=1e-6)

        mods, qkvs = {}, {}
        for side, x in (("img", img), ("txt", txt)):
            mod = getattr(self, f"{side}_mod")(vec)
            attn = getattr(self, f"{side}_attn")
            qkv = attn.qkv((1 + mod[1]) * norm(x) + mod[0])
            b, length, _ = qkv.shape
            q, k, v = qkv.reshape(b, length, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
            mods[side], qkvs[side] = mod, (attn.norm.query_norm(q), attn.norm.key_norm(k), v)
        q, k, v = (torch.cat((qkvs["txt"][i], qkvs["img"][i]), dim=2) for i in range(3))
        out = _attention(q, k, v, pe)
        parts = {"txt": out[:, :txt.shape[1]], "img": out[:, txt.shape[1]:]}
        results = {}
        for side, x in (("img", img), ("txt", txt)):
            mod = mods[side]
            x = x + mod[2] * getattr(self, f"{side}_attn").proj(parts[side])
            x = x + mod[5] * getattr(self, f"{side}_mlp")((1 + mod[4]) * norm(x) + mod[3])
            results[side] = x
        return results["img"], results["txt"]


class ControlNetFlux(nn.Module):
    """x-flux's ControlNetFlux: `forward` gives its double blocks' residuals."""

    def __init__(self, *, in_channels: int, vec_in_dim: int, context_in_dim: int,
                 hidden_size: int, num_heads: int, axes_dim: tuple[int, ...],
                 guidance_embed: bool, depth: int = 2) -> None:
        super().__init__()
        self.heads, self.axes_dim = num_heads, axes_dim
        self.img_in = nn.Linear(in_channels, hidden_size)
        self.time_in = MLPEmbedder(256, hidden_size)
        self.vector_in = MLPEmbedder(vec_in_dim, hidden_size)
        self.guidance_in = MLPEmbedder(256, hidden_size) if guidance_embed else None
        self.txt_in = nn.Linear(context_in_dim, hidden_size)
        self.double_blocks = nn.ModuleList(
            [DoubleStreamBlock(hidden_size, num_heads) for _ in range(depth)])
        self.controlnet_blocks = nn.ModuleList(
            [nn.Linear(hidden_size, hidden_size) for _ in range(depth)])
        self.pos_embed_input = nn.Linear(in_channels, hidden_size)
        convs: list[nn.Module] = [nn.Conv2d(3, 16, 3, padding=1)]
        for stride in (1, 2, 1, 2, 1, 2):
            convs += [nn.SiLU(), nn.Conv2d(16, 16, 3, padding=1, stride=stride)]
        convs += [nn.SiLU(), nn.Conv2d(16, in_channels // 4, 3, padding=1)]
        self.input_hint_block = nn.Sequential(*convs)

    def forward(self, img: torch.Tensor, img_ids: torch.Tensor, controlnet_cond: torch.Tensor,
                txt: torch.Tensor, txt_ids: torch.Tensor, timesteps: torch.Tensor,
                y: torch.Tensor, guidance: torch.Tensor | None = None) -> list[torch.Tensor]:
        img = self.img_in(img)
        cond = self.input_hint_block(controlnet_cond)
        b, c, h, w = cond.shape  # "b c (h ph) (w pw) -> b (h w) (c ph pw)"
        cond = cond.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
        img = img + self.pos_embed_input(cond.reshape(b, (h // 2) * (w // 2), c * 4))
        vec = self.time_in(timestep_embedding(timesteps))
        if self.guidance_in is not None:
            vec = vec + self.guidance_in(timestep_embedding(guidance))
        vec = vec + self.vector_in(y)
        txt = self.txt_in(txt)
        ids = torch.cat((txt_ids, img_ids), dim=1)
        pe = torch.cat([_rope(ids[..., i], self.axes_dim[i], 10000.0)
                        for i in range(ids.shape[-1])], dim=-3).unsqueeze(1)
        samples = []
        for block in self.double_blocks:
            img, txt = block(img, txt, vec, pe)
            samples.append(img)
        return [layer(s) for layer, s in zip(self.controlnet_blocks, samples)]


def randomized_xflux(model: ControlNetFlux, seed: int, *, residual_scale: float) -> Any:
    """Every parameter redrawn (RMSNorm scales near 1), the zero-initialized residual linears
    times `residual_scale`, the hint convolutions strong enough that the control picture
    visibly matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".scale"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=gen))
            elif p.ndim >= 2:
                fan_in = int(math.prod(p.shape[1:]))
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
            else:
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            if name.startswith("controlnet_blocks"):
                p.mul_(residual_scale)
            elif name.startswith("input_hint_block") and p.ndim == 4:
                p.mul_(1.7)  # eight convolutions: features that still depend on the picture
    return model.eval()
