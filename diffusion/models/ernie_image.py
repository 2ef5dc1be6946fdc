"""The ERNIE-Image transformer (diffusers' ErnieImageTransformer2DModel names): one stream of
image patches then text tokens through pre-norm blocks (RMS norms, QK-normed attention with a
3-axis rotary embedding, a GELU-gated feed-forward), every block modulated by the same six
adaLN vectors of the timestep (`adaLN_modulation`, computed once per step), a LayerNorm
output head modulated by the timestep embedding itself (no SiLU before its linear).

Positions: text token i at (i, 0, 0), image patch (row, column) at (text length, row,
column). The rotation pairs x[i] with x[i + D/2] (rotate-half) while the tables' angles run
θ0, θ0, θ1, θ1, ... (each frequency repeated, as diffusers builds them), so each element
turns by its own table entry (transformer_ops.norm_rope with `halves`)."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, concatenate, nn, permute, take_slice
from gpustd.nn.linear import conv1x1_tokens
from gpustd.quant import materialize

from .dit_layers import TimestepEmbedding
from .layers import Place
from .step_cache import BranchCache, run_blocks
from .transformer_ops import Modulation, RMSNorm, cast, kept, modulate, norm_rope, rope_tables

__all__ = ["ErnieImageTransformer2DModel", "ernie_positions"]

_DEFAULTS: dict[str, Any] = {
    "hidden_size": 3072, "num_attention_heads": 24, "num_layers": 24, "ffn_hidden_size": 8192,
    "in_channels": 128, "out_channels": 128, "patch_size": 1, "text_in_dim": 2560,
    "rope_theta": 256, "rope_axes_dim": (32, 48, 48), "eps": 1e-6, "qk_layernorm": True,
}


def ernie_positions(text: int, rows: int, columns: int) -> np.ndarray:
    """(rows * columns + text, 3) position ids, image patches first: (text, row, column)
    for each patch in row-major order, then (i, 0, 0) for text token i. diffusers: the
    `image_ids` and `text_ids` of ErnieImageTransformer2DModel.forward (one prompt)."""
    grid = np.stack(np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij"), -1)
    image = np.concatenate([np.full((rows * columns, 1), text), grid.reshape(-1, 2)], 1)
    words = np.zeros((text, 3), np.int64)
    words[:, 0] = np.arange(text)
    return np.concatenate([image, words]).astype(np.float64)


class ErnieImageAttention(nn.Module):
    """to_q/to_k/to_v, per-head RMS norms norm_q/norm_k, rotary embedding, to_out.0; no
    biases. diffusers: `ErnieImageAttention` with `ErnieImageSingleStreamAttnProcessor`."""

    def __init__(self, dim: int, heads: int, eps: float, qk_norm: bool, place: Place) -> None:
        self.heads = heads
        head_dim = dim // heads
        self.to_q = nn.Linear(dim, dim, False, **place)
        self.to_k = nn.Linear(dim, dim, False, **place)
        self.to_v = nn.Linear(dim, dim, False, **place)
        self.norm_q = RMSNorm(head_dim, eps, place=place) if qk_norm else None
        self.norm_k = RMSNorm(head_dim, eps, place=place) if qk_norm else None
        self.to_out = nn.ModuleList([nn.Linear(dim, dim, False, **place)])

    def heads_of(self, x: Tensor, rotary: tuple[Tensor, Tensor]) -> Tensor:
        """The attention of x (B, L, dim) before to_out (B, L, dim)."""
        q, k, v = nn.Linear.each(x, [self.to_q, self.to_k, self.to_v])
        q = norm_rope(self.norm_q, q, rotary, self.heads, halves=True)
        k = norm_rope(self.norm_k, k, rotary, self.heads, halves=True)
        return nn.attention(q, k, v, heads=self.heads)

    def forward(self, x: Tensor, rotary: tuple[Tensor, Tensor]) -> Tensor:
        return self.to_out[0](self.heads_of(x, rotary))


class ErnieImageFeedForward(nn.Module):
    """linear_fc2(up_proj(x) * gelu(gate_proj(x))), exact GELU, no biases. diffusers:
    `ErnieImageFeedForward`."""

    def __init__(self, dim: int, inner: int, place: Place) -> None:
        self.gate_proj = nn.Linear(dim, inner, False, **place)
        self.up_proj = nn.Linear(dim, inner, False, **place)
        self.linear_fc2 = nn.Linear(inner, dim, False, **place)

    def hidden(self, x: Tensor) -> Tensor:
        """What linear_fc2 reads: the gate's GELU (in its GEMM's epilogue) times up_proj."""
        return self.gate_proj.gelu(x) * self.up_proj(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear_fc2(self.hidden(x))


class ErnieImageSharedAdaLNBlock(nn.Module):
    """RMS norm, modulation, attention, gated residual; RMS norm, modulation, feed-forward,
    gated residual; the six modulation vectors the model's (shift_msa, scale_msa, gate_msa,
    shift_mlp, scale_mlp, gate_mlp). diffusers: `ErnieImageSharedAdaLNBlock`."""

    def __init__(self, dim: int, heads: int, inner: int, eps: float, qk_norm: bool,
                 place: Place) -> None:
        self.adaLN_sa_ln = RMSNorm(dim, eps, place=place)
        self.self_attention = ErnieImageAttention(dim, heads, eps, qk_norm, place)
        self.adaLN_mlp_ln = RMSNorm(dim, eps, place=place)
        self.mlp = ErnieImageFeedForward(dim, inner, place)

    def forward(self, x: Tensor, mods: Modulation, rotary: tuple[Tensor, Tensor]) -> Tensor:
        h = modulate(self.adaLN_sa_ln(x), mods[0], mods[1])
        x = mods.gated_linear(2, x, self.self_attention.to_out[0],
                              self.self_attention.heads_of(h, rotary))
        h = modulate(self.adaLN_mlp_ln(x), mods[3], mods[4])
        return mods.gated_linear(5, x, self.mlp.linear_fc2, self.mlp.hidden(h))


class PatchEmbed(nn.Module):
    """`proj`: the patch_size-1 Conv2d from latent channels to the model's width."""

    def __init__(self, channels: int, dim: int, place: Place) -> None:
        self.proj = nn.Conv2d(channels, dim, 1, **place)


