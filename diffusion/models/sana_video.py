"""The Sana Video transformer (diffusers' SanaVideoTransformer3DModel names): NVIDIA's
SANA-Video 2B, a video DiT over Wan 2.1 VAE latents (16 channels, 1 x 2 x 2 patches). Sana's
image transformer (models.sana: ReLU linear self-attention, softmax cross-attention to Gemma
2's caption, GLUMBConv feed-forward, adaLN-single) with Wan's 3D rotary positions in the
linear attention and a temporal convolution after each feed-forward
(models.sana_video_blocks). Linear attention keeps minute-long 720p videos affordable.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, nn, take_slice

from .dit_layers import TimestepEmbedding
from .layers import Place
from .sana import SanaTransformer2DModel
from .sana_video_blocks import SanaVideoTransformerBlock, unpatchify
from .transformer_ops import Modulation, RMSNorm, cast, kept, rope_tables
from .wan import rope_axes, wan_patches, wan_positions
from .wan_blocks import by_segment, joined
from .wan_embeddings import PatchEmbedding

__all__ = ["SanaVideoTransformer3DModel"]

_DEFAULTS: dict[str, Any] = {
    "in_channels": 16, "out_channels": 16, "num_attention_heads": 20, "attention_head_dim": 112,
    "num_layers": 20, "num_cross_attention_heads": 20, "cross_attention_head_dim": 112,
    "cross_attention_dim": 2240, "caption_channels": 2304, "mlp_ratio": 2.5,
    "attention_bias": False, "sample_size": 30, "patch_size": (1, 2, 2),
    "norm_elementwise_affine": False, "norm_eps": 1e-6, "interpolation_scale": None,
    "guidance_embeds": False, "guidance_embeds_scale": 0.1,
    "qk_norm": "rms_norm_across_heads", "rope_max_seq_len": 1024,
}
_ROPE_THETA = 10000.0
# rotary tables kept on the device (one per video size)
_KEPT = 4


class SanaVideoTransformer3DModel(SanaTransformer2DModel):
    """Latent video (B, C, F, H, W), timesteps and the caption's states with their mask ->
    the flow velocity (B, C, F, H, W).

    Config: `transformer/config.json` of a SANA-Video folder (diffusers' fields). Parameter
    names are diffusers' (`patch_embedding.weight`, `time_embed.emb.timestep_embedder
    .linear_1.weight`, `caption_projection.linear_1.weight`, `caption_norm.weight`,
    `transformer_blocks.0.attn1.norm_q.weight`, `transformer_blocks.0.ff.conv_temp.weight`,
    `scale_shift_table`, `proj_out.weight`, ...). diffusers: `SanaVideoTransformer3DModel(
    hidden_states, encoder_hidden_states, timestep, guidance, encoder_attention_mask).sample`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        if cfg["qk_norm"] not in (None, "rms_norm_across_heads"):
            raise ValueError(f"qk_norm {cfg['qk_norm']!r} is not a Sana Video setting; "
                             "expected None or 'rms_norm_across_heads'")
        if cfg["norm_elementwise_affine"]:
            raise ValueError("norm_elementwise_affine=True is not a Sana Video setting; check "
                             "the transformer's config.json")
        dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        if cfg["cross_attention_dim"] != dim:
            raise ValueError(f"cross_attention_dim {cfg['cross_attention_dim']} must equal the "
                             f"width {dim} (the projected caption's)")
        self.config, self.dim = cfg, dim
        place: Place = {"dtype": dtype, "device": device}
        pt, ph, pw = (int(p) for p in cfg["patch_size"])
        self.patch = (pt, ph, pw)
        channels = cfg["in_channels"]
        self.out_channels = cfg["out_channels"] or channels
        self.patch_embedding = PatchEmbedding(channels, dim, self.patch, place)
        self.time_embed = nn.Namespace()
        if cfg["guidance_embeds"]:
            self.time_embed.timestep_embedder = TimestepEmbedding(256, dim, place)
            self.time_embed.guidance_embedder = TimestepEmbedding(256, dim, place)
        else:
            self.time_embed.emb = nn.Namespace()
            self.time_embed.emb.timestep_embedder = TimestepEmbedding(256, dim, place)
        self.time_embed.linear = nn.Linear(dim, 6 * dim, **place)
        self.caption_projection = nn.Namespace()
        self.caption_projection.linear_1 = nn.Linear(cfg["caption_channels"], dim, **place)
        self.caption_projection.linear_2 = nn.Linear(dim, dim, **place)
        self.caption_norm = RMSNorm(dim, 1e-5, place=place)
        self.transformer_blocks = nn.ModuleList(
            [SanaVideoTransformerBlock(cfg, place) for _ in range(cfg["num_layers"])])
        self.scale_shift_table = nn.parameter((2, dim), **place)
        self.proj_out = nn.Linear(dim, math.prod(self.patch) * self.out_channels, **place)
        self._tables: dict[tuple[Any, ...], Any] = {}

    def rotary(self, frames: int, rows: int, columns: int) -> tuple[Tensor, Tensor]:
        """Wan's cos/sin tables of the patch grid (frame, row, column), kept per size."""
        limit = self.config["rope_max_seq_len"]
        if max(frames, rows, columns) > limit:
            raise ValueError(f"{frames} x {rows} x {columns} patches pass Sana Video's {limit} "
                             "rotary positions per axis; make the video smaller or shorter")
        return kept(self._tables, ("rope", frames, rows, columns, self.device),
                    lambda: rope_tables(wan_positions(frames, rows, columns),
                                        rope_axes(self.config["attention_head_dim"]),
                                        _ROPE_THETA, device=self.device), _KEPT)

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Tensor, timestep: Any,
                guidance: Any = None, encoder_attention_mask: Any = None) -> Tensor:
        """hidden_states (B, C, F, H, W) latents, F, H, W multiples of patch_size;
        encoder_hidden_states (B, L, caption_channels) (any float dtype); timestep (B,) host
        numbers or a float32 Tensor in [0, 1000], or (B, F) host numbers, one per latent
        frame (image-to-video: the first frame's 0); guidance (B,) for a model with
        guidance_embeds, else None; encoder_attention_mask (B, L) host 1/0 (None: no
        padding)."""
        if hidden_states.ndim != 5:
            raise ValueError(f"latents of shape {hidden_states.shape}: Sana Video reads a "
                             "latent video (batch, channels, frames, height, width)")
        batch, channels = hidden_states.shape[:2]
        cfg = self.config
        if channels != cfg["in_channels"]:
            raise ValueError(f"latents of {channels} channels for a transformer of "
                             f"{cfg['in_channels']}; use this model's VAE (Wan 2.1)")
        if (encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[0] != batch
                or encoder_hidden_states.shape[2] != cfg["caption_channels"]):
            raise ValueError(f"encoder_hidden_states {encoder_hidden_states.shape} must be "
                             f"(batch, tokens, {cfg['caption_channels']}) for {batch} latents")
        if guidance is not None and not cfg["guidance_embeds"]:
            raise ValueError("guidance given to a Sana Video transformer without "
                             "guidance_embeds; leave it out")
        mask, used = self._mask(encoder_attention_mask, batch, encoder_hidden_states.shape[1])
        if used < encoder_hidden_states.shape[1]:
            encoder_hidden_states = take_slice(encoder_hidden_states, 0, used, axis=1)
        patches, grid = wan_patches(cast(hidden_states, self.dtype), self.patch)
        x = self.patch_embedding(patches)
        rotary = self.rotary(*grid)
        runs = self._runs(timestep, batch, grid)
        times = [self._time(t, guidance, batch) for _, _, t in runs]
        segments = [(start, stop, temb) for (start, stop, _), (temb, _) in zip(runs, times)]
        context = self._caption(encoder_hidden_states)
        for block in self.transformer_blocks:
            x = block(x, segments, context, mask, grid, rotary)
        table = self.scale_shift_table.reshape(1, 2, self.dim)
        parts = []
        for part, (_, emb) in zip(by_segment(x, segments), times):
            out_mods = Modulation((table + emb.reshape(batch, 1, self.dim)).reshape(batch, -1),
                                  2)
            parts.append(out_mods.norm(part, 0, 1))
        out = self.proj_out(joined(parts))
        return unpatchify(out, grid, self.patch, self.out_channels)

    def _runs(self, timestep: Any, batch: int, grid: tuple[int, int, int]
              ) -> list[tuple[int, int, Any]]:
        """(start, stop, timesteps) of the token runs sharing a timestep: the whole video for
        (B,) timesteps; for (B, frames) host ones (a timestep per latent frame), each run of
        frames whose timesteps are the same in every video. diffusers takes one per token
        (`timestep.flatten()`); SanaImageToVideoPipeline's differ by frame only."""
        if isinstance(timestep, Tensor) or np.ndim(timestep) < 2:
            return [(0, math.prod(grid), timestep)]
        values = np.asarray(timestep, np.float32)
        frames, tokens = grid[0], grid[1] * grid[2]
        if values.shape != (batch, frames * self.patch[0]):
            raise ValueError(f"timesteps of shape {values.shape} for {batch} videos of "
                             f"{frames * self.patch[0]} latent frames; pass (batch,) or one "
                             "per latent frame")
        values = values[:, ::self.patch[0]]
        starts = [0] + [f for f in range(1, frames)
                        if (values[:, f] != values[:, f - 1]).any()]
        stops = [*starts[1:], frames]
        return [(a * tokens, b * tokens, values[:, a]) for a, b in zip(starts, stops)]
