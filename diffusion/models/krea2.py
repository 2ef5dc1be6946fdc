"""The Krea 2 transformer (diffusers' Krea2Transformer2DModel names): a single-stream DiT over
[text, image] tokens. The prompt enters as a text encoder's hidden states tapped at several
layers (Qwen3-VL-4B's, 12 of them); `text_fusion` attends across those layers per token,
collapses them with a linear `projector` and refines the tokens, and `txt_in` projects them to
the transformer's width. The timestep conditions every block through one shared
`time_mod_proj` output plus each block's learned table; grouped-query attention with q/k
norms, a sigmoid output gate and 3-axis rotary positions (text at the origin, each 2 x 2 latent
patch at (0, row, column)).

The text path does not read the timestep, so it runs once per prompt (`text`), and every step
(`forward`) reads its tokens. The prompt's padding is dropped there rather than masked: a
padded token is never a key (diffusers' key-padding mask), its own row is never read back,
and every text token sits at position 0, so the kept tokens alone give the same output.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, nn, permute, take_slice

from .krea2_blocks import (
    Krea2FinalLayer,
    Krea2TextFusionBlock,
    Krea2TextProjection,
    Krea2TransformerBlock,
)
from .layers import Place
from .step_cache import BranchCache, run_blocks
from .transformer_ops import cast, kept, rope_tables

__all__ = ["Krea2Transformer2DModel", "pack_latents", "unpack_latents"]

_DEFAULTS: dict[str, Any] = {
    "in_channels": 64, "num_layers": 28, "attention_head_dim": 128, "num_attention_heads": 48,
    "num_key_value_heads": 12, "intermediate_size": 16384, "timestep_embed_dim": 256,
    "text_hidden_dim": 2560, "num_text_layers": 12, "text_num_attention_heads": 20,
    "text_num_key_value_heads": 20, "text_intermediate_size": 6912,
    "num_layerwise_text_blocks": 2, "num_refiner_text_blocks": 2,
    "axes_dims_rope": (32, 48, 48), "rope_theta": 1000.0, "norm_eps": 1e-5,
}
PATCH = 2  # the pipeline's patch_size: 2 x 2 latents a token


def pack_latents(latents: np.ndarray, patch: int = PATCH) -> np.ndarray:
    """(B, C, h, w) -> (B, h/p * w/p, C * p * p): each patch's (C, p, p) flattened, row-major.
    diffusers: `Krea2Pipeline._pack_latents`."""
    batch, channels, height, width = latents.shape
    if height % patch or width % patch:
        raise ValueError(f"latents of {height} x {width} do not split into {patch} x {patch} "
                         f"patches; use a picture size divisible by {8 * patch}")
    patches = latents.reshape(batch, channels, height // patch, patch, width // patch, patch)
    return patches.transpose(0, 2, 4, 1, 3, 5).reshape(batch, -1, channels * patch * patch)


def unpack_latents(tokens: np.ndarray, rows: int, columns: int,
                   patch: int = PATCH) -> np.ndarray:
    """pack_latents' inverse: (B, rows * columns, C * p * p) -> (B, C, rows * p, columns * p).
    diffusers: `Krea2Pipeline._unpack_latents` without its frame axis."""
    batch, length, width = tokens.shape
    if length != rows * columns or width % (patch * patch):
        raise ValueError(f"tokens {tokens.shape} are not {rows} x {columns} patches of "
                         f"{patch} x {patch} latents")
    channels = width // (patch * patch)
    patches = tokens.reshape(batch, rows, columns, channels, patch, patch)
    return patches.transpose(0, 3, 1, 4, 2, 5).reshape(batch, channels, rows * patch,
                                                       columns * patch)


class Krea2TimestepEmbedding(nn.Module):
    """linear_2(gelu_tanh(linear_1([cos, sin] of t * 1000))). diffusers:
    `Krea2TimestepEmbedding`."""

    def __init__(self, embed_dim: int, dim: int, place: Place) -> None:
        self.dtype, self.embed_dim = place["dtype"], embed_dim
        self.linear_1 = nn.Linear(embed_dim, dim, **place)
        self.linear_2 = nn.Linear(dim, dim, **place)

    def forward(self, t: np.ndarray, device: Device) -> Tensor:
        """t (B,) host float32, already times 1000 -> (B, dim)."""
        features = nn.timestep_embedding(t, self.embed_dim, flip_sin_to_cos=True,
                                         downscale_freq_shift=0, dtype=self.dtype,
                                         device=device)
        return self.linear_2(self.linear_1.gelu(features, approximate="tanh"))


class Krea2TextFusion(nn.Module):
    """`layerwise_blocks` attending across the tapped layers of each token, a `projector`
    (num_text_layers -> 1, no bias) collapsing them, `refiner_blocks` attending across the
    tokens; a float32 stream throughout (Krea2TextFusionBlock). diffusers: `Krea2TextFusion`."""

    # --int8 leaves the projector float (models.int8): 12 weights read over the float32 stream
    float_linears = ("projector",)

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        dim, eps = cfg["text_hidden_dim"], cfg["norm_eps"]
        sizes = (dim, cfg["text_num_attention_heads"], cfg["text_num_key_value_heads"],
                 cfg["text_intermediate_size"], eps, place)
        self.layerwise_blocks = nn.ModuleList(
            [Krea2TextFusionBlock(*sizes) for _ in range(cfg["num_layerwise_text_blocks"])])
        self.projector = nn.Linear(cfg["num_text_layers"], 1, False, dtype=np.float32,
                                   device=place["device"])
        self.refiner_blocks = nn.ModuleList(
            [Krea2TextFusionBlock(*sizes) for _ in range(cfg["num_refiner_text_blocks"])])

    def forward(self, states: Tensor) -> Tensor:
        """states (L, num_text_layers, dim) float32, the kept tokens' -> (1, L, dim) float32."""
        length, _, dim = states.shape
        x = states
        for block in self.layerwise_blocks:
            x = block(x)
        weight = self.projector.weight  # float32 unless a load cast every weight
        x = nn.linear(permute(x, (0, 2, 1)), cast(weight, np.float32)).reshape(1, length, dim)
        for block in self.refiner_blocks:
            x = block(x)
        return x


