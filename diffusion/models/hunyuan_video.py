"""The HunyuanVideo (1.0) transformer (diffusers' HunyuanVideoTransformer3DModel names):
HunyuanImage 2.1's double- and single-stream blocks and token refiner over the prompt's
llava-llama-3 states (hunyuanimage.DualStreamTransformer), on 3D patches of the video's
latents with rotary positions (frames, rows, columns) as HunyuanVideo 1.5's
(hunyuan_video15.VideoPatches); the conditioning vector the timestep's embedding, plus the
distilled guidance's, plus CLIP's pooled prompt projected (`time_text_embed`, FLUX's).
Image-to-video checkpoints: "latent_concat" reads the picture's latents and a mask as more
input channels; "token_replace" modulates the first latent frame's tokens (the picture's
clean latents) at timestep 0 (hunyuan_video_token_replace).

diffusers pads the prompt to a fixed length and masks the first `mask.sum()` tokens in;
here each prompt's kept tokens only are joined (HunyuanImage's text stream), which is the
same for the text encoder's right-padded masks, the only ones taken.

    model = HunyuanVideoTransformer3DModel(config, device=device)
    velocity = model(latents, timestep, states, mask, pooled, guidance=guidance)
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, nn

from .dit_layers import (
    AdaLayerNormContinuous,
    CombinedTimestepTextProjEmbeddings,
    JointTransformerBlock,
)
from .flux import FluxSingleTransformerBlock
from .hunyuan_video15 import VideoPatches
from .hunyuan_video_token_replace import (
    FirstFrame,
    TokenReplaceSingleTransformerBlock,
    TokenReplaceTransformerBlock,
)
from .hunyuanimage import DualStreamTransformer, PatchEmbed
from .hunyuanimage_text import PromptText, TokenRefiner, prompt_text
from .layers import Place
from .step_cache import BranchCache
from .transformer_ops import cast

__all__ = ["HunyuanVideoTransformer3DModel"]

_DEFAULTS: dict[str, Any] = {
    "in_channels": 16, "out_channels": 16, "num_attention_heads": 24, "attention_head_dim": 128,
    "num_layers": 20, "num_single_layers": 40, "num_refiner_layers": 2, "mlp_ratio": 4.0,
    "patch_size": 2, "patch_size_t": 1, "qk_norm": "rms_norm", "guidance_embeds": True,
    "text_embed_dim": 4096, "pooled_projection_dim": 768, "rope_theta": 256.0,
    "rope_axes_dim": (16, 56, 56), "image_condition_type": None,
}


def _checked(config: dict[str, Any]) -> dict[str, Any]:
    """The config with diffusers' defaults, ValueError for what this model does not run."""
    cfg = {**_DEFAULTS, **config}
    axes = tuple(cfg["rope_axes_dim"])
    if len(axes) != 3 or sum(axes) != cfg["attention_head_dim"] or any(a % 2 for a in axes):
        raise ValueError(f"rope_axes_dim {list(axes)} must be 3 even sizes (frames, rows, "
                         f"columns) adding up to attention_head_dim {cfg['attention_head_dim']}")
    if cfg["mlp_ratio"] != 4.0 or cfg["qk_norm"] != "rms_norm":
        raise ValueError(f"mlp_ratio {cfg['mlp_ratio']} / qk_norm {cfg['qk_norm']!r} are not "
                         "supported (HunyuanVideo's are 4.0 and 'rms_norm')")
    if cfg["image_condition_type"] not in (None, "latent_concat", "token_replace"):
        raise ValueError(f"image_condition_type {cfg['image_condition_type']!r} is not "
                         "supported: this transformer runs text-to-video checkpoints and "
                         "image-to-video ones ('latent_concat', 'token_replace')")
    patch = (int(cfg["patch_size_t"]), int(cfg["patch_size"]), int(cfg["patch_size"]))
    return {**cfg, "rope_axes_dim": axes, "patch": patch,
            "out_channels": cfg["out_channels"] or cfg["in_channels"]}


