"""The Motif-Video transformer (diffusers' MotifVideoTransformer3DModel names): Motif
Technologies' 2B text/image-to-video DiT. HunyuanVideo's 3D patches and rotary tables
(hunyuan_video15.VideoPatches), FLUX's double- then single-stream blocks over the T5Gemma 2
prompt states (projected by `context_embedder`), with a text cross-attention shared by the
blocks' video tokens (models.motif_video_blocks); the last `num_decoder_layers` single blocks
are a DDT decoder: the patch embeddings read again, attending to themselves and to the
encoder blocks' video output (no text, no mask). Image-to-video: the first frame's latents
and a mask ride in the input channels, and SigLIP's states of the picture, projected
(`image_embedder`), go before the text tokens.

    model = MotifVideoTransformer3DModel(config, device=device)
    velocity = model(latents, timestep, states, mask)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, nn, take_slice

from .dit_layers import AdaLayerNormContinuous
from .hunyuan_video15 import ImageProjection, TimeEmbedding, VideoPatches
from .hunyuanimage import PatchEmbed
from .layers import Place
from .motif_video_blocks import (
    CrossInputs,
    MotifSingleTransformerBlock,
    MotifTransformerBlock,
    checked_ratio,
)
from .transformer_ops import cast
from .wan_embeddings import TextProjection

__all__ = ["MotifVideoTransformer3DModel"]

_DEFAULTS: dict[str, Any] = {
    "in_channels": 33, "out_channels": 16, "num_attention_heads": 24, "attention_head_dim": 128,
    "num_layers": 20, "num_single_layers": 40, "num_decoder_layers": 0, "mlp_ratio": 4.0,
    "patch_size": 2, "patch_size_t": 1, "qk_norm": "rms_norm", "norm_type": "layer_norm",
    "text_embed_dim": 4096, "image_embed_dim": None, "rope_theta": 256.0,
    "rope_axes_dim": (16, 56, 56), "enable_text_cross_attention_dual": False,
    "enable_text_cross_attention_single": False,
}


def _checked(config: dict[str, Any]) -> dict[str, Any]:
    """The config with diffusers' defaults, ValueError for what this model does not run."""
    cfg = {**_DEFAULTS, **config}
    axes = tuple(cfg["rope_axes_dim"])
    if len(axes) != 3 or sum(axes) != cfg["attention_head_dim"] or any(a % 2 for a in axes):
        raise ValueError(f"rope_axes_dim {list(axes)} must be 3 even sizes (frames, rows, "
                         f"columns) adding up to attention_head_dim {cfg['attention_head_dim']}")
    if cfg["qk_norm"] != "rms_norm" or cfg["norm_type"] != "layer_norm":
        raise ValueError(f"qk_norm {cfg['qk_norm']!r} / norm_type {cfg['norm_type']!r} are not "
                         "supported (Motif-Video's are 'rms_norm' and 'layer_norm')")
    if not 0 <= cfg["num_decoder_layers"] <= cfg["num_single_layers"]:
        raise ValueError(f"num_decoder_layers {cfg['num_decoder_layers']} must lie in 0.."
                         f"num_single_layers ({cfg['num_single_layers']})")
    patch = (int(cfg["patch_size_t"]), int(cfg["patch_size"]), int(cfg["patch_size"]))
    return {**cfg, "rope_axes_dim": axes, "patch": patch,
            "out_channels": cfg["out_channels"] or cfg["in_channels"]}