class Krea2Transformer2DModel(nn.Module):
    """A prompt's tapped hidden states and packed latents -> the flow (velocity), in two
    calls: `text(states, mask)` once per prompt, then `forward(latents, timestep, rows,
    columns, text_tokens)` every step.

    Config: `transformer/config.json` of a Krea 2 folder (diffusers' fields). Parameter names
    are diffusers' (`img_in.weight`, `time_embed.linear_1.weight`, `time_mod_proj.weight`,
    `text_fusion.layerwise_blocks.0.attn.to_q.weight`, `text_fusion.projector.weight`,
    `txt_in.norm.weight`, `transformer_blocks.0.scale_shift_table`,
    `transformer_blocks.0.ff.gate.weight`, `final_layer.linear.weight`, ...). The RMS norms'
    weights are float32 whatever the dtype (Krea2RMSNorm). diffusers:
    `Krea2Transformer2DModel(latents, states, timestep, position_ids, mask).sample`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        heads, head_dim = cfg["num_attention_heads"], cfg["attention_head_dim"]
        if sum(cfg["axes_dims_rope"]) != head_dim:
            raise ValueError(f"axes_dims_rope {tuple(cfg['axes_dims_rope'])} must add up to "
                             f"attention_head_dim {head_dim}")
        for prefix in ("", "text_"):
            q, kv = cfg[f"{prefix}num_attention_heads"], cfg[f"{prefix}num_key_value_heads"]
            if q % kv:
                raise ValueError(f"{prefix}num_attention_heads {q} is not a multiple of "
                                 f"{prefix}num_key_value_heads {kv}")
        self.config = cfg
        place: Place = {"dtype": dtype, "device": device}
        dim, eps, channels = heads * head_dim, cfg["norm_eps"], cfg["in_channels"]
        self.img_in = nn.Linear(channels, dim, **place)
        self.time_embed = Krea2TimestepEmbedding(cfg["timestep_embed_dim"], dim, place)
        self.time_mod_proj = nn.Linear(dim, 6 * dim, **place)
        self.text_fusion = Krea2TextFusion(cfg, place)
        self.txt_in = Krea2TextProjection(cfg["text_hidden_dim"], dim, eps, place)
        self.transformer_blocks = nn.ModuleList(
            [Krea2TransformerBlock(dim, heads, cfg["num_key_value_heads"],
                                   cfg["intermediate_size"], eps, place)
             for _ in range(cfg["num_layers"])])
        self.final_layer = Krea2FinalLayer(dim, channels, eps, place)
        self._tables: dict[Any, Any] = {}  # rotary tables per size (transformer_ops.kept)

    @property
    def device(self) -> Device:
        return self.img_in.weight.device

    @property
    def dtype(self) -> np.dtype:
        return self.img_in.weight.dtype

    def text(self, states: Any, mask: Any = None) -> Tensor:
        """The prompt's tokens every step reads: states (1, L, num_text_layers,
        text_hidden_dim) (a Tensor or an array, read in float32), mask (1, L) or (L,)
        nonzero for the tokens kept (None: all; Krea 2 pads in the middle of its template)
        -> (1, kept tokens, dim) in the model's dtype: text_fusion and txt_in of the kept
        tokens. diffusers: the transformer's `text_fusion` and `txt_in` under its mask."""
        cfg = self.config
        wanted = (cfg["num_text_layers"], cfg["text_hidden_dim"])
        shape = tuple(states.shape)
        if len(shape) != 4 or shape[0] != 1 or shape[2:] != wanted:
            raise ValueError(f"states must be (1, tokens, {wanted[0]}, {wanted[1]}) (one "
                             f"prompt's tapped hidden states), got {shape}")
        keep = np.ones(shape[1], bool) if mask is None else np.asarray(mask).astype(bool)
        if keep.shape not in ((shape[1],), (1, shape[1])):
            raise ValueError(f"mask must be (1, {shape[1]}) for states of {shape[1]} tokens, "
                             f"got {keep.shape}")
        keep = keep.reshape(-1)
        if not keep.any():
            raise ValueError("the mask keeps no text token; encode a prompt (an empty one "
                             "still has its template's tokens)")
        x = asarray(states, dtype=np.float32, device=self.device)
        edges = np.flatnonzero(np.diff(np.concatenate([[0], keep.astype(np.int8), [0]])))
        runs = [take_slice(x, int(a), int(b), axis=1) if (a, b) != (0, shape[1]) else x
                for a, b in zip(edges[::2], edges[1::2])]
        x = runs[0] if len(runs) == 1 else concatenate(runs, axis=1)
        return self.txt_in(self.text_fusion(x.reshape(-1, *wanted)))

    def _rotary(self, text: int, rows: int, columns: int) -> tuple[Tensor, Tensor]:
        """cos/sin of [text at (0, 0, 0), image at (0, row, column)], kept per size."""
        def make() -> tuple[Tensor, Tensor]:
            ids = np.zeros((text + rows * columns, 3), np.int64)
            ids[text:, 1] = np.repeat(np.arange(rows), columns)
            ids[text:, 2] = np.tile(np.arange(columns), rows)
            return rope_tables(ids, tuple(self.config["axes_dims_rope"]),
                               self.config["rope_theta"], device=self.device)
        return kept(self._tables, (text, rows, columns, self.device), make, count=8)

    def forward(self, latents: Any, timestep: Any, rows: int, columns: int, text: Tensor, *,
                cache: BranchCache | None = None) -> Tensor:
        """latents (1, rows * columns, in_channels): the packed latents (pack_latents),
        row-major; timestep: the flow time in [0, 1] (1 pure noise: the scheduler's t / 1000;
        rounded to the model's dtype as diffusers' pipeline rounds it), a host number or a
        float32 Tensor (a replayed step's, rounded on the device alike); text: `text()`'s
        tokens -> the velocity (1, rows * columns, in_channels) in the model's dtype.
        `cache`: a step cache branch (`step_cache.StepCache.branch()`) the blocks run
        through, its calls in step order."""
        dim = self.img_in.weight.shape[0]
        wanted = (1, rows * columns, self.config["in_channels"])
        if tuple(latents.shape) != wanted:
            raise ValueError(f"latents must be (1, rows * columns, in_channels) = {wanted} "
                             f"(one picture's packed latents), got {tuple(latents.shape)}")
        if not isinstance(text, Tensor) or text.ndim != 3 or text.shape[0] != 1 \
                or text.shape[2] != dim:
            raise ValueError(f"text must be this model's text() tokens (1, L, {dim}), got "
                             f"{getattr(text, 'shape', type(text).__name__)}")
        t: Any
        if isinstance(timestep, Tensor):
            if timestep.dtype != np.float32:
                raise TypeError(f"a timestep Tensor must be float32, got {timestep.dtype}")
            t = timestep.reshape(-1)
            t = (t if self.dtype == np.float32 else cast(cast(t, self.dtype), np.float32)
                 ) * 1000.0
        else:
            t = np.asarray(timestep, self.dtype).reshape(-1).astype(np.float32) * np.float32(
                1000)
        if tuple(t.shape) != (1,):
            raise ValueError(f"timestep must be one number for the one picture, got "
                             f"{t.shape[0]}")
        # 1. the time embedding and the blocks' shared modulation; [text, image] tokens
        temb = self.time_embed(t, self.device)
        temb_mod = self.time_mod_proj(nn.gelu(temb, approximate="tanh"))
        image = self.img_in(asarray(latents, dtype=self.dtype, device=self.device))
        x = concatenate([cast(text, self.dtype), image], axis=1)
        length = text.shape[1]
        rotary = self._rotary(length, rows, columns)
        blocks = list(self.transformer_blocks)

        def head(x: Tensor, context: Any) -> tuple[Tensor, Any]:
            return (blocks[0](x, temb_mod, rotary) if blocks else x), context

        def tail(x: Tensor, context: Any) -> Tensor:
            for block in blocks[1:]:
                x = block(x, temb_mod, rotary)
            return x

        # 2. the blocks (the first apart: a step cache decides after it whether the others
        # run); 3. the final layer over the image's tokens
        x = run_blocks(cache, x, None, head, tail)
        return self.final_layer(take_slice(x, length, x.shape[1], axis=1), temb)