class FinalNorm(nn.Module):
    """LayerNorm (no affine, eps 1e-6) times (1 + scale) plus shift, (scale, shift) =
    linear(temb) — no SiLU. diffusers: `ErnieImageAdaLNContinuous`."""

    def __init__(self, dim: int, place: Place) -> None:
        self.linear = nn.Linear(dim, 2 * dim, **place)

    def forward(self, x: Tensor, temb: Tensor) -> Tensor:
        return Modulation(self.linear(temb), 2).norm(x, shift=1, scale=0)


class ErnieImageTransformer2DModel(nn.Module):
    """Latents (B, in_channels, H, W) -> the flow (B, out_channels, H, W).

    Config: `transformer/config.json` of an ERNIE-Image folder (diffusers'
    ErnieImageTransformer2DModel fields; patch_size 1, as the released model's). Parameter
    names are diffusers' (`x_embedder.proj.weight`, `layers.0.self_attention.to_q.weight`,
    `layers.0.mlp.gate_proj.weight`, `adaLN_modulation.1.weight`, ...). diffusers:
    `ErnieImageTransformer2DModel(hidden_states, timestep, text_bth, text_lens).sample` for
    one prompt (every text token attended to)."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        self.config = cfg
        if cfg["patch_size"] != 1:
            raise ValueError(f"ERNIE-Image's transformer reads patchified latents (patch_size "
                             f"1), got patch_size {cfg['patch_size']}")
        dim, heads = cfg["hidden_size"], cfg["num_attention_heads"]
        if dim % heads or sum(cfg["rope_axes_dim"]) != dim // heads:
            raise ValueError(f"rope_axes_dim {tuple(cfg['rope_axes_dim'])} must add up to the "
                             f"head width hidden_size / num_attention_heads = {dim // heads}")
        place: Place = {"dtype": dtype, "device": device}
        self.dtype = np.dtype(dtype)
        self.x_embedder = PatchEmbed(cfg["in_channels"], dim, place)
        self.text_proj = (nn.Linear(cfg["text_in_dim"], dim, False, **place)
                          if cfg["text_in_dim"] != dim else None)
        self.time_embedding = TimestepEmbedding(dim, dim, place)
        # diffusers' Sequential(SiLU, Linear): the linear at index 1
        self.adaLN_modulation = nn.ModuleList([nn.Identity(), nn.Linear(dim, 6 * dim, **place)])
        self.layers = nn.ModuleList([
            ErnieImageSharedAdaLNBlock(dim, heads, cfg["ffn_hidden_size"], cfg["eps"],
                                       cfg["qk_layernorm"], place)
            for _ in range(cfg["num_layers"])])
        self.final_norm = FinalNorm(dim, place)
        self.final_linear = nn.Linear(dim, cfg["out_channels"], **place)
        self._tables: dict[Any, tuple[Tensor, Tensor]] = {}

    @property
    def device(self) -> Device:
        return self.x_embedder.proj.weight.device

    def rotary(self, text: int, rows: int, columns: int) -> tuple[Tensor, Tensor]:
        """cos/sin tables of `ernie_positions(text, rows, columns)`, kept on the device for
        the next steps of the same size (8 kept: each prompt and negative prompt of a
        batch has its own text length, so its own tables)."""
        cfg = self.config
        return kept(self._tables, (text, rows, columns, self.device), lambda: rope_tables(
            ernie_positions(text, rows, columns), tuple(cfg["rope_axes_dim"]),
            float(cfg["rope_theta"]), device=self.device), count=8)

    def embed_time(self, timestep: Any) -> Tensor:
        """temb (B, dim) of timesteps on the scheduler's 0..1000 scale, rounded to the
        model's dtype first as diffusers passes them; the sinusoid sin first. diffusers:
        `time_embedding(time_proj(timestep))` (Timesteps(dim, flip_sin_to_cos=False,
        downscale_freq_shift=0))."""
        values: Any
        if isinstance(timestep, Tensor):  # a replayed step's input, rounded on the device
            if timestep.dtype != np.float32:
                raise TypeError(f"a timestep Tensor must be float32, got {timestep.dtype}")
            values = timestep.reshape(-1)
            if self.dtype != np.float32:
                values = cast(cast(values, self.dtype), np.float32)
        else:
            values = np.asarray(timestep, np.float32).reshape(-1).astype(self.dtype)
            values = values.astype(np.float32)
        dim = self.config["hidden_size"]
        return self.time_embedding(nn.timestep_embedding(
            values, dim, flip_sin_to_cos=False, downscale_freq_shift=0, dtype=self.dtype,
            device=self.device))

    def forward(self, hidden_states: Tensor, text: Tensor, timestep: Any, *,
                cache: BranchCache | None = None) -> Tensor:
        """hidden_states (B, in_channels, H, W); text (B, T, text_in_dim): the prompt's
        states, every token attended to (diffusers' text_bth with text_lens all T);
        timestep (B,) host numbers or a float32 Tensor (a replayed step's) on the scheduler's
        0..1000 scale. `cache`: a step cache
        branch (`step_cache.StepCache.branch()`) the blocks run through, its calls in step
        order (the image and text tokens one stream: both decide and are cached)."""
        batch, _, rows, columns = hidden_states.shape
        weight = materialize(self.x_embedder.proj.weight)
        image = conv1x1_tokens(hidden_states, weight.reshape(weight.shape[0], -1),
                               self.x_embedder.proj.bias)
        words = self.text_proj(text) if self.text_proj is not None else text
        x = concatenate([image, words], axis=1)
        temb = self.embed_time(timestep)
        mods = Modulation(self.adaLN_modulation[1](nn.silu(temb)), 6)
        rotary = self.rotary(text.shape[1], rows, columns)
        layers = list(self.layers)

        def head(x: Tensor, context: Any) -> tuple[Tensor, Any]:
            return (layers[0](x, mods, rotary) if layers else x), context

        def tail(x: Tensor, context: Any) -> Tensor:
            for layer in layers[1:]:
                x = layer(x, mods, rotary)
            return x

        # the first block apart: a step cache decides after it whether the others run
        x = self.final_norm(run_blocks(cache, x, None, head, tail), temb)
        out = self.final_linear(take_slice(x, 0, rows * columns, axis=1))
        return permute(out, (0, 2, 1)).reshape(batch, out.shape[2], rows, columns)