class MotifVideoTransformer3DModel(VideoPatches, nn.Module):
    """Latents with their condition channels (B, in_channels, T, H, W), the prompt's T5Gemma
    2 states and, for image-to-video, SigLIP's picture states -> the velocity (B,
    out_channels, T, H, W), diffusers' layout.

    Config: `transformer/config.json` of a Motif-Video folder (diffusers' fields). Parameter
    names are diffusers' (`x_embedder.proj.weight`, `context_embedder.linear_1.weight`,
    `image_embedder.norm_in.weight`, `time_text_embed.timestep_embedder.linear_1.weight`,
    `transformer_blocks.0.cross_attn.to_q.weight`, `single_transformer_blocks.0.proj_mlp.weight`,
    ...). diffusers: `MotifVideoTransformer3DModel(hidden_states, timestep,
    encoder_hidden_states, encoder_attention_mask, image_embeds, return_dict=False)[0]`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = self.config = _checked(config)
        place: Place = {"dtype": dtype, "device": device}
        heads, head_dim = cfg["num_attention_heads"], cfg["attention_head_dim"]
        dim = heads * head_dim
        self.x_embedder = PatchEmbed(cfg["in_channels"], dim, cfg["patch"], place)
        self.context_embedder = TextProjection(cfg["text_embed_dim"], dim, place)
        if cfg["image_embed_dim"] is not None:
            self.image_embedder = ImageProjection(cfg["image_embed_dim"], dim, place)
        self.time_text_embed = TimeEmbedding(dim, place, meanflow=False)
        ratio = cfg["mlp_ratio"]
        self.transformer_blocks = nn.ModuleList([MotifTransformerBlock(
            dim, heads, head_dim, place, mlp_ratio=checked_ratio(ratio),
            cross=bool(cfg["enable_text_cross_attention_dual"]))
            for _ in range(cfg["num_layers"])])
        self.encoders = cfg["num_single_layers"] - cfg["num_decoder_layers"]
        self.single_transformer_blocks = nn.ModuleList([MotifSingleTransformerBlock(
            dim, heads, head_dim, place, mlp_ratio=float(ratio),
            cross=bool(cfg["enable_text_cross_attention_single"]) and i < self.encoders)
            for i in range(cfg["num_single_layers"])])
        self.norm_out = AdaLayerNormContinuous(dim, place)
        self.proj_out = nn.Linear(dim, math.prod(cfg["patch"]) * cfg["out_channels"], **place)
        self._tables: dict[tuple[Any, ...], tuple[Tensor, Tensor]] = {}

    def encode_text(self, states: Any, image_embeds: Any = None) -> Tensor:
        """The context (B, Li + L, dim) of T5Gemma 2's states (B, L, text_embed_dim) and, in
        front, SigLIP's picture states (B, Li, image_embed_dim) projected: the same at every
        step (a pipeline makes it once)."""
        context = self.context_embedder(self._device_states(states))
        if image_embeds is None:
            return context
        if self.config["image_embed_dim"] is None:
            raise ValueError("this Motif-Video transformer has no image_embedder (a "
                             "text-to-video checkpoint); give no image_embeds")
        picture = self.image_embedder(self._device_states(image_embeds))
        if picture.shape[0] != context.shape[0]:
            raise ValueError(f"image_embeds are of {picture.shape[0]} pictures for "
                             f"{context.shape[0]} prompts")
        return concatenate([picture, context], axis=1)

    def _device_states(self, states: Any) -> Tensor:
        x = states if isinstance(states, Tensor) else asarray(
            np.asarray(states, np.float32), device=self.device)
        if x.ndim != 3:
            raise ValueError(f"states must be (batch, tokens, features), got shape {x.shape}")
        return cast(x, self.dtype)

    def _masks(self, mask: Any, batch: int, image: int, text: int, tokens: int
               ) -> tuple[Tensor | None, Tensor | None]:
        """The joint attention's key mask (B, 1, 1, image + text + tokens) and the
        cross-attention's (B, 1, 1, text), uint32, of the text mask (B, text) (None: every
        key real, also for a mask keeping every token)."""
        if mask is None:
            return None, None
        keep = np.asarray(mask) != 0
        if keep.shape != (batch, text):
            raise ValueError(f"encoder_attention_mask must be (batch, tokens) = ({batch}, "
                             f"{text}), got {keep.shape}")
        if not keep.any(axis=1).all():
            raise ValueError("encoder_attention_mask keeps no token of a prompt")
        if keep.all():
            return None, None
        flags = np.concatenate([np.ones((batch, image), bool), keep,
                                np.ones((batch, tokens), bool)], axis=1)

        def upload(values: np.ndarray) -> Tensor:
            return asarray(values.astype(np.uint32).reshape(batch, 1, 1, -1), device=self.device)
        return upload(flags), upload(keep)

    def forward(self, hidden_states: Any, timestep: Any, encoder_hidden_states: Any = None,
                encoder_attention_mask: Any = None, image_embeds: Any = None, *,
                context: Tensor | None = None, image_tokens: int = 0) -> Tensor:
        """hidden_states (B, in_channels, T, H, W) latents (a Tensor or host array);
        timestep (B,) in diffusers' scale (0..1000); encoder_hidden_states (B, L,
        text_embed_dim) T5Gemma 2's states with encoder_attention_mask (B, L) nonzero for
        the kept tokens (None: all); image_embeds (B, Li, image_embed_dim) SigLIP's picture
        states (image-to-video); or `context` = encode_text(states, image_embeds) made once,
        `image_tokens` the picture's tokens at its front (image_embeds' Li).
        Returns the velocity (B, out_channels, T, H, W) in the model's dtype."""
        patches, grid = self._latents(hidden_states)
        batch = patches.shape[0]
        if context is None:
            if encoder_hidden_states is None:
                raise ValueError("give T5Gemma 2's states (encoder_hidden_states) or context")
            context = self.encode_text(encoder_hidden_states, image_embeds)
        if context.shape[0] != batch:
            raise ValueError(f"the text is of {context.shape[0]} prompts for {batch} latents")
        length = context.shape[1]
        image = int(image_tokens) if image_embeds is None else np.shape(image_embeds)[1]
        tokens = math.prod(grid)
        mask, text_mask = self._masks(encoder_attention_mask, batch, image, length - image,
                                      tokens)
        t = np.broadcast_to(np.asarray(timestep, np.float32).reshape(-1), (batch,))
        temb = self.time_text_embed(np.ascontiguousarray(t), None, self.device)
        activated = nn.silu(temb)
        x = first = self.x_embedder(patches)
        tables = self.rotary(grid, length)
        cross = CrossInputs(image, length, self.rotary(grid, 0), text_mask)
        # 1. double-stream blocks; 2. single-stream encoder blocks over text + video
        for block in self.transformer_blocks:
            x, context = block(x, context, temb, tables, activated=activated, mask=mask,
                               cross=cross)
        joined = concatenate([context, x], axis=1)
        singles = list(self.single_transformer_blocks)
        for one in singles[:self.encoders]:
            joined = one(joined, temb, tables, activated=activated, mask=mask, cross=cross)
        x = take_slice(joined, length, joined.shape[1], axis=1)
        # 3. the DDT decoder: the patch embeddings again, beside the encoder's video tokens
        if self.encoders < len(singles):
            joined = concatenate([x, first], axis=1)
            decoder_tables = self.rotary(grid, tokens)
            for one in singles[self.encoders:]:
                joined = one(joined, temb, decoder_tables, activated=activated)
            x = take_slice(joined, tokens, joined.shape[1], axis=1)
        out = self.proj_out(self.norm_out(x, temb, activated))
        return self._unpatched(out, grid)
