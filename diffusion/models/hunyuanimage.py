"""The HunyuanImage 2.1 transformer (diffusers' HunyuanImageTransformer2DModel names): FLUX's
double- and single-stream blocks (dit_layers.JointTransformerBlock, flux's single block) over
latent patches and a text stream of Qwen2.5-VL's refined prompt tokens joined by ByT5's
glyph tokens (hunyuanimage_text); 2D rotary positions (rows, columns) on the image only; the
conditioning vector the timestep's embedding, plus the distilled checkpoint's guidance
embedding, the timestep averaged with meanflow's `timestep_r` embedding where given.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, nn, permute, take_slice

from .dit_layers import AdaLayerNormContinuous, JointTransformerBlock, TimestepEmbedding
from .flux import FluxSingleTransformerBlock
from .hunyuanimage_text import (
    ByT5TextProjection,
    PromptText,
    TokenRefiner,
    device_states,
    gather_tokens,
    glyph_part,
    join_plan,
    kept_tokens,
    prompt_text,
)
from .layers import Place, ProjOutPlace
from .step_cache import BranchCache, run_blocks
from .transformer_ops import cast, kept, rope_tables
from .wan_embeddings import PatchEmbedding

__all__ = ["DualStreamTransformer", "HunyuanImageTransformer2DModel"]

_DEFAULTS: dict[str, Any] = {
    "in_channels": 64, "out_channels": 64, "num_attention_heads": 28, "attention_head_dim": 128,
    "num_layers": 20, "num_single_layers": 40, "num_refiner_layers": 2, "mlp_ratio": 4.0,
    "patch_size": (1, 1), "qk_norm": "rms_norm", "guidance_embeds": False,
    "text_embed_dim": 3584, "text_embed_2_dim": None, "rope_theta": 256.0,
    "rope_axes_dim": (64, 64), "use_meanflow": False,
}


def _checked(config: dict[str, Any]) -> dict[str, Any]:
    """The config with diffusers' defaults, ValueError for what this model does not run."""
    cfg = {**_DEFAULTS, **config}
    patch, axes = tuple(cfg["patch_size"]), tuple(cfg["rope_axes_dim"])
    if len(patch) != 2:
        raise ValueError(f"patch_size {list(patch)}: only 2D latents (HunyuanImage 2.1's 2 "
                         "sizes) are supported, not the refiner's 3D ones")
    if len(axes) != 2 or sum(axes) != cfg["attention_head_dim"]:
        raise ValueError(f"rope_axes_dim {list(axes)} must be 2 sizes adding up to "
                         f"attention_head_dim {cfg['attention_head_dim']}")
    if cfg["mlp_ratio"] != 4.0 or cfg["qk_norm"] != "rms_norm":
        raise ValueError(f"mlp_ratio {cfg['mlp_ratio']} / qk_norm {cfg['qk_norm']!r} are not "
                         "supported (HunyuanImage 2.1's are 4.0 and 'rms_norm')")
    return {**cfg, "patch_size": patch, "rope_axes_dim": axes}


class PatchEmbed(nn.Module):
    """`proj`: a Conv2d (Conv3d for a 3-size `patch`) whose kernel equals its stride.
    diffusers: `HunyuanImagePatchEmbed`, `HunyuanVideo15PatchEmbed`."""

    def __init__(self, channels: int, dim: int, patch: tuple[int, ...], place: Place) -> None:
        self.proj = PatchEmbedding(channels, dim, patch, place)  # type: ignore[arg-type]

    def forward(self, patches: Tensor) -> Tensor:
        return self.proj(patches)


class TimeGuidanceEmbedding(nn.Module):
    """temb (B, dim): timestep_embedder of the timestep's 256 sinusoids (cos first), averaged
    with timestep_embedder_r's of timestep_r (meanflow), plus guidance_embedder's of the
    guidance (the distilled checkpoint). diffusers: `HunyuanImageCombinedTimeGuidanceEmbedding`."""

    def __init__(self, dim: int, place: Place, *, guidance: bool, meanflow: bool) -> None:
        self.dtype = place["dtype"]
        self.timestep_embedder = TimestepEmbedding(256, dim, place)
        self.timestep_embedder_r = TimestepEmbedding(256, dim, place) if meanflow else None
        self.guidance_embedder = TimestepEmbedding(256, dim, place) if guidance else None

    def _embed(self, layer: TimestepEmbedding, values: Any, device: Device) -> Tensor:
        values = values if isinstance(values, Tensor) else values.astype(np.float32)
        return layer(nn.timestep_embedding(values, 256, flip_sin_to_cos=True,
                                           downscale_freq_shift=0, dtype=self.dtype,
                                           device=device))

    def forward(self, timestep: Any, timestep_r: Any, guidance: Any, device: Device) -> Tensor:
        """Each (B,) host values in the model's dtype (diffusers' pipeline casts them so), or
        float32 Tensors of values so rounded (a replayed step's)."""
        temb = self._embed(self.timestep_embedder, timestep, device)
        if timestep_r is not None and self.timestep_embedder_r is not None:
            temb = (temb + self._embed(self.timestep_embedder_r, timestep_r, device)) * 0.5
        if guidance is not None and self.guidance_embedder is not None:
            temb = temb + self._embed(self.guidance_embedder, guidance, device)
        return temb


