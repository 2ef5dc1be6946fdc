"""The Qwen-Image 2.1 transformer (diffusers' QwenImage21Transformer2DModel names): single-stream
blocks over one sequence [prompt tokens, target image's latent tokens] (latents unpatched:
patch_size 1), one shared `modulation` of the timestep's embedding for every block, and
block-causal attention: a prompt token sees the prompt up to itself, an image token the whole
prompt and the whole image. The prompt's tokens are modulated from t = 0
(`causal_condition`), so they depend on neither the image nor the step: `prefix` runs them
once per prompt and keeps each block's keys and values, and every step (`forward`) runs the
image's tokens alone against them (diffusers' kv_cache "extract" then "cached").

Text-to-image only: Qwen-Image-Edit 2.1's condition images (blocks of latents inside the
prompt, bidirectional within each, modulated from t = 0 too) would join the prefix; the
positions (`qwen_image21_positions`) already lay out such sequences.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, nn, zeros

from .flux2 import Flux2TimestepGuidanceEmbeddings
from .layers import Place
from .qwen_image21_blocks import (
    QwenImage21TextProjection,
    QwenImage21TransformerBlock,
    ScaleGates,
    scale_norm,
)
from .step_cache import BranchCache, run_blocks
from .transformer_ops import kept, rope_heads, rope_tables

__all__ = ["QwenImage21Prefix", "QwenImage21Transformer2DModel", "qwen_image21_positions"]

_DEFAULTS: dict[str, Any] = {
    "patch_size": 1, "in_channels": 64, "out_channels": 64, "num_layers": 32,
    "attention_head_dim": 128, "num_attention_heads": 32, "context_in_dim": 4096,
    "mlp_ratio": 3, "axes_dims_rope": (16, 56, 56), "eps": 1e-6, "causal_condition": True,
}
_ROPE_THETA = 10000.0
_ROPE_RANGE = (-1024, 8191)  # diffusers' tables: positions 0..8191, then -1024..-1


def qwen_image21_positions(layout: Sequence[int | tuple[int, int]]) -> np.ndarray:
    """Rotary positions (tokens, 3) (frame, row, column) of a sequence laid out as `layout`:
    an int is a run of that many prompt tokens, a (rows, columns) pair an image block
    (row-major). A prompt token takes the running position p on all three axes (p += 1); an
    image block frame p, rows and columns centred on zero (row - ceil(rows / 2)), then
    p += max(rows, columns). Text-to-image: `[prompt tokens, (rows, columns)]`. diffusers:
    `QwenImage21Rope.forward(img_shapes, image_pad_mask)` (its indices)."""
    parts, position = [], 0
    for item in layout:
        if isinstance(item, tuple):
            rows, columns = item
            grid = np.meshgrid(np.arange(rows) - (rows - rows // 2),
                               np.arange(columns) - (columns - columns // 2), indexing="ij")
            parts.append(np.stack([np.full_like(grid[0], position), *grid], -1).reshape(-1, 3))
            position += max(rows, columns)
        else:
            parts.append(np.repeat(np.arange(position, position + item)[:, None], 3, axis=1))
            position += item
    ids = np.concatenate(parts).astype(np.int64)
    if ids.size and (ids.min() < _ROPE_RANGE[0] or ids.max() > _ROPE_RANGE[1]):
        raise ValueError(f"the sequence {list(layout)} passes Qwen-Image 2.1's rotary positions "
                         f"{_ROPE_RANGE}; use a smaller picture or a shorter prompt")
    return ids


@dataclass
class QwenImage21Prefix:
    """One prompt batch's part of every step: each block's keys (normed and rotated) and
    values of the prompt tokens, (B, Lt, heads * head_dim), and `keep` (B, Lt) True for the
    tokens attended to (None: all). Made by `QwenImage21Transformer2DModel.prefix`, read by
    its forward. diffusers: `QwenImage21KVCache` after an "extract" step."""

    keys: list[Tensor]
    values: list[Tensor]
    keep: np.ndarray | None
    _masks: dict[Any, Tensor | None] = field(default_factory=dict, repr=False)

    @property
    def batch(self) -> int:
        return self.keys[0].shape[0]

    @property
    def length(self) -> int:
        return self.keys[0].shape[1]

    def mask(self, image_tokens: int) -> Tensor | None:
        """The keys an image token attends to, (B, 1, 1, Lt + image_tokens) uint32 nonzero
        for kept (the prompt's padding out), None without padding; kept on the device."""
        if self.keep is None:
            return None
        keep, device = self.keep, self.keys[0].device
        rows = np.concatenate([keep, np.ones((keep.shape[0], image_tokens), bool)], axis=1)
        return kept(self._masks, image_tokens, lambda: asarray(
            rows.astype(np.uint32).reshape(keep.shape[0], 1, 1, -1), device=device))


class _ScaleNormOut(nn.Module):
    """layer_norm(x) * (1 + linear(silu(temb))); no shift, no bias. diffusers:
    `QwenImage21AdaLayerNormContinuous`."""

    def __init__(self, dim: int, place: Place) -> None:
        self.linear = nn.Linear(dim, dim, False, **place)

    def forward(self, x: Tensor, activated: Tensor, zeros: Tensor, eps: float) -> Tensor:
        """x (B, L, D), activated = silu(temb) (B, D), zeros (B, 1, D) (scale_norm's)."""
        scale = self.linear(activated)
        return scale_norm(x, zeros, scale.reshape(scale.shape[0], 1, -1), 0, eps)


class QwenImage21Transformer2DModel(nn.Module):
    """Latents (B, rows * columns, in_channels) and a prompt's states -> the flow
    (B, rows * columns, out_channels), in two calls: `prefix(encoder_hidden_states,
    encoder_mask)` once per prompt, then `forward(hidden_states, timestep, rows, columns,
    prefix)` every step.

    Config: `transformer/config.json` of a Qwen-Image 2.1 folder (diffusers' fields;
    `causal_condition` must be true, as the released models set it). Parameter names are
    diffusers' (`img_in.weight`, `txt_in.text_norm.weight`, `modulation.1.weight`,
    `transformer_blocks.0.attn.to_q.weight`, `transformer_blocks.0.img_mlp.gate_layer.weight`,
    `norm_out.linear.weight`, ...). diffusers: `QwenImage21Transformer2DModel(hidden_states,
    encoder_hidden_states, timestep, img_shapes, img_mask, encoder_hidden_states_mask)
    .sample[:, -rows * columns:]`, its kv_cache giving the same.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        if not cfg["causal_condition"]:
            raise ValueError("this Qwen-Image 2.1 transformer sets causal_condition false, "
                             "which is not supported; use a released Qwen-Image 2.1 model")
        self.config = cfg
        place: Place = {"dtype": dtype, "device": device}
        heads, head_dim = rope_heads(cfg)
        dim, eps, patch = heads * head_dim, cfg["eps"], cfg["patch_size"]
        self.time_text_embed = Flux2TimestepGuidanceEmbeddings(256, dim, place, guidance=False)
        self.txt_in = QwenImage21TextProjection(cfg["context_in_dim"], dim, eps, place)
        self.img_in = nn.Linear(cfg["in_channels"] * patch * patch, dim, False, **place)
        self.modulation = nn.ModuleList([nn.Identity(), nn.Linear(dim, 4 * dim, False, **place)])
        self.transformer_blocks = nn.ModuleList(
            [QwenImage21TransformerBlock(dim, heads, head_dim, dim * cfg["mlp_ratio"], eps, place)
             for _ in range(cfg["num_layers"])])
        self.norm_out = _ScaleNormOut(dim, place)
        out_channels = cfg["out_channels"] or cfg["in_channels"]
        self.proj_out = nn.Linear(dim, patch * patch * out_channels, False, **place)
        self._tables: dict[Any, Any] = {}  # rotary tables per layout (transformer_ops.kept)
        self._shifts: dict[Any, Tensor] = {}  # zero shifts per shape

    @property
    def device(self) -> Device:
        return self.img_in.weight.device

    @property
    def dtype(self) -> np.dtype:
        return self.img_in.weight.dtype

    def _temb(self, timestep: Any) -> Tensor:
        """The timestep's embedding (B, dim) of host sigmas in [0, 1] (diffusers rounds them
        to the model's dtype, then scales by 1000 in float32)."""
        t = np.asarray(timestep, self.dtype).reshape(-1).astype(np.float32) * np.float32(1000)
        return self.time_text_embed(t, None, self.device)

    def _modulation(self, activated: Tensor) -> ScaleGates:
        """The shared modulation of silu(temb) (B, dim), its scales read by the norms."""
        emb = self.modulation[1](activated)
        return ScaleGates(emb, self._zeros(emb.shape), self.config["eps"])

    def _zeros(self, shape: tuple[int, ...]) -> Tensor:
        """Zeros (B, 1, W): the shift of the scale-only norms, kept on the device."""
        batch, width = shape
        return kept(self._shifts, (batch, width, self.device),
                    lambda: zeros((batch, 1, width), self.dtype, device=self.device))

    def _rope(self, layout: Sequence[int | tuple[int, int]], start: int = 0
              ) -> tuple[Tensor, Tensor]:
        """cos/sin tables of the layout's positions from token `start` on, kept per layout."""
        def make() -> tuple[Tensor, Tensor]:
            ids = qwen_image21_positions(layout)[start:]
            return rope_tables(ids, tuple(self.config["axes_dims_rope"]), _ROPE_THETA,
                               device=self.device)
        return kept(self._tables, (tuple(layout), start, self.device), make, count=8)

    def prefix(self, encoder_hidden_states: Tensor, encoder_mask: Any = None
               ) -> QwenImage21Prefix:
        """The prompt's part of every step. encoder_hidden_states (B, Lt, context_in_dim) in
        any float dtype (the Qwen3-VL encoder's last layer, before its final norm);
        encoder_mask (B, Lt) nonzero for real tokens, zero for the right padding, or None
        for all. diffusers: the transformer's first step with kv_cache_mode="extract"."""
        batch, length, _ = encoder_hidden_states.shape
        if length == 0:
            raise ValueError("the prompt's states hold no tokens; encode a prompt first")
        keep = None
        if encoder_mask is not None:
            keep = np.asarray(encoder_mask) != 0
            if keep.shape != (batch, length):
                raise ValueError(f"encoder_mask must be (batch, text tokens) = "
                                 f"{(batch, length)}, got {keep.shape}")
            if not keep[:, 0].all():
                raise ValueError("encoder_mask drops a prompt's first token: the prompts must "
                                 "be padded on the right, each with a token at least")
            keep = None if keep.all() else keep
        mask = None if keep is None else asarray(
            keep.astype(np.uint32).reshape(batch, 1, 1, length), device=self.device)
        # 1. the prompt's projection; its modulation from t = 0 (`causal_condition`)
        x: Tensor | None = self.txt_in(encoder_hidden_states)
        mods = self._modulation(nn.silu(self._temb(np.zeros(batch))))
        rotary = self._rope((length,))
        # 2. the blocks, each keeping the keys and values the image's tokens will read
        keys, values = [], []
        blocks = list(self.transformer_blocks)
        for index, block in enumerate(blocks):
            assert x is not None  # only the last block's text output is dropped
            x, k, v = block.text(x, mods, rotary, mask, last=index == len(blocks) - 1)
            keys.append(k)
            values.append(v)
        return QwenImage21Prefix(keys, values, keep)

    def forward(self, hidden_states: Tensor, timestep: Any, rows: int, columns: int,
                prefix: QwenImage21Prefix, *, cache: BranchCache | None = None) -> Tensor:
        """hidden_states (B, rows * columns, in_channels): the target's latent tokens,
        row-major; timestep (B,) host sigmas in [0, 1] (the pipeline's t / 1000); prefix:
        `prefix()` of the prompt batch -> the flow of the image's tokens. `cache`: a step
        cache branch (`step_cache.StepCache.branch()`) the blocks run through, its calls in
        step order. diffusers: the transformer with kv_cache_mode="cached"."""
        batch, length, _ = hidden_states.shape
        if length != rows * columns:
            raise ValueError(f"{length} image tokens are not {rows} x {columns} latents")
        if batch != prefix.batch or len(prefix.keys) != len(self.transformer_blocks):
            raise ValueError(f"the prefix holds {prefix.batch} prompts for "
                             f"{len(prefix.keys)} blocks, the latents {batch} pictures for "
                             f"{len(self.transformer_blocks)}; make it with this model's "
                             "prefix() for as many prompts as pictures")
        # 1. the timestep's modulation, one SiLU for it and norm_out; the image's tokens
        activated = nn.silu(self._temb(timestep))
        mods = self._modulation(activated)
        x = self.img_in(hidden_states)
        layout = (prefix.length, (rows, columns))
        joint = self._rope(layout)
        rotary = self._rope(layout, prefix.length)
        mask = prefix.mask(length)
        blocks = list(self.transformer_blocks)

        def run(index: int, x: Tensor) -> Tensor:
            return blocks[index].image(x, mods, rotary, joint, prefix.keys[index],
                                       prefix.values[index], mask)

        def head(x: Tensor, context: Any) -> tuple[Tensor, Any]:
            return (run(0, x) if blocks else x), context

        def tail(x: Tensor, context: Any) -> Tensor:
            for index in range(1, len(blocks)):
                x = run(index, x)
            return x

        # 2. the blocks (the first apart: a step cache decides after it whether the others
        # run); 3. the final scale-only norm and projection
        x = run_blocks(cache, x, None, head, tail)
        zeros = self._zeros(activated.shape)
        return self.proj_out(self.norm_out(x, activated, zeros, self.config["eps"]))
