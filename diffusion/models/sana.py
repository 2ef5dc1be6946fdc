"""The Sana transformer (diffusers' SanaTransformer2DModel names): NVIDIA's Sana 1.0 / 1.5
(1600M, 4800M) and Sana Sprint. A DiT over DC-AE latents (32 channels, 1 x 1 patches) whose
self-attention is linear (ReLU kernel: cost linear in the tokens, so 4096-pixel pictures
stay cheap), with softmax cross-attention to Gemma 2's caption states, a convolutional
feed-forward (GLUMBConv) and an adaLN-single modulation (one timestep MLP for all blocks,
each block adding its own table). Sana 1.5 and Sprint add q/k RMS norms across the heads;
Sprint embeds a guidance value beside the timestep (SCM: its pipeline scales both); Sana 4K
adds sin-cos position embeddings (`interpolation_scale` set). There are no rotary
embeddings: the depthwise 3x3 convolution gives the tokens their neighbourhood.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, nn, permute, take_slice

from .dit_layers import TimestepEmbedding
from .layers import Place
from .sana_blocks import SanaTransformerBlock
from .transformer_ops import Modulation, RMSNorm, cast, kept, rms_norm

__all__ = ["SanaTransformer2DModel", "caption_bias", "sincos_positions"]

_DEFAULTS: dict[str, Any] = {
    "in_channels": 32, "out_channels": 32, "num_attention_heads": 70, "attention_head_dim": 32,
    "num_layers": 20, "num_cross_attention_heads": 20, "cross_attention_head_dim": 112,
    "cross_attention_dim": 2240, "caption_channels": 2304, "mlp_ratio": 2.5,
    "attention_bias": False, "sample_size": 32, "patch_size": 1,
    "norm_elementwise_affine": False, "norm_eps": 1e-6, "interpolation_scale": None,
    "guidance_embeds": False, "guidance_embeds_scale": 0.1, "qk_norm": None,
    "timestep_scale": 1.0,
}
# caption masks and position tables kept on the device: a prompt's and a negative prompt's
_KEPT = 4


def sincos_positions(rows: int, columns: int, dim: int, base: int, scale: float
                     ) -> np.ndarray:
    """(rows * columns, dim) float32 2D sin-cos position embeddings: the first half the
    column's [sin, cos] at frequencies 10000^(-j / (dim/4)), the second the row's; positions
    index / (size / base) / scale (float32, then float64 as diffusers). diffusers:
    `get_2d_sincos_pos_embed(dim, (rows, columns), base_size=base, interpolation_scale=
    scale)`."""
    def axis(size: int) -> np.ndarray:
        pos = np.arange(size, dtype=np.float32) / np.float32(size / base) / np.float32(scale)
        omega = 1.0 / 10000 ** (np.arange(dim // 4, dtype=np.float64) / (dim / 4))
        angle = np.outer(pos.astype(np.float64), omega)
        return np.concatenate([np.sin(angle), np.cos(angle)], axis=1)

    col = np.tile(axis(columns), (rows, 1))
    row = np.repeat(axis(rows), columns, axis=0)
    return np.concatenate([col, row], axis=1).astype(np.float32)


def caption_bias(tables: dict[tuple[Any, ...], Any], mask: Any, batch: int, length: int,
                 device: Device) -> tuple[Tensor | None, int]:
    """The cross-attention's additive mask (B, 1, 1, L') float32, 0 kept and -10000 on
    padding (diffusers' bias, Sana's and PixArt's), and L': the keys past every caption's
    last kept token are dropped (their weight exp(-10000) is 0: the same outputs). None
    where all are kept. Kept in `tables` (the same every step, and each upload a submit)."""
    if mask is None:
        return None, length
    keep = np.asarray(mask.numpy() if isinstance(mask, Tensor) else mask)
    if keep.shape != (batch, length):
        raise ValueError(f"encoder_attention_mask {keep.shape} must be (batch, tokens) = "
                         f"{(batch, length)}, as encoder_hidden_states")
    keep = keep.astype(bool)
    used = length
    if keep.any(axis=1).all():  # a caption with no kept token attends to all, uniformly
        used = int(np.nonzero(keep.any(axis=0))[0].max()) + 1
    keep = keep[:, :used]
    if keep.all():
        return None, used

    def make() -> Tensor:
        bias = np.where(keep, np.float32(0), np.float32(-10000.0)).astype(np.float32)
        return asarray(bias.reshape(batch, 1, 1, used), device=device)

    return kept(tables, ("mask", keep.shape, keep.tobytes(), device), make, _KEPT), used


class SanaTransformer2DModel(nn.Module):
    """Latents (B, C, H, W), timesteps and the captions' states with their mask -> the
    prediction (B, C, H, W) (Sana's flow velocity; Sprint's SCM output, which its pipeline
    turns into the denoised latents).

    Config: `transformer/config.json` of a Sana folder (diffusers' fields). Parameter names
    are diffusers' (`patch_embed.proj.weight`, `time_embed.emb.timestep_embedder.linear_1
    .weight` (Sprint: `time_embed.timestep_embedder...`, `time_embed.guidance_embedder...`),
    `time_embed.linear.weight`, `caption_projection.linear_1.weight`, `caption_norm.weight`,
    `transformer_blocks.0.attn1.to_q.weight`, `transformer_blocks.0.ff.conv_depth.weight`,
    `scale_shift_table`, `proj_out.weight`, ...). diffusers: `SanaTransformer2DModel(
    hidden_states, encoder_hidden_states, timestep, guidance, encoder_attention_mask).sample`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        if cfg["qk_norm"] not in (None, "rms_norm_across_heads"):
            raise ValueError(f"qk_norm {cfg['qk_norm']!r} is not a Sana setting; expected "
                             "None or 'rms_norm_across_heads'")
        if cfg["norm_elementwise_affine"]:
            raise ValueError("norm_elementwise_affine=True is not a Sana setting (its block "
                             "norms have no weights); check the transformer's config.json")
        dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        if cfg["cross_attention_dim"] != dim:
            raise ValueError(f"cross_attention_dim {cfg['cross_attention_dim']} must equal the "
                             f"width {dim} (the projected caption's)")
        self.config, self.dim = cfg, dim
        place: Place = {"dtype": dtype, "device": device}
        patch, channels = cfg["patch_size"], cfg["in_channels"]
        self.out_channels = cfg["out_channels"] or channels
        self.patch_embed = nn.Namespace()
        self.patch_embed.proj = nn.Conv2d(channels, dim, patch, stride=patch, **place)
        self.time_embed = nn.Namespace()
        if cfg["guidance_embeds"]:
            self.time_embed.timestep_embedder = TimestepEmbedding(256, dim, place)
            self.time_embed.guidance_embedder = TimestepEmbedding(256, dim, place)
        else:
            self.time_embed.emb = nn.Namespace()
            self.time_embed.emb.timestep_embedder = TimestepEmbedding(256, dim, place)
        self.time_embed.linear = nn.Linear(dim, 6 * dim, **place)
        # PixArtAlphaTextProjection: gelu-tanh between the two linears
        self.caption_projection = nn.Namespace()
        self.caption_projection.linear_1 = nn.Linear(cfg["caption_channels"], dim, **place)
        self.caption_projection.linear_2 = nn.Linear(dim, dim, **place)
        self.caption_norm = RMSNorm(dim, 1e-5, place=place)
        self.transformer_blocks = nn.ModuleList(
            [SanaTransformerBlock(cfg, place) for _ in range(cfg["num_layers"])])
        self.scale_shift_table = nn.parameter((2, dim), **place)
        self.proj_out = nn.Linear(dim, patch * patch * self.out_channels, **place)
        self._tables: dict[tuple[Any, ...], Any] = {}

    @property
    def device(self) -> Device:
        return self.proj_out.weight.device

    @property
    def dtype(self) -> np.dtype:
        return self.proj_out.weight.dtype

    def _sinusoid(self, values: Any) -> Tensor:
        """The 256-wide timestep features (flip_sin_to_cos, no shift) in the model's dtype, of
        (B,) host numbers or a float32 Tensor. diffusers: `Timesteps(256, True, 0)`."""
        if not isinstance(values, Tensor):
            values = np.asarray(values, np.float32).reshape(-1)
        return nn.timestep_embedding(values, 256, flip_sin_to_cos=True, downscale_freq_shift=0,
                                     dtype=self.dtype, device=self.device)

    def _time(self, timestep: Any, guidance: Any, batch: int) -> tuple[Tensor, Tensor]:
        """(linear(silu(emb)) (B, 6*dim), emb (B, dim)) of the timestep (and Sprint's
        guidance). diffusers: `AdaLayerNormSingle` / `SanaCombinedTimestepGuidanceEmbeddings`."""
        embed = self.time_embed
        if self.config["guidance_embeds"]:
            if guidance is None:
                raise ValueError("this Sana transformer embeds guidance (Sana Sprint): pass "
                                 "guidance, the guidance scale times guidance_embeds_scale")
            emb = (embed.timestep_embedder(self._batch(timestep, batch, "timestep"))
                   + embed.guidance_embedder(self._batch(guidance, batch, "guidance")))
        else:
            emb = embed.emb.timestep_embedder(self._batch(timestep, batch, "timestep"))
        return embed.linear(nn.silu(emb)), emb

    def _batch(self, values: Any, batch: int, name: str) -> Tensor:
        """_sinusoid of one value per latent (a single host value is repeated)."""
        if not isinstance(values, Tensor):
            values = np.asarray(values, np.float32).reshape(-1)
            values = np.repeat(values, batch) if values.size == 1 else values
        if values.shape != (batch,):
            raise ValueError(f"{name} of shape {tuple(values.shape)} for {batch} latents; pass "
                             "one value per latent")
        return self._sinusoid(values)

    def _mask(self, mask: Any, batch: int, length: int) -> tuple[Tensor | None, int]:
        """caption_bias of the captions' mask, kept in this model's tables."""
        return caption_bias(self._tables, mask, batch, length, self.device)

    def _positions(self, rows: int, columns: int) -> Tensor:
        cfg = self.config
        base = cfg["sample_size"] // cfg["patch_size"]
        return kept(self._tables, ("pos", rows, columns, self.device),
                    lambda: asarray(sincos_positions(rows, columns, self.dim, base,
                                                     cfg["interpolation_scale"])[None],
                                    device=self.device), _KEPT)

    def _caption(self, states: Tensor) -> Tensor:
        """caption_projection (gelu-tanh MLP) then caption_norm: (B, L, caption_channels)
        -> (B, L, dim), in the model's dtype as diffusers' pipelines cast the states."""
        proj = self.caption_projection
        h = proj.linear_2(proj.linear_1.gelu(cast(states, self.dtype), approximate="tanh"))
        return rms_norm(h, self.caption_norm.weight, self.caption_norm.eps)

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Tensor, timestep: Any,
                guidance: Any = None, encoder_attention_mask: Any = None) -> Tensor:
        """hidden_states (B, C, H, W) latents, H and W multiples of patch_size;
        encoder_hidden_states (B, L, caption_channels) (any float dtype); timestep (B,) host
        numbers or a float32 Tensor, as the pipeline passes them (SanaPipeline: t *
        timestep_scale in [0, 1000]; Sprint: the SCM timestep in [0, 1]); guidance (B,) for a
        model with guidance_embeds (the scale times guidance_embeds_scale), else None;
        encoder_attention_mask (B, L) host 1/0 (None: no padding)."""
        batch, channels, height, width = hidden_states.shape
        cfg, dim, p = self.config, self.dim, self.config["patch_size"]
        if channels != cfg["in_channels"]:
            raise ValueError(f"latents of {channels} channels for a transformer of "
                             f"{cfg['in_channels']}; use this model's VAE (DC-AE)")
        if height % p or width % p:
            raise ValueError(f"latents of {height} x {width} are not multiples of the patch "
                             f"size {p}; use a picture size divisible by {32 * p}")
        if (encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[0] != batch
                or encoder_hidden_states.shape[2] != cfg["caption_channels"]):
            raise ValueError(f"encoder_hidden_states {encoder_hidden_states.shape} must be "
                             f"(batch, tokens, {cfg['caption_channels']}) for {batch} latents")
        if guidance is not None and not cfg["guidance_embeds"]:
            raise ValueError("guidance given to a Sana transformer without guidance_embeds "
                             "(only Sana Sprint embeds it); leave it out")
        mask, used = self._mask(encoder_attention_mask, batch, encoder_hidden_states.shape[1])
        if used < encoder_hidden_states.shape[1]:
            encoder_hidden_states = take_slice(encoder_hidden_states, 0, used, axis=1)
        rows, columns = height // p, width // p
        # 1. patches as tokens (the conv's NCHW output transposed), position embeddings
        x = self.patch_embed.proj(cast(hidden_states, self.dtype))
        x = permute(x.reshape(batch, dim, rows * columns), (0, 2, 1))
        if cfg["interpolation_scale"] is not None:
            # the float32 table added in float32, then back (diffusers' order)
            x = cast(cast(x, np.float32) + self._positions(rows, columns), self.dtype)
        temb, emb = self._time(timestep, guidance, batch)
        context = self._caption(encoder_hidden_states)
        # 2. the blocks
        for block in self.transformer_blocks:
            x = block(x, temb, context, mask, rows, columns)
        # 3. the output norm: shift first, then scale (SanaModulatedNorm), and the patches
        table = self.scale_shift_table.reshape(1, 2, dim)
        out_mods = Modulation((table + emb.reshape(batch, 1, dim)).reshape(batch, -1), 2)
        out = self.proj_out(out_mods.norm(x, 0, 1))
        out = out.reshape(batch, rows, columns, p, p, self.out_channels)
        return permute(out, (0, 5, 1, 3, 2, 4)).reshape(batch, self.out_channels, height, width)
