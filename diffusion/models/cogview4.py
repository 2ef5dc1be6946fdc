"""The CogView4 transformer (diffusers' CogView4Transformer2DModel names): text and image
tokens in one attention through shared projections (text first), each stream modulated by
its own adaLN chunks of the one timestep-and-size embedding, both through the same
feed-forward.

The conditioning temb is SiLU(timestep embedding + size embedding): the timestep's sinusoid
is as wide as the model, the size condition six sinusoids (original height and width, crop
top and left, target height and width) of `condition_dim` each. Every block's norm1.linear
reads temb as it is (no second SiLU) for twelve chunks, the image's and the text's
interleaved (shift_msa, c_shift_msa, scale_msa, c_scale_msa, gate_msa, c_gate_msa, then the
MLP's six). q and k are LayerNormed per head (no affine, eps 1e-5); the image rows then turn
by a 2-axis rotary embedding in the rotate-half layout ([row angles, column angles] twice),
positions spread over `rope_axes_dim` (row i of H at i * rope_axes_dim[0] // H), the text
rows by none (their table angle 0)."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, nn, permute, take_slice

from .dit_layers import FeedForward, TimestepEmbedding
from .layers import Place
from .step_cache import BranchCache, run_blocks
from .transformer_ops import Modulation, kept, rope

__all__ = ["CogView4Transformer2DModel", "cogview4_rope_angles"]

_DEFAULTS: dict[str, Any] = {
    "patch_size": 2, "in_channels": 16, "out_channels": 16, "num_layers": 30,
    "attention_head_dim": 40, "num_attention_heads": 64, "text_embed_dim": 4096,
    "time_embed_dim": 512, "condition_dim": 256, "rope_axes_dim": (256, 256),
}
_EPS = 1e-5  # every LayerNorm of the model


def cogview4_rope_angles(rows: int, columns: int, head_dim: int, axes: tuple[int, int],
                         theta: float = 10000.0) -> np.ndarray:
    """(rows * columns, head_dim) float32 angles of the patches in row-major order:
    [row angles, column angles] twice, head_dim / 4 frequencies each, in float32 as
    diffusers' `CogView4RotaryPosEmbed` computes them."""
    half = head_dim // 2
    inv = (np.float32(1.0) / np.float32(theta) ** (
        np.arange(0, half, 2, dtype=np.float32)[: half // 2] / np.float32(half))
           ).astype(np.float32)
    row = (np.arange(rows) * axes[0] // rows).astype(np.float32)[:, None] * inv
    col = (np.arange(columns) * axes[1] // columns).astype(np.float32)[:, None] * inv
    grid = np.concatenate([np.repeat(row, columns, 0), np.tile(col, (rows, 1))], 1)
    return np.concatenate([grid, grid], 1).astype(np.float32)


class CogView4Attention(nn.Module):
    """to_q/to_k/to_v/to_out.0 with biases over text and image tokens together. diffusers:
    `Attention(qk_norm="layer_norm", elementwise_affine=False)` with `CogView4AttnProcessor`
    (no attention mask: the pipeline passes none)."""

    def __init__(self, dim: int, heads: int, head_dim: int, place: Place) -> None:
        self.heads, self.head_dim = heads, head_dim
        inner = heads * head_dim
        self.to_q = nn.Linear(dim, inner, **place)
        self.to_k = nn.Linear(dim, inner, **place)
        self.to_v = nn.Linear(dim, inner, **place)
        self.to_out = nn.ModuleList([nn.Linear(inner, dim, **place)])

    def _norm_rope(self, x: Tensor, rotary: tuple[Tensor, Tensor]) -> Tensor:
        batch, length, width = x.shape
        normed = nn.layer_norm(x.reshape(batch, length, self.heads, self.head_dim), eps=_EPS)
        return rope(normed.reshape(batch, length, width), *rotary, self.heads, halves=True)

    def heads_of(self, x: Tensor, rotary: tuple[Tensor, Tensor]) -> Tensor:
        """The attention of the joint x (B, Lt + Li, dim) before to_out."""
        q, k, v = nn.Linear.each(x, [self.to_q, self.to_k, self.to_v])
        q, k = self._norm_rope(q, rotary), self._norm_rope(k, rotary)
        return nn.attention(q, k, v, heads=self.heads)


class AdaLayerNormZero(nn.Module):
    """`linear` of temb into the twelve chunks (CogView4AdaLayerNormZero); the LayerNorms
    are parameterless."""

    def __init__(self, embed: int, dim: int, place: Place) -> None:
        self.linear = nn.Linear(embed, 12 * dim, **place)


class CogView4TransformerBlock(nn.Module):
    """norm1 (adaLN of both streams), attn1 (joint), norm2 / norm2_context (parameterless
    LayerNorms, modulated), ff (shared). diffusers: `CogView4TransformerBlock`."""

    def __init__(self, dim: int, heads: int, head_dim: int, embed: int, place: Place) -> None:
        self.norm1 = AdaLayerNormZero(embed, dim, place)
        self.attn1 = CogView4Attention(dim, heads, head_dim, place)
        self.ff = FeedForward(dim, place)

    def forward(self, x: Tensor, context: Tensor, temb: Tensor,
                rotary: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        """(image (B, Li, dim), text (B, Lt, dim)) after the block; temb already SiLU'd."""
        mods = Modulation(self.norm1.linear(temb), 12)
        text = context.shape[1]
        joint = concatenate([mods.norm(context, 1, 3, _EPS), mods.norm(x, 0, 2, _EPS)], axis=1)
        heads = self.attn1.heads_of(joint, rotary)
        to_out = self.attn1.to_out[0]
        x = mods.gated_linear(4, x, to_out, take_slice(heads, text, heads.shape[1], axis=1))
        context = mods.gated_linear(5, context, to_out, take_slice(heads, 0, text, axis=1))
        x = self.ff.gated(x, mods[10], mods.norm(x, 6, 8, _EPS))
        context = self.ff.gated(context, mods[11], mods.norm(context, 7, 9, _EPS))
        return x, context


class _PatchEmbed(nn.Module):
    """`proj` of each patch's (C, p, p) values, `text_proj` of the prompt's states."""

    def __init__(self, patch: int, cfg: dict[str, Any], dim: int, place: Place) -> None:
        self.proj = nn.Linear(cfg["in_channels"] * patch * patch, dim, **place)
        self.text_proj = nn.Linear(cfg["text_embed_dim"], dim, **place)


class _TimeCondition(nn.Module):
    """timestep_embedder and condition_embedder (diffusers'
    `CogView3CombinedTimestepSizeEmbeddings`: TimestepEmbedding and
    PixArtAlphaTextProjection, the same names)."""

    def __init__(self, dim: int, cfg: dict[str, Any], place: Place) -> None:
        embed = cfg["time_embed_dim"]
        self.timestep_embedder = TimestepEmbedding(dim, embed, place)
        self.condition_embedder = TimestepEmbedding(6 * cfg["condition_dim"], embed, place)


class _NormOut(nn.Module):
    """LayerNorm times (1 + scale) plus shift, (scale, shift) = linear(temb); temb the
    model's SiLU'd one. diffusers: `CogView4AdaLayerNormContinuous`."""

    def __init__(self, embed: int, dim: int, place: Place) -> None:
        self.linear = nn.Linear(embed, 2 * dim, **place)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        return Modulation(self.linear(temb), 2).norm(x, shift=1, scale=0, eps=_EPS)


class CogView4Transformer2DModel(nn.Module):
    """Latents (B, in_channels, H, W) -> the flow (B, out_channels, H, W).

    Config: `transformer/config.json` of a CogView4 folder. Parameter names are diffusers'
    (`patch_embed.proj.weight`, `time_condition_embed.condition_embedder.linear_1.weight`,
    `transformer_blocks.0.attn1.to_q.weight`, `norm_out.linear.weight`, `proj_out.weight`).
    diffusers: `CogView4Transformer2DModel(hidden_states, encoder_hidden_states, timestep,
    original_size, target_size, crop_coords).sample`."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        self.config, self.dtype = cfg, np.dtype(dtype)
        heads, head_dim = cfg["num_attention_heads"], cfg["attention_head_dim"]
        if head_dim % 4:
            raise ValueError(f"attention_head_dim {head_dim} must be a multiple of 4 (its "
                             "rotary embedding turns row and column pairs in two halves)")
        dim, patch, embed = heads * head_dim, cfg["patch_size"], cfg["time_embed_dim"]
        place: Place = {"dtype": dtype, "device": device}
        self.patch_embed = _PatchEmbed(patch, cfg, dim, place)
        self.time_condition_embed = _TimeCondition(dim, cfg, place)
        self.transformer_blocks = nn.ModuleList([
            CogView4TransformerBlock(dim, heads, head_dim, embed, place)
            for _ in range(cfg["num_layers"])])
        self.norm_out = _NormOut(embed, dim, place)
        self.proj_out = nn.Linear(dim, patch * patch * cfg["out_channels"], **place)
        self._tables: dict[Any, tuple[Tensor, Tensor]] = {}

    @property
    def device(self) -> Device:
        return self.proj_out.weight.device

    def rotary(self, text: int, rows: int, columns: int) -> tuple[Tensor, Tensor]:
        """cos/sin (text + rows * columns, 1, head_dim): the text rows unturned, then the
        patches'; kept on the device for the next steps (a prompt and its negative prompt
        each have their own length)."""
        def make() -> tuple[Tensor, Tensor]:
            cfg = self.config
            head_dim = cfg["attention_head_dim"]
            angle = np.concatenate([np.zeros((text, head_dim), np.float32), cogview4_rope_angles(
                rows, columns, head_dim, tuple(cfg["rope_axes_dim"]))])[:, None]
            return (asarray(np.cos(angle), device=self.device),
                    asarray(np.sin(angle), device=self.device))

        return kept(self._tables, (text, rows, columns, self.device), make, count=8)

    def embed(self, timestep: Any, sizes: Any) -> Tensor:
        """SiLU(temb) (B, time_embed_dim) of timesteps (B,) on the scheduler's 0..1000 scale
        and sizes (B, 6): original (h, w), crop (top, left), target (h, w); the timesteps
        host numbers or a float32 Tensor (a replayed step's)."""
        values = timestep.reshape(-1) if isinstance(timestep, Tensor) else np.asarray(
            timestep, np.float32).reshape(-1)
        sizes = np.asarray(sizes, np.float32).reshape(values.shape[0], 6)
        cond, embedder = self.config["condition_dim"], self.time_condition_embed
        width = self.config["num_attention_heads"] * self.config["attention_head_dim"]

        def sinusoid(v: Any, dim: int) -> Tensor:
            return nn.timestep_embedding(v, dim, flip_sin_to_cos=True, downscale_freq_shift=0,
                                         dtype=self.dtype, device=self.device)

        temb = embedder.timestep_embedder(sinusoid(values, width)) + \
            embedder.condition_embedder(sinusoid(sizes.reshape(-1), cond).reshape(
                values.shape[0], 6 * cond))
        return nn.silu(temb)

    def forward(self, hidden_states: Tensor, text: Tensor, timestep: Any,
                original_size: Any, target_size: Any, crop_coords: Any, *,
                cache: BranchCache | None = None) -> Tensor:
        """hidden_states (B, in_channels, H, W); text (B, T, text_embed_dim): the prompt's
        states, every token attended to; timestep (B,) host numbers or a float32 Tensor (a
        replayed step's) on the scheduler's 0..1000 scale; original_size,
        target_size, crop_coords (B, 2) host numbers (diffusers' tensors' values). `cache`:
        a step cache branch (`step_cache.StepCache.branch()`) the blocks run through, its
        calls in step order (the image stream decides and is cached)."""
        batch, channels, height, width = hidden_states.shape
        p = self.config["patch_size"]
        rows, columns = height // p, width // p
        if rows * p != height or columns * p != width:
            raise ValueError(f"latents of {height}x{width} do not split into {p}x{p} patches")
        patches = permute(hidden_states.reshape(batch, channels, rows, p, columns, p),
                          (0, 2, 4, 1, 3, 5)).reshape(batch, rows * columns, -1)
        x = self.patch_embed.proj(patches)
        context = self.patch_embed.text_proj(text)
        sizes = np.concatenate([np.asarray(s, np.float32).reshape(batch, 2) for s in (
            original_size, crop_coords, target_size)], 1)
        temb = self.embed(timestep, sizes)
        rotary = self.rotary(text.shape[1], rows, columns)
        blocks = list(self.transformer_blocks)

        def head(x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
            return blocks[0](x, context, temb, rotary) if blocks else (x, context)

        def tail(x: Tensor, context: Tensor) -> Tensor:
            for block in blocks[1:]:
                x, context = block(x, context, temb, rotary)
            return x

        # the first block apart: a step cache decides after it whether the others run
        x = run_blocks(cache, x, context, head, tail)
        out = self.proj_out(self.norm_out(x, temb))
        out = permute(out.reshape(batch, rows, columns, -1, p, p), (0, 3, 1, 4, 2, 5))
        return out.reshape(batch, out.shape[1], height, width)