class DualStreamTransformer(ProjOutPlace, nn.Module):
    """What HunyuanImage 2.1's and HunyuanVideo's transformers share: the text stream of the
    refined prompt (`prepare_text`, made once per prompt) and FLUX's double- then
    single-stream blocks, the final modulated norm and projection (`denoise`)."""

    config: dict[str, Any]
    context_embedder: TokenRefiner
    context_embedder_2: ByT5TextProjection | None
    transformer_blocks: nn.ModuleList[JointTransformerBlock]
    single_transformer_blocks: nn.ModuleList[FluxSingleTransformerBlock]
    norm_out: AdaLayerNormContinuous

    def prepare_text(self, states: Any, mask: Any, glyph: Any = None, glyph_mask: Any = None
                     ) -> PromptText:
        """A prompt batch's part of every step that no timestep changes, made once per
        prompt (forward takes it as encoder_hidden_states): the kept tokens of states (B,
        L, text_embed_dim) (mask (B, L) nonzero for them) projected for the refiner, and
        their mean; the glyph's, ByT5's glyph (B, L2, text_embed_2_dim) with glyph_mask,
        projected where the model has its projection."""
        states = device_states(states, self.dtype, self.device, "encoder_hidden_states")
        batch = states.shape[0]
        rows = kept_tokens(mask, batch, states.shape[1], "encoder_attention_mask")
        if any(len(r) == 0 for r in rows):
            raise ValueError("encoder_attention_mask keeps no token of a prompt; the template's "
                             "tokens are always kept: pass the text encoder's mask")
        # a padding token 0 is kept: diffusers' refiner lets every query see it
        first_padding = np.array([r[0] != 0 for r in rows])
        rows = [np.concatenate([[0], r]) if pad else r for r, pad in zip(rows, first_padding)]
        tokens, real = gather_tokens(states, rows)
        refiner = self.context_embedder.prepare(tokens, real, first_padding)
        if first_padding.any():
            real = np.ones(tokens.shape[:2], bool) if real is None else real
            real[:, 0] &= ~first_padding
        parts, projected = [(tokens.shape[1], real)], None
        if self.context_embedder_2 is not None and glyph is not None:
            glyph_tokens = glyph_part(self.context_embedder_2, glyph, glyph_mask, batch,
                                      self.dtype, self.device)
            if glyph_tokens is not None:
                projected = glyph_tokens[0]
                parts.insert(0, (projected.shape[1], glyph_tokens[1]))
        plan = join_plan(parts, batch, self.device)
        return PromptText(batch, refiner, projected, plan, real if plan is None else plan.real)

    def _text(self, text: PromptText, timestep: Any) -> Tensor:
        """The text stream (B, T, dim): the prompt's tokens refined at `timestep`, joined
        after the glyph's where it has them."""
        return text.stream(self.context_embedder(text.refiner, timestep))

    def denoise(self, x: Tensor, context: Tensor, temb: Tensor, tables: tuple[Tensor, Tensor],
                mask: Tensor | None, cache: BranchCache | None, first: Any = None) -> Tensor:
        """The patches x (B, N, dim) and text stream context (B, T, dim) through the blocks
        at temb (B, dim), `tables` the rotary tables of the text then the patches, `mask`
        the key mask (None: all real); `cache`: a step cache branch; `first`: HunyuanVideo's
        token replace (hunyuan_video_token_replace.FirstFrame, its blocks take it). Returns
        proj_out's (B, N, patch volume x out_channels)."""
        text_length = context.shape[1]
        double = {} if first is None else {"first": first}
        single = {} if first is None else {"first": first.at(text_length)}
        activated = nn.silu(temb)  # every adaLN's input, once
        # double-stream blocks, then one stream of text + image tokens (the first block
        # apart: a step cache decides after it whether the others run)
        blocks, singles = list(self.transformer_blocks), list(self.single_transformer_blocks)

        def head(x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
            if not blocks:
                return x, context
            x, context = blocks[0](x, context, temb, tables, activated=activated, mask=mask,
                                   **double)
            return x, context

        def tail(x: Tensor, context: Tensor) -> Tensor:
            for block in blocks[1:]:
                x, context = block(x, context, temb, tables, activated=activated, mask=mask,
                                   **double)
            x = concatenate([context, x], axis=1)
            for one in singles:
                x = one(x, temb, tables, activated=activated, mask=mask, **single)
            return take_slice(x, text_length, x.shape[1], axis=1)

        def probe(x: Tensor) -> Tensor:
            return blocks[0].modulated_input(x, temb)

        x = run_blocks(cache, x, context, head, tail, probe if blocks else None)
        return self.proj_out(self.norm_out(x, temb, activated))


class HunyuanImageTransformer2DModel(DualStreamTransformer):
    """Latents (B, in_channels, H, W) and the prompt's states -> the velocity (B,
    out_channels, H, W), diffusers' layout.

    Config: `transformer/config.json` of a HunyuanImage 2.1 folder (diffusers' fields; 2D
    patches only). Parameter names are diffusers' (`x_embedder.proj.weight`,
    `context_embedder.token_refiner.refiner_blocks.0.attn.to_q.weight`,
    `context_embedder_2.linear_1.weight`, `time_guidance_embed.timestep_embedder.linear_1.weight`,
    `transformer_blocks.0.attn.add_q_proj.weight`, `single_transformer_blocks.0.proj_mlp.weight`,
    ...). diffusers: `HunyuanImageTransformer2DModel(hidden_states, timestep,
    encoder_hidden_states, encoder_attention_mask, timestep_r, encoder_hidden_states_2,
    encoder_attention_mask_2, guidance, return_dict=False)[0]`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = self.config = _checked(config)
        place: Place = {"dtype": dtype, "device": device}
        heads, head_dim = cfg["num_attention_heads"], cfg["attention_head_dim"]
        dim = heads * head_dim
        self.x_embedder = PatchEmbed(cfg["in_channels"], dim, cfg["patch_size"], place)
        self.context_embedder = TokenRefiner(cfg["text_embed_dim"], heads, head_dim,
                                             cfg["num_refiner_layers"], place)
        self.context_embedder_2 = (ByT5TextProjection(cfg["text_embed_2_dim"], dim, place)
                                   if cfg["text_embed_2_dim"] is not None else None)
        self.time_guidance_embed = TimeGuidanceEmbedding(
            dim, place, guidance=bool(cfg["guidance_embeds"]), meanflow=bool(cfg["use_meanflow"]))
        self.transformer_blocks = nn.ModuleList(
            [JointTransformerBlock(dim, heads, head_dim, place, qk_norm=True)
             for _ in range(cfg["num_layers"])])
        self.single_transformer_blocks = nn.ModuleList(
            [FluxSingleTransformerBlock(dim, heads, head_dim, place)
             for _ in range(cfg["num_single_layers"])])
        self.norm_out = AdaLayerNormContinuous(dim, place)
        self.proj_out = nn.Linear(dim, math.prod(cfg["patch_size"]) * (
            cfg["out_channels"] or cfg["in_channels"]), **place)
        self._tables: dict[tuple[Any, ...], tuple[Tensor, Tensor]] = {}

    def rotary(self, rows: int, columns: int, text_length: int) -> tuple[Tensor, Tensor]:
        """cos/sin tables for text_length text tokens (position 0 on both axes: no rotation)
        then the rows x columns patches at (row, column), kept on the device per size.
        diffusers: `HunyuanImageRotaryPosEmbed` (float32 frequencies; ours float64, then
        float32)."""
        def make() -> tuple[Tensor, Tensor]:
            grid = np.stack(np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij"), -1)
            ids = np.concatenate([np.zeros((text_length, 2)), grid.reshape(-1, 2)])
            return rope_tables(ids, self.config["rope_axes_dim"], self.config["rope_theta"],
                               device=self.device)
        return kept(self._tables, (rows, columns, text_length, self.device), make)

    def _host(self, values: Any, batch: int, name: str) -> Any:
        """A (B,) conditioning input as host values of the model's dtype (a scalar for every
        sample), None where not given; a float32 Tensor (B,) (a replayed step's) rounded to the
        model's dtype on the device and kept float32."""
        if values is None:
            return None
        if isinstance(values, Tensor):
            if values.dtype != np.float32 or values.size != batch:
                raise ValueError(f"{name} as a Tensor must be float32, one per sample ({batch}), "
                                 f"got {values.dtype} {values.shape}")
            flat = values.reshape(-1)
            return flat if self.dtype == np.float32 else cast(cast(flat, self.dtype), np.float32)
        array = np.asarray(values, dtype=np.float32).reshape(-1)
        if array.size not in (1, batch):
            raise ValueError(f"{name} must be one value or one per sample ({batch}), got "
                             f"{array.size}")
        return np.broadcast_to(array, (batch,)).astype(self.dtype)

    def _conditioning(self, batch: int, timestep: Any, timestep_r: Any, guidance: Any
                      ) -> tuple[Any, Tensor]:
        """The timestep as host values (a float32 Tensor where given one) and temb (B, dim);
        ValueError where the guidance or
        timestep_r given does not fit the checkpoint."""
        cfg = self.config
        if (guidance is None) == bool(cfg["guidance_embeds"]):
            raise ValueError("this HunyuanImage transformer " + (
                "is guidance-distilled: pass guidance= (the distilled scale x 1000)"
                if cfg["guidance_embeds"] else "has no guidance embedding: pass guidance=None"))
        if timestep_r is not None and not cfg["use_meanflow"]:
            raise ValueError("timestep_r is for meanflow checkpoints (use_meanflow); this one "
                             "has none: pass timestep_r=None")
        t = self._host(timestep, batch, "timestep")
        assert t is not None
        return t, self.time_guidance_embed(t, self._host(timestep_r, batch, "timestep_r"),
                                           self._host(guidance, batch, "guidance"), self.device)

    def forward(self, hidden_states: Any, timestep: Any, encoder_hidden_states: Any,
                encoder_attention_mask: Any, timestep_r: Any = None,
                encoder_hidden_states_2: Any = None, encoder_attention_mask_2: Any = None,
                guidance: Any = None, *, cache: BranchCache | None = None) -> Tensor:
        """hidden_states (B, in_channels, H, W) latents (a Tensor or host array); timestep
        (B,) in diffusers' scale (0..1000), host numbers or a float32 Tensor (a replayed
        step's; timestep_r and guidance then Tensors too); encoder_hidden_states (B, L,
        text_embed_dim) Qwen2.5-VL's states, encoder_attention_mask (B, L) nonzero for the
        kept tokens; encoder_hidden_states_2 (B, L2, text_embed_2_dim) ByT5's glyph states and
        encoder_attention_mask_2 (B, L2) (all zero: no glyph text); or, made once for every
        step, `prepare_text`'s PromptText of them as encoder_hidden_states (the three others
        None); guidance (B,) the
        distilled scale x 1000 for guidance-distilled checkpoints; timestep_r (B,) meanflow's
        next timestep. `cache`: a step cache branch the blocks run through. Returns the
        velocity (B, out_channels, H, W) in the model's dtype."""
        x = hidden_states if isinstance(hidden_states, Tensor) else asarray(
            np.asarray(hidden_states), device=self.device)
        cfg = self.config
        (ph, pw), channels = cfg["patch_size"], cfg["in_channels"]
        if x.ndim != 4 or x.shape[1] != channels or x.shape[2] % ph or x.shape[3] % pw:
            raise ValueError(f"hidden_states must be (batch, {channels}, H, W) latents with H a "
                             f"multiple of {ph} and W of {pw}, got shape {x.shape}")
        batch, _, height, width = x.shape
        rows, columns = height // ph, width // pw
        # 1. conditioning; the text stream; the patches (C, ph, pw flattened, as the conv)
        text = prompt_text(encoder_hidden_states, (encoder_attention_mask,
                           encoder_hidden_states_2, encoder_attention_mask_2),
                           self.prepare_text)
        if text.batch != batch:
            raise ValueError(f"the text is of {text.batch} prompts for {batch} latents; give "
                             "one prompt per latent")
        t, temb = self._conditioning(batch, timestep, timestep_r, guidance)
        context = self._text(text, t)
        patches = permute(cast(x, self.dtype).reshape(batch, channels, rows, ph, columns, pw),
                          (0, 2, 4, 1, 3, 5)).reshape(batch, rows * columns, channels * ph * pw)
        x = self.x_embedder(patches)
        tables = self.rotary(rows, columns, context.shape[1])
        # 2. the blocks; patches back to (B, C, H, W)
        out = self.denoise(x, context, temb, tables, text.key_mask(rows * columns, self.device),
                           cache)
        out_channels = out.shape[2] // (ph * pw)
        return permute(out.reshape(batch, rows, columns, out_channels, ph, pw),
                       (0, 3, 1, 4, 2, 5)).reshape(batch, out_channels, height, width)