class HunyuanVideoTransformer3DModel(VideoPatches, DualStreamTransformer):
    """Latents (B, in_channels, T, H, W), the prompt's llava-llama-3 states and CLIP's
    pooled projection -> the velocity (B, out_channels, T, H, W), diffusers' layout.

    Config: `transformer/config.json` of a HunyuanVideo folder (diffusers' fields).
    Parameter names are diffusers' (`x_embedder.proj.weight`,
    `context_embedder.token_refiner.refiner_blocks.0.attn.to_q.weight`,
    `time_text_embed.guidance_embedder.linear_1.weight`,
    `time_text_embed.text_embedder.linear_1.weight`,
    `transformer_blocks.0.attn.add_q_proj.weight`, `single_transformer_blocks.0.proj_mlp.weight`,
    ...). diffusers: `HunyuanVideoTransformer3DModel(hidden_states, timestep,
    encoder_hidden_states, encoder_attention_mask, pooled_projections, guidance,
    return_dict=False)[0]`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = self.config = _checked(config)
        place: Place = {"dtype": dtype, "device": device}
        heads, head_dim = cfg["num_attention_heads"], cfg["attention_head_dim"]
        dim = heads * head_dim
        self.x_embedder = PatchEmbed(cfg["in_channels"], dim, cfg["patch"], place)
        self.context_embedder = TokenRefiner(cfg["text_embed_dim"], heads, head_dim,
                                             cfg["num_refiner_layers"], place)
        self.context_embedder_2 = None  # no glyph text
        self.time_text_embed = CombinedTimestepTextProjEmbeddings(
            dim, cfg["pooled_projection_dim"], place, guidance=bool(cfg["guidance_embeds"]))
        # token_replace: the same weights, the first frame's tokens modulated apart
        replace = cfg["image_condition_type"] == "token_replace"
        double = TokenReplaceTransformerBlock if replace else JointTransformerBlock
        single = TokenReplaceSingleTransformerBlock if replace else FluxSingleTransformerBlock
        self.transformer_blocks = nn.ModuleList(
            [double(dim, heads, head_dim, place, qk_norm=True)
             for _ in range(cfg["num_layers"])])
        self.single_transformer_blocks = nn.ModuleList(
            [single(dim, heads, head_dim, place) for _ in range(cfg["num_single_layers"])])
        self.norm_out = AdaLayerNormContinuous(dim, place)
        self.proj_out = nn.Linear(dim, math.prod(cfg["patch"]) * cfg["out_channels"], **place)
        self._tables: dict[tuple[Any, ...], tuple[Tensor, Tensor]] = {}

    def prepare_text(self, states: Any, mask: Any, glyph: Any = None, glyph_mask: Any = None
                     ) -> PromptText:
        """HunyuanImage's (no glyph text), for masks keeping each prompt's first tokens
        only (the text encoder's right padding); ValueError for another mask, where
        diffusers' blocks would read padding tokens."""
        keep = np.asarray(mask) != 0 if mask is not None else None
        if keep is not None and keep.ndim == 2 and (keep[:, 1:] & ~keep[:, :-1]).any():
            raise ValueError("encoder_attention_mask must keep each prompt's first tokens and "
                             "drop the rest (right padding, as the text encoder's mask)")
        return super().prepare_text(states, mask)

    def _host(self, values: Any, batch: int, name: str) -> np.ndarray:
        """A (B,) conditioning input as float32 host values rounded to the model's dtype (as
        diffusers' pipeline casts them), a scalar for every sample."""
        array = np.asarray(values, dtype=np.float32).reshape(-1)
        if array.size not in (1, batch):
            raise ValueError(f"{name} must be one value or one per sample ({batch}), got "
                             f"{array.size}")
        return np.broadcast_to(array, (batch,)).astype(self.dtype).astype(np.float32)

    def _temb(self, batch: int, timestep: Any, pooled: Any, guidance: Any
              ) -> tuple[np.ndarray, Tensor]:
        """The timestep as host values and temb (B, dim): the timestep's embedding + the
        guidance's (distilled checkpoints; diffusers ignores a guidance given to others) +
        pooled (B, pooled_projection_dim) projected."""
        width = self.config["pooled_projection_dim"]
        if pooled is None:
            raise ValueError("pooled_projections is required: CLIP's pooled prompt states "
                             f"(batch, {width})")
        pooled = pooled if isinstance(pooled, Tensor) else asarray(
            np.asarray(pooled, np.float32), device=self.device)
        if pooled.shape != (batch, width):
            raise ValueError(f"pooled_projections must be (batch, {width}) = ({batch}, "
                             f"{width}), got {pooled.shape}")
        if self.config["guidance_embeds"] and guidance is None:
            raise ValueError("this HunyuanVideo transformer is guidance-distilled: pass "
                             "guidance= (the distilled scale x 1000)")
        g = self._host(guidance, batch, "guidance") if self.config["guidance_embeds"] else None
        t = self._host(timestep, batch, "timestep")
        return t, self.time_text_embed(t, cast(pooled, self.dtype), g)

    def first_frame(self, batch: int, grid: tuple[int, int, int], pooled: Any
                    ) -> FirstFrame | None:
        """token_replace checkpoints: the first latent frame's tokens (the picture's clean
        latents) and their conditioning, timestep 0's embedding + pooled projected (no
        guidance); None for the others. diffusers: `HunyuanVideoConditionEmbedding`'s
        `token_replace_emb`."""
        if self.config["image_condition_type"] != "token_replace":
            return None
        pooled = pooled if isinstance(pooled, Tensor) else asarray(
            np.asarray(pooled, np.float32), device=self.device)
        temb = self.time_text_embed(np.zeros(batch, np.float32), cast(pooled, self.dtype))
        return FirstFrame(temb, nn.silu(temb), grid[1] * grid[2])

    def forward(self, hidden_states: Any, timestep: Any, encoder_hidden_states: Any,
                encoder_attention_mask: Any = None, pooled_projections: Any = None,
                guidance: Any = None, *, cache: BranchCache | None = None) -> Tensor:
        """hidden_states (B, in_channels, T, H, W) latents (a Tensor or host array);
        timestep (B,) in diffusers' scale (0..1000); encoder_hidden_states (B, L,
        text_embed_dim) the text encoder's states, encoder_attention_mask (B, L) nonzero for
        each prompt's first kept tokens; or, made once for every step, `prepare_text`'s
        PromptText of them as encoder_hidden_states (the mask None); pooled_projections (B,
        pooled_projection_dim) CLIP's pooled states; guidance (B,) the distilled scale x
        1000 (distilled checkpoints). `cache`: a step cache branch the blocks run through.
        Returns the velocity (B, out_channels, T, H, W) in the model's dtype."""
        patches, grid = self._latents(hidden_states)
        batch = patches.shape[0]
        text = prompt_text(encoder_hidden_states, (encoder_attention_mask,), self.prepare_text)
        if text.batch != batch:
            raise ValueError(f"the text is of {text.batch} prompts for {batch} latents; give "
                             "one prompt per latent")
        # 1. conditioning; the text stream refined at the timestep; the patches
        t, temb = self._temb(batch, timestep, pooled_projections, guidance)
        context = self._text(text, t)
        x = self.x_embedder(patches)
        tables = self.rotary(grid, context.shape[1])
        # 2. the blocks; patches back to (B, C, T, H, W)
        out = self.denoise(x, context, temb, tables, text.key_mask(x.shape[1], self.device),
                           cache, self.first_frame(batch, grid, pooled_projections))
        return self._unpatched(out, grid)
