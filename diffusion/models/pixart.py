"""The PixArt transformer (diffusers' PixArtTransformer2DModel names): PixArt-α and PixArt-Σ
(XL/2, 256 to 2048 pixels). A DiT over SD VAE latents (4 channels, 2 x 2 patches, sin-cos
position embeddings) whose blocks are diffusers' BasicTransformerBlock with
`norm_type="ada_norm_single"`: softmax self-attention on the modulated LayerNorm, gated;
cross-attention to T5's caption states (projected by a gelu-tanh MLP), ungated and without a
norm; a gelu-tanh feed-forward on the modulated norm, gated. One timestep MLP feeds every
block's adaLN-single table, as in Sana (diffusion.models.sana, whose caption mask, position
table and cross-attention this reuses). PixArt-α 1024 also embeds the picture's size and
aspect ratio beside the timestep (`use_additional_conditions`). The output has 8 channels:
the noise and the learned variance, which the pipelines drop.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, nn, permute, take_slice

from .dit_layers import FeedForward, TimestepEmbedding
from .layers import Place
from .sana import caption_bias, sincos_positions
from .sana_blocks import SanaCrossAttention
from .transformer_ops import Modulation, cast, kept

__all__ = ["PixArtTransformer2DModel"]

_DEFAULTS: dict[str, Any] = {
    "num_attention_heads": 16, "attention_head_dim": 72, "in_channels": 4, "out_channels": 8,
    "num_layers": 28, "cross_attention_dim": 1152, "attention_bias": True,
    "sample_size": 128, "patch_size": 2, "activation_fn": "gelu-approximate",
    "norm_type": "ada_norm_single", "norm_elementwise_affine": False, "norm_eps": 1e-6,
    "interpolation_scale": None, "use_additional_conditions": None, "caption_channels": 4096,
}
_KEPT = 4


def additional_conditions(config: dict[str, Any]) -> bool:
    """Whether a PixArt transformer embeds the picture's size and aspect ratio: as configured,
    else (None) for a sample size of 128 (PixArt-α 1024), as diffusers decides."""
    use = config.get("use_additional_conditions")
    return int(config.get("sample_size", 128)) == 128 if use is None else bool(use)


class PixArtBlock(nn.Module):
    """diffusers' BasicTransformerBlock(norm_type="ada_norm_single"): the six modulation
    vectors are `scale_shift_table` (6, dim) plus the timestep's (B, 6*dim): (shift, scale,
    gate) for the self-attention, then for the feed-forward; the cross-attention between
    them reads the stream as it is (PixArt's norm2 is the feed-forward's)."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        heads, head_dim = cfg["num_attention_heads"], cfg["attention_head_dim"]
        dim = heads * head_dim
        self.dim, self.eps = dim, cfg["norm_eps"]
        # Sana's softmax attention has PixArt's projections (all with biases): attn1 is it
        # over the block's own tokens
        self.attn1 = SanaCrossAttention(dim, dim, heads, head_dim, None, place)
        self.attn2 = SanaCrossAttention(dim, cfg["cross_attention_dim"], heads, head_dim, None,
                                        place)
        self.ff = FeedForward(dim, place)
        self.scale_shift_table = nn.parameter((6, dim), **place)

    def forward(self, x: Tensor, temb: Tensor, context: Tensor, mask: Tensor | None
                ) -> Tensor:
        """x (B, N, dim); temb (B, 6*dim) (adaln_single's linear output); context (B, L, dim)
        the projected caption; mask (B, 1, 1, L) float32 added to the cross-attention's
        scores, or None."""
        batch, attn1 = x.shape[0], self.attn1
        table = self.scale_shift_table.reshape(1, 6, self.dim)
        mods = Modulation((table + temb.reshape(batch, 6, self.dim)).reshape(batch, -1), 6)
        h = mods.norm(x, 0, 1, self.eps)
        q, k, v = nn.Linear.each(h, [attn1.to_q, attn1.to_k, attn1.to_v])
        x = mods.gated_linear(2, x, attn1.to_out[0], nn.attention(q, k, v, heads=attn1.heads))
        x = x + self.attn2(x, context, mask)
        return self.ff.gated(x, mods[5], mods.norm(x, 3, 4, self.eps))


