"""The Qwen-Image 2.1 transformer (diffusers' QwenImage21Transformer2DModel names): single-stream
blocks over one sequence [prefix, target picture's latent tokens] (latents unpatched:
patch_size 1), one shared `modulation` of the timestep's embedding for every block, and
block-causal attention. The prefix is the prompt's text tokens with any condition pictures'
latent blocks where the prompt holds their image pads (editing); a text token sees the tokens
up to itself, a picture's token those before its picture and all of its picture, the target's
everything. The prefix's tokens are modulated from t = 0 (`causal_condition`), so they depend
on neither the target nor the step: `prefix` runs them once per prompt and keeps each block's
keys and values, and every step (`forward`) runs the target's tokens alone against them
(diffusers' kv_cache "extract" then "cached").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, nn, zeros
from gpustd.shape import take_slice

from .flux2 import Flux2TimestepGuidanceEmbeddings
from .layers import Place
from .qwen_image21_blocks import (
    QwenImage21TextProjection,
    QwenImage21TransformerBlock,
    ScaleGates,
    scale_norm,
)
from .qwen_image21_layout import (
    Layout,
    prefix_keep,
    prefix_layout,
    prefix_segments,
    qwen_image21_positions,
)
from .step_cache import BranchCache, run_blocks
from .transformer_ops import cast, kept, rope_heads, rope_tables

__all__ = ["QwenImage21Prefix", "QwenImage21Transformer2DModel", "qwen_image21_positions"]

_DEFAULTS: dict[str, Any] = {
    "patch_size": 1, "in_channels": 64, "out_channels": 64, "num_layers": 32,
    "attention_head_dim": 128, "num_attention_heads": 32, "context_in_dim": 4096,
    "mlp_ratio": 3, "axes_dims_rope": (16, 56, 56), "eps": 1e-6, "causal_condition": True,
}
_ROPE_THETA = 10000.0


@dataclass
class QwenImage21Prefix:
    """One prompt batch's part of every step: each block's keys (normed and rotated) and
    values of the prefix's tokens (the prompt's text, any condition pictures' latents among
    it), (B, Lp, heads * head_dim), `keep` (B, Lp) True for the tokens attended to (None:
    all) and the prefix's `layout` (qwen_image21_layout's: text runs and picture blocks).
    Made by `QwenImage21Transformer2DModel.prefix`, read by its forward. diffusers:
    `QwenImage21KVCache` after an "extract" step."""

    keys: list[Tensor]
    values: list[Tensor]
    keep: np.ndarray | None
    layout: tuple[int | tuple[int, int], ...]
    _masks: dict[Any, Tensor | None] = field(default_factory=dict, repr=False)

    @property
    def batch(self) -> int:
        return self.keys[0].shape[0]

    @property
    def length(self) -> int:
        return self.keys[0].shape[1]

    def mask(self, image_tokens: int) -> Tensor | None:
        """The keys a target token attends to, (B, 1, 1, Lp + image_tokens) uint32 nonzero
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
        """The timestep's embedding (B, dim) of sigmas in [0, 1], host numbers or a float32
        Tensor (a replayed step's, rounded on the device alike: diffusers rounds them to the
        model's dtype, then scales by 1000 in float32)."""
        t: Any
        if isinstance(timestep, Tensor):
            if timestep.dtype != np.float32:
                raise TypeError(f"a timestep Tensor must be float32, got {timestep.dtype}")
            t = timestep.reshape(-1)
            if self.dtype != np.float32:
                t = cast(cast(t, self.dtype), np.float32)
            t = t * 1000.0
        else:
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

    def prefix(self, encoder_hidden_states: Tensor, encoder_mask: Any = None, *,
               image_pad_mask: Any = None, condition_latents: Any = None,
               condition_shapes: Sequence[tuple[int, int]] = ()) -> QwenImage21Prefix:
        """The prompt's part of every step. encoder_hidden_states (B, L, context_in_dim) in
        any float dtype (the Qwen3-VL encoder's last layer, before its final norm);
        encoder_mask (B, L) nonzero for real tokens, zero for the right padding, or None
        for all. Editing: image_pad_mask (B, L) or (L,) bool True at the prompt's image pads
        (the same in every row; their states are not read), condition_latents (B,
        sum of rows * columns, in_channels) the condition pictures' packed latents one after
        the other, condition_shapes their (rows, columns), in the order of their pads, each
        picture taking rows * columns / 4 pads. diffusers: the transformer's first step with
        kv_cache_mode="extract" (`img_mask` the pads then the target's slots, `hidden_states`
        the condition latents then the target's, `img_shapes` their shapes then the target's)."""
        batch, length, _ = encoder_hidden_states.shape
        if length == 0:
            raise ValueError("the prompt's states hold no tokens; encode a prompt first")
        layout = prefix_layout(length, _pad_row(image_pad_mask, batch, length),
                               list(condition_shapes))
        pictures = [item for item in layout if isinstance(item, tuple)]
        if pictures and condition_latents is None:
            raise ValueError(f"the prompt holds image pads for {len(pictures)} condition "
                             "pictures but no condition_latents were given; pass their latents")
        keep = None
        if encoder_mask is not None:
            keep = np.asarray(encoder_mask) != 0
            if keep.shape != (batch, length):
                raise ValueError(f"encoder_mask must be (batch, text tokens) = "
                                 f"{(batch, length)}, got {keep.shape}")
        keep = prefix_keep(layout, keep)
        if keep is not None and not keep[:, 0].all():
            raise ValueError("encoder_mask drops a prompt's first token: the prompts must "
                             "be padded on the right, each with a token at least")
        # 1. the text's and the pictures' projections; their modulation from t = 0
        # (`causal_condition`); the block-causal attention's segments, shared by the blocks
        x: Tensor | None = self._prefix_tokens(encoder_hidden_states, condition_latents, layout)
        mods = self._modulation(nn.silu(self._temb(np.zeros(batch))))
        rotary = self._rope(layout)
        segments = prefix_segments(layout, keep, self.device)
        # 2. the blocks, each keeping the keys and values the target's tokens will read
        keys, values = [], []
        blocks = list(self.transformer_blocks)
        for index, block in enumerate(blocks):
            assert x is not None  # only the last block's prefix output is dropped
            x, k, v = block.prefix(x, mods, rotary, segments, last=index == len(blocks) - 1)
            keys.append(k)
            values.append(v)
        return QwenImage21Prefix(keys, values, keep, tuple(layout))

    def _prefix_tokens(self, states: Tensor, latents: Any, layout: Layout) -> Tensor:
        """The prefix's tokens (B, Lp, dim): txt_in of each text run's states, img_in of each
        picture's latents, in the layout's order. diffusers: `txt_in`, `img_in` and the
        latents written over the pads' repeated states."""
        if latents is not None:
            latents = asarray(latents, dtype=self.dtype, device=self.device)
            tokens = sum(item[0] * item[1] for item in layout if isinstance(item, tuple))
            expected = (states.shape[0], tokens, self.config["in_channels"])
            if latents.shape != expected:
                raise ValueError(f"condition_latents must be (batch, latent tokens, channels) = "
                                 f"{expected}, got {latents.shape}")
        parts, text, image = [], 0, 0
        for item in layout:
            if isinstance(item, tuple):
                end = image + item[0] * item[1]
                parts.append(self.img_in(_run(latents, image, end)))
                text, image = text + (end - image) // 4, end
            else:
                parts.append(self.txt_in(_run(states, text, text + item)))
                text += item
        return parts[0] if len(parts) == 1 else concatenate(parts, axis=1)

    def forward(self, hidden_states: Tensor, timestep: Any, rows: int, columns: int,
                prefix: QwenImage21Prefix, *, cache: BranchCache | None = None) -> Tensor:
        """hidden_states (B, rows * columns, in_channels): the target's latent tokens,
        row-major; timestep (B,) sigmas in [0, 1] (the pipeline's t / 1000), host numbers or a
        float32 Tensor (a replayed step's); prefix:
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
        layout = (*prefix.layout, (rows, columns))
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


def _pad_row(image_pad_mask: Any, batch: int, length: int) -> np.ndarray | None:
    """The prompts' one image-pad row (L,) bool of a (B, L) or (L,) mask (None: none); the
    transformer reads one layout for the batch, as diffusers reads `img_mask[0]`."""
    if image_pad_mask is None:
        return None
    pads = np.asarray(image_pad_mask).astype(bool)
    if pads.ndim == 1:
        pads = pads[None]
    if pads.ndim != 2 or pads.shape[1] != length or len(pads) not in (1, batch):
        raise ValueError(f"image_pad_mask must be (batch, text tokens) = {(batch, length)}, got "
                         f"{np.shape(image_pad_mask)}")
    if (pads != pads[0]).any():
        raise ValueError("the prompts' image pads sit at different places; encode prompts "
                         "that share their layout (their condition pictures first) together")
    return pads[0]


def _run(x: Tensor, start: int, end: int) -> Tensor:
    """x[:, start:end] (x itself when that is all of it)."""
    return x if (start, end) == (0, x.shape[1]) else take_slice(x, start, end, axis=1)
