"""The Helios transformer (diffusers' HeliosTransformer3DModel names): PKU-YuanGroup's 14B
real-time long-video model, Wan 2.1's transformer made autoregressive. Each call denoises one
chunk of latent frames in front of which stand the frames made before it, as history
tokens: the last few at full resolution (`patch_short`), older ones 2x (`patch_mid`) and 4x
(`patch_long`) coarser in time and space; the history tokens take timestep 0, the text only
reaches the chunk's tokens, and the output is the chunk's (models.helios_blocks).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, nn, permute, take_slice

from .helios_blocks import HeliosTransformerBlock, pooled_rope, replicate_pad
from .layers import Place, ProjOutPlace
from .transformer_ops import cast, kept, modulate
from .wan import wan_patches
from .wan_blocks import Segment, chunks
from .wan_embeddings import PatchEmbedding, WanTimeTextEmbedding

__all__ = ["HeliosTransformer3DModel"]

_DEFAULTS: dict[str, Any] = {
    "patch_size": (1, 2, 2), "num_attention_heads": 40, "attention_head_dim": 128,
    "in_channels": 16, "out_channels": 16, "text_dim": 4096, "freq_dim": 256,
    "ffn_dim": 13824, "num_layers": 40, "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads", "eps": 1e-6, "added_kv_proj_dim": None,
    "rope_dim": (44, 42, 42), "rope_theta": 10000.0, "guidance_cross_attn": True,
    "zero_history_timestep": True, "has_multi_term_memory_patch": True,
    "is_amplify_history": False, "history_scale_mode": "per_head",
}
# the history scales: (name, coarsening of the patch, diffusers' latent padding multiple)
_HISTORY = (("long", 4), ("mid", 2), ("short", 1))


class _OutputNorm(nn.Module):
    """norm_out.scale_shift_table (1, 2, dim): the final shift and scale. diffusers:
    `HeliosOutputNorm`."""

    def __init__(self, dim: int, place: Place) -> None:
        self.scale_shift_table = nn.parameter((1, 2, dim), **place)


class HeliosTransformer3DModel(ProjOutPlace, nn.Module):
    """A noisy chunk (B, in_channels, F, H, W), its history and UMT5 states (B, Lt, text_dim)
    -> the chunk's flow (B, out_channels, F, H, W).

    Config: `transformer/config.json` of a Helios folder (diffusers' fields). Parameter names
    are diffusers' (`patch_embedding.weight`, `patch_short.weight`, `patch_mid.weight`,
    `patch_long.weight`, `condition_embedder.time_proj.weight`,
    `blocks.0.attn1.history_key_scale`, `norm_out.scale_shift_table`, ...). diffusers:
    `HeliosTransformer3DModel(hidden_states, timestep, encoder_hidden_states,
    indices_hidden_states, ..., latents_history_long).sample`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        if cfg["qk_norm"] != "rms_norm_across_heads":
            raise ValueError(f"Helios qk_norm {cfg['qk_norm']!r} is not supported; this model "
                             "implements 'rms_norm_across_heads'")
        if cfg["added_kv_proj_dim"] is not None:
            raise ValueError("a Helios transformer with added_kv_proj_dim (image "
                             "cross-attention) is not supported; use a text-to-video folder")
        if cfg["history_scale_mode"] not in ("per_head", "scalar"):
            raise ValueError(f"history_scale_mode {cfg['history_scale_mode']!r} is not "
                             "Helios'; use 'per_head' or 'scalar'")
        if sum(cfg["rope_dim"]) != cfg["attention_head_dim"]:
            raise ValueError(f"rope_dim {tuple(cfg['rope_dim'])} does not add up to the "
                             f"head's {cfg['attention_head_dim']} features")
        self.config = cfg
        place: Place = {"dtype": dtype, "device": device}
        dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        pt, ph, pw = (int(p) for p in cfg["patch_size"])
        self.patch = (pt, ph, pw)
        out_channels = cfg["out_channels"] or cfg["in_channels"]
        self.patch_embedding = PatchEmbedding(cfg["in_channels"], dim, self.patch, place)
        if cfg["has_multi_term_memory_patch"]:
            for name, scale in _HISTORY:
                setattr(self, f"patch_{name}", PatchEmbedding(
                    cfg["in_channels"], dim, (scale * pt, scale * ph, scale * pw), place))
        self.condition_embedder = WanTimeTextEmbedding({**cfg, "image_dim": None}, dim, place)
        self.blocks = nn.ModuleList([HeliosTransformerBlock(cfg, place)
                                     for _ in range(cfg["num_layers"])])
        self.norm_out = _OutputNorm(dim, place)
        self.proj_out = nn.Linear(dim, out_channels * math.prod(self.patch), **place)
        self._tables: dict[Any, tuple[Tensor, Tensor]] = {}

    def encode_text(self, states: Tensor) -> Tensor:
        """UMT5 states (B, Lt, text_dim) -> the blocks' context (B, Lt, dim); the same for
        every step (a pipeline computes it once)."""
        return self.condition_embedder.text_embedder(cast(states, self.dtype))

    def rotary(self, parts: tuple[tuple[tuple[int, ...], int], ...], rows: int, columns: int
               ) -> tuple[Tensor, Tensor]:
        """cos/sin (L, 1, D) of the token groups in order, each (frame indices, pool) over
        the rows x columns patch grid (`pooled_rope`), kept on the device."""
        def make() -> tuple[Tensor, Tensor]:
            at, ah, aw = (int(a) for a in self.config["rope_dim"])
            tables = [pooled_rope(np.asarray(frames), rows, columns, (at, ah, aw),
                                  float(self.config["rope_theta"]), pool)
                      for frames, pool in parts]
            cos, sin = (np.concatenate([t[i] for t in tables]).astype(np.float32)
                        for i in (0, 1))
            return (asarray(cos[:, None], device=self.device),
                    asarray(sin[:, None], device=self.device))
        return kept(self._tables, (parts, rows, columns, self.device), make)

    def _history(self, history: dict[str, tuple[Tensor, Any]]
                 ) -> tuple[list[Tensor], list[tuple[tuple[int, ...], int]]]:
        """The embedded history tokens (long, mid, short as given) and their rope groups."""
        tokens, parts = [], []
        for name, scale in _HISTORY:
            if name not in history:
                continue
            if not self.config["has_multi_term_memory_patch"]:
                raise ValueError("this Helios transformer has no history patch embeddings "
                                 "(has_multi_term_memory_patch false); give no history")
            latents, frames = history[name]
            pt, ph, pw = self.patch
            patch = (scale * pt, scale * ph, scale * pw)
            padded = replicate_pad(cast(latents, self.dtype), patch)
            patches, _ = wan_patches(padded, patch)
            tokens.append(getattr(self, f"patch_{name}")(patches))
            parts.append((tuple(int(f) for f in np.asarray(frames).reshape(-1)), scale))
        return tokens, parts

    def forward(self, hidden_states: Tensor, timestep: Any, encoder_hidden_states: Tensor | None,
                *, context: Tensor | None = None, indices_hidden_states: Any = None,
                history: dict[str, tuple[Tensor, Any]] | None = None) -> Tensor:
        """hidden_states (B, C, F, H, W), H and W multiples of 2 x the patch where a history
        is given; timestep (B,) host numbers on the 0..1000 scale; encoder_hidden_states
        (B, Lt, text_dim), or `context` = `encode_text(...)`. indices_hidden_states: the
        chunk's F frame positions (default 0..F-1). history: {"short" / "mid" / "long":
        (latents (B, C, F', H, W), their F' frame positions)}, each optional (diffusers'
        `latents_history_short` with `indices_latents_history_short`, ...)."""
        batch, _, frames, height, width = hidden_states.shape
        pt, ph, pw = self.patch
        # 1. the chunk's patches; the history's, coarser ones first, in front of them
        patches, grid = wan_patches(cast(hidden_states, self.dtype), self.patch)
        x = self.patch_embedding(patches)
        indices = tuple(range(grid[0])) if indices_hidden_states is None else \
            tuple(int(f) for f in np.asarray(indices_hidden_states).reshape(-1))
        tokens, parts = self._history(history or {})
        chunk = x.shape[1]
        x = concatenate([*tokens, x], axis=1) if tokens else x
        before = x.shape[1] - chunk
        tables = self.rotary((*parts, (indices, 1)), grid[1], grid[2])
        # 2. the time: the history's tokens at timestep 0 (zero_history_timestep)
        temb, projection = self.condition_embedder(np.asarray(timestep, np.float32).reshape(-1),
                                                   self.device)
        segments: list[Segment] = [(0, x.shape[1], projection)]
        if before and self.config["zero_history_timestep"]:
            _, zero = self.condition_embedder(np.zeros(batch, np.float32), self.device)
            segments = [(0, before, zero), (before, x.shape[1], projection)]
        if context is None:
            if encoder_hidden_states is None:
                raise ValueError("give the UMT5 states or their context")
            context = self.encode_text(encoder_hidden_states)
        # 3. the blocks, then the chunk's tokens through the final modulated norm
        for block in self.blocks:
            x = block(x, context, segments, tables, before)
        x = take_slice(x, before, x.shape[1], axis=1) if before else x
        shift, scale = chunks(self.norm_out.scale_shift_table + temb.reshape(batch, 1, -1), 2)
        x = self.proj_out(modulate(nn.layer_norm(x, None, None, eps=self.config["eps"]),
                                   shift, scale))
        out = permute(x.reshape(batch, *grid, pt, ph, pw, -1), (0, 7, 1, 4, 2, 5, 3, 6))
        return out.reshape(batch, -1, frames, height, width)