class PixArtTransformer2DModel(nn.Module):
    """Latents (B, 4, H, W), timesteps and T5's caption states with their mask -> (B, 8, H, W):
    the predicted noise, then the learned variance (out_channels 8; 4: noise only).

    Config: `transformer/config.json` of a PixArt folder (diffusers' fields). Parameter names
    are diffusers' (`pos_embed.proj.weight`, `adaln_single.emb.timestep_embedder.linear_1
    .weight`, `adaln_single.linear.weight`, `caption_projection.linear_1.weight`,
    `transformer_blocks.0.attn1.to_q.weight`, `transformer_blocks.0.ff.net.0.proj.weight`,
    `transformer_blocks.0.scale_shift_table`, `scale_shift_table`, `proj_out.weight`; α 1024's
    `adaln_single.emb.resolution_embedder.linear_1.weight`, `...aspect_ratio_embedder...`).
    diffusers: `PixArtTransformer2DModel(hidden_states, encoder_hidden_states, timestep,
    added_cond_kwargs, encoder_attention_mask=).sample`."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        if cfg["norm_type"] != "ada_norm_single" or cfg["norm_elementwise_affine"]:
            raise ValueError(f"norm_type {cfg['norm_type']!r} (elementwise affine "
                             f"{cfg['norm_elementwise_affine']}) is not PixArt's; expected "
                             "'ada_norm_single' without affine: check transformer/config.json")
        if not cfg["attention_bias"] or cfg["activation_fn"] != "gelu-approximate":
            raise ValueError("attention_bias False or an activation other than "
                             "'gelu-approximate' is not a PixArt setting; check "
                             "transformer/config.json")
        dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        if cfg["cross_attention_dim"] != dim or cfg["caption_channels"] is None:
            raise ValueError(f"cross_attention_dim {cfg['cross_attention_dim']} must equal the "
                             f"width {dim}, with caption_channels set (the projected caption)")
        self.conditions = additional_conditions(cfg)
        if self.conditions and dim % 3:
            raise ValueError(f"a width of {dim} does not split into the size embeddings' "
                             "three thirds (use_additional_conditions)")
        self.config, self.dim = cfg, dim
        place: Place = {"dtype": dtype, "device": device}
        patch, channels = cfg["patch_size"], cfg["in_channels"]
        self.out_channels = cfg["out_channels"] or channels
        self.pos_embed = nn.Namespace()
        self.pos_embed.proj = nn.Conv2d(channels, dim, patch, stride=patch, **place)
        self.adaln_single = nn.Namespace()
        self.adaln_single.emb = nn.Namespace()
        self.adaln_single.emb.timestep_embedder = TimestepEmbedding(256, dim, place)
        if self.conditions:
            self.adaln_single.emb.resolution_embedder = TimestepEmbedding(256, dim // 3, place)
            self.adaln_single.emb.aspect_ratio_embedder = TimestepEmbedding(256, dim // 3,
                                                                            place)
        self.adaln_single.linear = nn.Linear(dim, 6 * dim, **place)
        # PixArtAlphaTextProjection: gelu-tanh between the two linears
        self.caption_projection = nn.Namespace()
        self.caption_projection.linear_1 = nn.Linear(cfg["caption_channels"], dim, **place)
        self.caption_projection.linear_2 = nn.Linear(dim, dim, **place)
        self.transformer_blocks = nn.ModuleList(
            [PixArtBlock(cfg, place) for _ in range(cfg["num_layers"])])
        self.scale_shift_table = nn.parameter((2, dim), **place)
        self.proj_out = nn.Linear(dim, patch * patch * self.out_channels, **place)
        self._tables: dict[tuple[Any, ...], Any] = {}

    @property
    def device(self) -> Device:
        return self.proj_out.weight.device

    @property
    def dtype(self) -> np.dtype:
        return self.proj_out.weight.dtype

    def _sinusoid(self, values: Any, batch: int, name: str) -> Tensor:
        """The 256-wide features (flip_sin_to_cos, no shift) in the model's dtype of one value
        per row (a single host value is repeated). diffusers: `Timesteps(256, True, 0)`."""
        if not isinstance(values, Tensor):
            values = np.asarray(values, np.float32).reshape(-1)
            values = np.repeat(values, batch) if values.size == 1 else values
        if values.shape != (batch,):
            raise ValueError(f"{name} of shape {tuple(values.shape)} for {batch} rows; pass "
                             "one value per latent")
        return nn.timestep_embedding(values, 256, flip_sin_to_cos=True, downscale_freq_shift=0,
                                     dtype=self.dtype, device=self.device)

    def _time(self, timestep: Any, resolution: Any, aspect_ratio: Any, batch: int
              ) -> tuple[Tensor, Tensor]:
        """(linear(silu(emb)) (B, 6*dim), emb (B, dim)): the timestep's embedding, plus (α
        1024) the picture's [height, width] and height / width embeddings. diffusers:
        `AdaLayerNormSingle` / `PixArtAlphaCombinedTimestepSizeEmbeddings`."""
        emb_of = self.adaln_single.emb
        emb = emb_of.timestep_embedder(self._sinusoid(timestep, batch, "timestep"))
        if self.conditions:
            if resolution is None or aspect_ratio is None:
                raise ValueError("this PixArt transformer embeds the picture size (PixArt-α "
                                 "1024): pass resolution [[height, width]] and aspect_ratio "
                                 "[height / width]")
            size = np.asarray(resolution, np.float32).reshape(-1)
            if size.size == 2:
                size = np.tile(size, batch)
            res = emb_of.resolution_embedder(self._sinusoid(size, 2 * batch, "resolution"))
            ratio = emb_of.aspect_ratio_embedder(
                self._sinusoid(aspect_ratio, batch, "aspect_ratio"))
            sizes = concatenate([res.reshape(batch, 2 * (self.dim // 3)), ratio], axis=1)
            emb = emb + sizes
        return self.adaln_single.linear(nn.silu(emb)), emb

    def _positions(self, rows: int, columns: int) -> Tensor:
        """The sin-cos table (1, rows*columns, dim) float32; diffusers' PatchEmbed with
        base_size sample_size / patch and interpolation_scale as configured, else
        max(sample_size // 64, 1)."""
        cfg = self.config
        base = cfg["sample_size"] // cfg["patch_size"]
        scale = cfg["interpolation_scale"] or max(cfg["sample_size"] // 64, 1)
        return kept(self._tables, ("pos", rows, columns, self.device),
                    lambda: asarray(sincos_positions(rows, columns, self.dim, base, scale)[None],
                                    device=self.device), _KEPT)

    def _caption(self, states: Tensor) -> Tensor:
        """caption_projection (gelu-tanh MLP): (B, L, caption_channels) -> (B, L, dim), in
        the model's dtype as diffusers' pipelines cast the states."""
        proj = self.caption_projection
        return proj.linear_2(proj.linear_1.gelu(cast(states, self.dtype), approximate="tanh"))

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Tensor, timestep: Any,
                encoder_attention_mask: Any = None, resolution: Any = None,
                aspect_ratio: Any = None) -> Tensor:
        """hidden_states (B, C, H, W) latents, H and W multiples of patch_size;
        encoder_hidden_states (B, L, caption_channels) (any float dtype); timestep (B,) host
        numbers or a float32 Tensor (the scheduler's, 0..999); encoder_attention_mask (B, L)
        host 1/0 (None: no padding); resolution (B, 2) or (2,) [height, width] in pixels and
        aspect_ratio (B,) or one height / width, for PixArt-α 1024 only."""
        batch, channels, height, width = hidden_states.shape
        cfg, dim, p = self.config, self.dim, self.config["patch_size"]
        if channels != cfg["in_channels"]:
            raise ValueError(f"latents of {channels} channels for a transformer of "
                             f"{cfg['in_channels']}; use this model's VAE (SD's)")
        if height % p or width % p:
            raise ValueError(f"latents of {height} x {width} are not multiples of the patch "
                             f"size {p}; use a picture size divisible by {8 * p}")
        if (encoder_hidden_states.ndim != 3 or encoder_hidden_states.shape[0] != batch
                or encoder_hidden_states.shape[2] != cfg["caption_channels"]):
            raise ValueError(f"encoder_hidden_states {encoder_hidden_states.shape} must be "
                             f"(batch, tokens, {cfg['caption_channels']}) for {batch} latents")
        mask, used = caption_bias(self._tables, encoder_attention_mask, batch,
                                  encoder_hidden_states.shape[1], self.device)
        if used < encoder_hidden_states.shape[1]:
            encoder_hidden_states = take_slice(encoder_hidden_states, 0, used, axis=1)
        rows, columns = height // p, width // p
        # 1. patches as tokens, the float32 position table added in float32 (diffusers' order)
        x = self.pos_embed.proj(cast(hidden_states, self.dtype))
        x = permute(x.reshape(batch, dim, rows * columns), (0, 2, 1))
        x = cast(cast(x, np.float32) + self._positions(rows, columns), self.dtype)
        temb, emb = self._time(timestep, resolution, aspect_ratio, batch)
        context = self._caption(encoder_hidden_states)
        # 2. the blocks
        for block in self.transformer_blocks:
            x = block(x, temb, context, mask)
        # 3. the output norm: shift first, then scale, and the patches back to a picture
        table = self.scale_shift_table.reshape(1, 2, dim)
        out_mods = Modulation((table + emb.reshape(batch, 1, dim)).reshape(batch, -1), 2)
        out = self.proj_out(out_mods.norm(x, 0, 1))
        out = out.reshape(batch, rows, columns, p, p, self.out_channels)
        return permute(out, (0, 5, 1, 3, 2, 4)).reshape(batch, self.out_channels, height, width)
