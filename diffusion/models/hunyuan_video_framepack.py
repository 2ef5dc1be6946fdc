"""FramePack's transformer (lllyasviel's next-frame-section packing on HunyuanVideo;
diffusers' HunyuanVideoFramepackTransformer3DModel names): HunyuanVideo 1.0's transformer
(hunyuan_video) over the section's noisy latents packed after the video's clean history —
the clean frames in 1 x 2 x 2 patches (`clean_x_embedder.proj`), older frames 2x and 4x
coarser (`proj_2x` 2 x 4 x 4, `proj_4x` 4 x 8 x 8, each padded by repeating its last frame,
row and column) — and SigLIP's image states projected (`image_projection`) ahead of the
prompt's tokens.

Every part's rotary positions are its frames' indices in the whole packed window (the
pipeline's), its rows and columns those of the full-size patches; the coarse parts' cos and
sin tables are the full-size ones averaged over their 2 x 2 x 2 / 4 x 4 x 4 patches
(diffusers' `_pad_rotary_emb`). What no timestep changes within a section is made once
(`prepare_history`), as the prompt's (`prepare_text`).

    model = HunyuanVideoFramepackTransformer3DModel(config, device=device)
    history = model.prepare_history(grid, indices, clean, clean_indices, ...)
    velocity = model(latents, timestep, states, mask, pooled, image_embeds, guidance=...,
                     history=history)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, nn, take_slice

from .hunyuan_video import HunyuanVideoTransformer3DModel
from .hunyuanimage_text import PromptText, device_states, join_plan, prompt_text
from .layers import Place
from .step_cache import BranchCache
from .transformer_ops import kept
from .wan_embeddings import PatchEmbedding

__all__ = ["FramepackHistory", "HunyuanVideoFramepackTransformer3DModel"]

# the history's patch (and rotary pooling) sizes, fixed in the checkpoints' convolutions
_KERNELS = {"clean": (1, 2, 2), "2x": (2, 4, 4), "4x": (4, 8, 8)}
_POOLS = {"clean": None, "2x": (2, 2, 2), "4x": (4, 4, 4)}


class HistoryPatchEmbed(nn.Module):
    """The clean history's Conv3d patch embeddings, kernel = stride: proj (1, 2, 2),
    proj_2x (2, 4, 4), proj_4x (4, 8, 8). diffusers: `HunyuanVideoHistoryPatchEmbed`."""

    def __init__(self, channels: int, dim: int, place: Place) -> None:
        self.proj = PatchEmbedding(channels, dim, _KERNELS["clean"], place)
        self.proj_2x = PatchEmbedding(channels, dim, _KERNELS["2x"], place)
        self.proj_4x = PatchEmbedding(channels, dim, _KERNELS["4x"], place)


class ClipVisionProjection(nn.Module):
    """SigLIP's image states -> image tokens: up (x3 wide), SiLU, down. diffusers:
    `FramepackClipVisionProjection`."""

    def __init__(self, in_dim: int, dim: int, place: Place) -> None:
        self.up = nn.Linear(in_dim, 3 * dim, **place)
        self.down = nn.Linear(3 * dim, dim, **place)

    def forward(self, x: Tensor) -> Tensor:
        return self.down(nn.silu(self.up(x)))


@dataclass
class FramepackHistory:
    """A section's packing, the same at every step (`prepare_history`): the history's
    embedded tokens (B, N_h, dim) (None: no history), the host cos/sin (N_h + N, D) of the
    history then the noisy latents' N patches, the latents' patch grid, and the device
    tables (text rows first) kept per text length."""

    tokens: Tensor | None
    cos: np.ndarray
    sin: np.ndarray
    grid: tuple[int, int, int]
    tables: dict[Any, tuple[Tensor, Tensor]] = field(default_factory=dict)


def _padded(x: np.ndarray, kernel: tuple[int, ...]) -> np.ndarray:
    """(..., T, H, W) padded at the end of each axis to a multiple of kernel by repeating
    its last entry. torch: `F.pad(x, ..., mode="replicate")` (diffusers' _pad_for_3d_conv)."""
    pads = [(0, 0)] * (x.ndim - 3) + [(0, -n % k) for n, k in zip(x.shape[-3:], kernel)]
    return np.pad(x, pads, mode="edge")


def _patches(x: np.ndarray, kernel: tuple[int, int, int]) -> np.ndarray:
    """(B, C, T, H, W) -> (B, L, C * kt * kh * kw), as a Conv3d of stride = kernel reads it."""
    b, c, t, h, w = x.shape
    kt, kh, kw = kernel
    x = x.reshape(b, c, t // kt, kt, h // kh, kh, w // kw, kw).transpose(0, 2, 4, 6, 1, 3, 5, 7)
    return x.reshape(b, (t // kt) * (h // kh) * (w // kw), -1)


class HunyuanVideoFramepackTransformer3DModel(HunyuanVideoTransformer3DModel):
    """Noisy latents (B, C, T, H, W), their clean history, the prompt's llava-llama-3 states,
    CLIP's pooled projection and SigLIP's image states -> the velocity (B, C, T, H, W).

    Config: `transformer/config.json` of a FramePack folder (lllyasviel's FramePackI2V_HY /
    FramePack_F1_I2V_HY: diffusers' fields with `has_image_proj`, `image_proj_dim`,
    `has_clean_x_embedder`). Parameter names are diffusers' (HunyuanVideo's, plus
    `clean_x_embedder.proj_2x.weight`, `image_projection.up.weight`, ...). diffusers:
    `HunyuanVideoFramepackTransformer3DModel(hidden_states, timestep, encoder_hidden_states,
    encoder_attention_mask, pooled_projections, image_embeds, indices_latents, guidance,
    latents_clean, indices_latents_clean, latents_history_2x, indices_latents_history_2x,
    latents_history_4x, indices_latents_history_4x, return_dict=False)[0]`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        super().__init__(config, dtype=dtype, device=device)
        cfg = self.config
        if not (cfg.get("has_clean_x_embedder") and cfg.get("has_image_proj")):
            raise ValueError("has_clean_x_embedder and has_image_proj must be true: a FramePack "
                             "transformer packs the clean history and SigLIP's image states; "
                             "give a FramePack (FramePackI2V_HY / F1) transformer folder")
        if cfg["patch"] != (1, 2, 2):
            raise ValueError(f"patch {cfg['patch']} is not FramePack's 1 x 2 x 2 (its history "
                             "convolutions are fixed to it)")
        place: Place = {"dtype": dtype, "device": device}
        dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        self.clean_x_embedder = HistoryPatchEmbed(cfg["in_channels"], dim, place)
        self.image_projection = ClipVisionProjection(int(cfg.get("image_proj_dim", 1152)), dim,
                                                     place)

    def prepare_text(self, states: Any, mask: Any, image_embeds: Any = None,
                     glyph_mask: Any = None) -> PromptText:
        """HunyuanVideo's prompt text with SigLIP's image states (B, L_img, image_proj_dim)
        projected ahead of it (diffusers' order), every image token kept."""
        if image_embeds is None:
            raise ValueError("image_embeds is required: SigLIP's last hidden states of the "
                             f"first frame (batch, tokens, {self.config.get('image_proj_dim')})")
        text = super().prepare_text(states, mask)
        image = device_states(image_embeds, self.dtype, self.device, "image_embeds")
        width = self.image_projection.up.weight.shape[1]
        if image.shape[0] != text.batch or image.shape[2] != width:
            raise ValueError(f"image_embeds must be (batch, tokens, image_proj_dim) = "
                             f"({text.batch}, tokens, {width}), got {image.shape}")
        plan = join_plan([(image.shape[1], None), (text.refiner.tokens.shape[1], text.real)],
                         text.batch, self.device)
        assert plan is not None
        return PromptText(text.batch, text.refiner, self.image_projection(image), plan, plan.real)

    def _rope_host(self, indices: Any, grid: tuple[int, int, int],
                   pool: tuple[int, int, int] | None) -> tuple[np.ndarray, np.ndarray]:
        """Host float64 cos/sin (L, D) at frames `indices` x the latents' rows x columns;
        `pool`: then averaged over patches of that size (the coarse history's). diffusers:
        `HunyuanVideoFramepackRotaryPosEmbed`, `_pad_rotary_emb`."""
        frames = np.asarray(indices, np.float32).reshape(-1)
        ids = np.stack(np.meshgrid(frames, np.arange(grid[1]), np.arange(grid[2]),
                                   indexing="ij"), -1).reshape(-1, 3).astype(np.float64)
        angles = []
        for axis, size in enumerate(self.config["rope_axes_dim"]):
            freqs = 1.0 / self.config["rope_theta"] ** (np.arange(0, size, 2) / size)
            angles.append(np.repeat(np.outer(ids[:, axis], freqs), 2, axis=1))
        angle = np.concatenate(angles, axis=1)
        cos, sin = np.cos(angle), np.sin(angle)
        if pool is None:
            return cos, sin
        shape = (len(frames), grid[1], grid[2], -1)

        def pooled(table: np.ndarray) -> np.ndarray:
            t = _padded(table.reshape(shape).transpose(3, 0, 1, 2), pool)
            d, n, h, w = t.shape
            kt, kh, kw = pool
            t = t.reshape(d, n // kt, kt, h // kh, kh, w // kw, kw).mean(axis=(2, 4, 6))
            return t.reshape(d, -1).T
        return pooled(cos), pooled(sin)

    def prepare_history(self, grid: tuple[int, int, int], indices_latents: Any,
                        parts: dict[str, tuple[Any, Any]], batch: int) -> FramepackHistory:
        """A section's packing, made once for its steps: the noisy latents' patch `grid`
        and frame `indices_latents`; `parts` {"clean" | "2x" | "4x": (latents (B or 1, C,
        T, H, W) host values, frame indices (T,))}, each embedded (diffusers packs 4x, 2x,
        clean, then the noisy latents); `batch` the latents' (a part of batch 1 repeated)."""
        height, width = grid[1] * 2, grid[2] * 2
        cos, sin, tokens = [], [], []
        for name in ("4x", "2x", "clean"):
            if name not in parts or parts[name][0] is None:
                continue
            latents, indices = np.asarray(parts[name][0], np.float32), parts[name][1]
            count = int(np.asarray(indices).size)
            shape = (self.config["in_channels"], count, height, width)
            if latents.ndim != 5 or latents.shape[1:] != shape \
                    or latents.shape[0] not in (1, batch):
                raise ValueError(f"the {name} history latents must be (batch, {shape[0]}, "
                                 f"{count} frames (their indices), {height}, {width}), got "
                                 f"{latents.shape}")
            kernel = _KERNELS[name]
            patches = _patches(_padded(latents, kernel), kernel)
            patches = np.broadcast_to(patches, (batch, *patches.shape[1:]))
            embed = getattr(self.clean_x_embedder, "proj" if name == "clean" else f"proj_{name}")
            tokens.append(embed(asarray(np.ascontiguousarray(patches, dtype=self.dtype),
                                        device=self.device)))
            part_cos, part_sin = self._rope_host(indices, grid, _POOLS[name])
            cos.append(part_cos)
            sin.append(part_sin)
        own = self._rope_host(np.arange(grid[0]) if indices_latents is None else indices_latents,
                           grid, None)
        if own[0].shape[0] != math.prod(grid):
            raise ValueError(f"indices_latents must give the {grid[0]} latent frames' indices")
        joined = tokens[0] if len(tokens) == 1 else concatenate(tokens, axis=1) if tokens else None
        return FramepackHistory(joined, np.concatenate([*cos, own[0]]),
                                np.concatenate([*sin, own[1]]), grid)

    def _history_tables(self, history: FramepackHistory, text_length: int
                        ) -> tuple[Tensor, Tensor]:
        """The blocks' cos/sin (T + N_h + N, 1, D): the text's rows unrotated, then the
        packed tokens', kept on the device per text length."""
        def make() -> tuple[Tensor, Tensor]:
            width = history.cos.shape[1]
            cos = np.concatenate([np.ones((text_length, width)), history.cos])
            sin = np.concatenate([np.zeros((text_length, width)), history.sin])
            return (asarray(cos.astype(np.float32)[:, None], device=self.device),
                    asarray(sin.astype(np.float32)[:, None], device=self.device))
        return kept(history.tables, text_length, make)

    def forward(self, hidden_states: Any, timestep: Any, encoder_hidden_states: Any,  # type: ignore[override]
                encoder_attention_mask: Any = None, pooled_projections: Any = None,
                image_embeds: Any = None, indices_latents: Any = None, guidance: Any = None,
                latents_clean: Any = None, indices_latents_clean: Any = None,
                latents_history_2x: Any = None, indices_latents_history_2x: Any = None,
                latents_history_4x: Any = None, indices_latents_history_4x: Any = None, *,
                history: FramepackHistory | None = None,
                cache: BranchCache | None = None) -> Tensor:
        """HunyuanVideo's inputs (see its forward) plus image_embeds (B, L_img,
        image_proj_dim) SigLIP's states (None where encoder_hidden_states is prepare_text's
        PromptText), the latents' frame indices (T,) (None: 0..T-1), and the clean history
        latents with their frame indices (host values); or `history`, prepare_history's of
        them (the raw history None). Returns the velocity (B, C, T, H, W)."""
        patches, grid = self._latents(hidden_states)
        batch = patches.shape[0]
        text = prompt_text(encoder_hidden_states, (encoder_attention_mask, image_embeds),
                           self.prepare_text)
        if text.batch != batch:
            raise ValueError(f"the text is of {text.batch} prompts for {batch} latents; give "
                             "one prompt per latent")
        raw = {"clean": (latents_clean, indices_latents_clean),
               "2x": (latents_history_2x, indices_latents_history_2x),
               "4x": (latents_history_4x, indices_latents_history_4x)}
        if history is None:
            history = self.prepare_history(grid, indices_latents, raw, batch)
        elif indices_latents is not None or any(v is not None for p in raw.values() for v in p):
            raise ValueError("history is prepare_history's packing: pass None for the raw "
                             "history latents and indices")
        if history.grid != grid:
            raise ValueError(f"history was prepared for a {history.grid} patch grid, the "
                             f"latents' is {grid}")
        # 1. conditioning; the text stream (image tokens first); the packed tokens
        t, temb = self._temb(batch, timestep, pooled_projections, guidance)
        context = self._text(text, t)
        x = self.x_embedder(patches)
        if history.tokens is not None:
            x = concatenate([history.tokens, x], axis=1)
        tables = self._history_tables(history, context.shape[1])
        # 2. the blocks; the noisy latents' patches (the last) back to (B, C, T, H, W)
        out = self.denoise(x, context, temb, tables, text.key_mask(x.shape[1], self.device),
                           cache)
        return self._unpatched(take_slice(out, out.shape[1] - math.prod(grid), out.shape[1],
                                          axis=1), grid)
