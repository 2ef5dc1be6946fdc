"""The HunyuanVideo 1.5 transformer (diffusers' HunyuanVideo15Transformer3DModel names):
FLUX's double-stream blocks (dit_layers.JointTransformerBlock) over the video's latent
patches and one text stream of SigLIP's image tokens (image-to-video), ByT5's glyph tokens and
Qwen2.5-VL's refined prompt tokens (hunyuanimage_text's refiner and glyph projection, which
HunyuanImage 2.1 shares), each tagged by a row of `cond_type_embed`; 3D rotary positions
(frames, rows, columns) on the video only; the conditioning vector the timestep's
embedding, plus meanflow's `timestep_r` embedding for the super-resolution checkpoints.

diffusers pads the three texts to fixed lengths and masks the padding (and text-to-video's
all-zero image tokens) out of every attention; masked keys change nothing and the text has
no positions, so here each sample's kept tokens only are joined, padded to the batch's
longest with a key mask where their counts differ. What no timestep changes (the gathers,
the image and glyph projections, the refiner's input projections) `prepare_text` makes once
per prompt; forward takes its PromptText or diffusers' raw inputs.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, nn, permute, take_slice

from .dit_layers import AdaLayerNormContinuous, JointTransformerBlock, TimestepEmbedding
from .hunyuanimage import PatchEmbed
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

__all__ = ["HunyuanVideo15Transformer3DModel", "VideoPatches"]

_DEFAULTS: dict[str, Any] = {
    "in_channels": 65, "out_channels": 32, "num_attention_heads": 16, "attention_head_dim": 128,
    "num_layers": 54, "num_refiner_layers": 2, "mlp_ratio": 4.0, "patch_size": 1,
    "patch_size_t": 1, "qk_norm": "rms_norm", "text_embed_dim": 3584,
    "text_embed_2_dim": 1472, "image_embed_dim": 1152, "rope_theta": 256.0,
    "rope_axes_dim": (16, 56, 56), "use_meanflow": False,
}
_MLLM, _GLYPH, _IMAGE = 0, 1, 2  # cond_type_embed's rows


def _checked(config: dict[str, Any]) -> dict[str, Any]:
    """The config with diffusers' defaults, ValueError for what this model does not run."""
    cfg = {**_DEFAULTS, **config}
    axes = tuple(cfg["rope_axes_dim"])
    if len(axes) != 3 or sum(axes) != cfg["attention_head_dim"] or any(a % 2 for a in axes):
        raise ValueError(f"rope_axes_dim {list(axes)} must be 3 even sizes (frames, rows, "
                         f"columns) adding up to attention_head_dim {cfg['attention_head_dim']}")
    if cfg["mlp_ratio"] != 4.0 or cfg["qk_norm"] != "rms_norm":
        raise ValueError(f"mlp_ratio {cfg['mlp_ratio']} / qk_norm {cfg['qk_norm']!r} are not "
                         "supported (HunyuanVideo 1.5's are 4.0 and 'rms_norm')")
    patch = (int(cfg["patch_size_t"]), int(cfg["patch_size"]), int(cfg["patch_size"]))
    return {**cfg, "rope_axes_dim": axes, "patch": patch,
            "out_channels": cfg["out_channels"] or cfg["in_channels"]}


class TimeEmbedding(nn.Module):
    """temb (B, dim): timestep_embedder of the timestep's 256 sinusoids (cos first), plus
    timestep_embedder_r's of timestep_r (meanflow checkpoints; a sum, where HunyuanImage
    2.1 averages). diffusers: `HunyuanVideo15TimeEmbedding`."""

    def __init__(self, dim: int, place: Place, *, meanflow: bool) -> None:
        self.dtype = place["dtype"]
        self.timestep_embedder = TimestepEmbedding(256, dim, place)
        self.timestep_embedder_r = TimestepEmbedding(256, dim, place) if meanflow else None

    def _embed(self, layer: TimestepEmbedding, values: np.ndarray, device: Device) -> Tensor:
        return layer(nn.timestep_embedding(values.astype(np.float32), 256, flip_sin_to_cos=True,
                                           downscale_freq_shift=0, dtype=self.dtype,
                                           device=device))

    def forward(self, timestep: np.ndarray, timestep_r: np.ndarray | None,
                device: Device) -> Tensor:
        """Each (B,) host values in the model's dtype (diffusers' pipelines cast them so)."""
        temb = self._embed(self.timestep_embedder, timestep, device)
        if timestep_r is not None and self.timestep_embedder_r is not None:
            temb = temb + self._embed(self.timestep_embedder_r, timestep_r, device)
        return temb


class ImageProjection(nn.Module):
    """SigLIP's image states (B, Li, image_dim) -> (B, Li, dim): norm_in, linear_1, exact
    GELU, linear_2, norm_out. diffusers: `HunyuanVideo15ImageProjection`."""

    def __init__(self, in_dim: int, dim: int, place: Place) -> None:
        self.norm_in = nn.LayerNorm(in_dim, **place)
        self.linear_1 = nn.Linear(in_dim, in_dim, **place)
        self.linear_2 = nn.Linear(in_dim, dim, **place)
        self.norm_out = nn.LayerNorm(dim, **place)

    def forward(self, x: Tensor) -> Tensor:
        return self.norm_out(self.linear_2(self.linear_1.gelu(self.norm_in(x))))


class VideoPatches(ProjOutPlace):
    """HunyuanVideo's transformers' (1.0's, 1.5's) latents (B, C, T, H, W) as 3D patches and
    back, and their rotary tables over (frames, rows, columns); `config` holds `patch` (pt,
    ph, pw), `in_channels`, `out_channels`, `rope_axes_dim` and `rope_theta`."""

    config: dict[str, Any]
    _tables: dict[tuple[Any, ...], tuple[Tensor, Tensor]]

    def rotary(self, grid: tuple[int, int, int], text_length: int) -> tuple[Tensor, Tensor]:
        """cos/sin tables for text_length text tokens (position 0 on every axis: no rotation)
        then the frames x rows x columns patches at (frame, row, column), kept on the device
        per size. diffusers: `HunyuanVideo15RotaryPosEmbed` (float32 frequencies; ours
        float64, then float32)."""
        def make() -> tuple[Tensor, Tensor]:
            axes = np.meshgrid(*(np.arange(n) for n in grid), indexing="ij")
            ids = np.concatenate([np.zeros((text_length, 3)),
                                  np.stack(axes, -1).reshape(-1, 3)])
            return rope_tables(ids, self.config["rope_axes_dim"], self.config["rope_theta"],
                               device=self.device)
        return kept(self._tables, (grid, text_length, self.device), make)

    def _latents(self, hidden_states: Any) -> tuple[Tensor, tuple[int, int, int]]:
        """The latents' patches (B, L, C * pt * ph * pw) (C, pt, ph, pw flattened, as the
        Conv3d's weight) and the patch grid; ValueError for latents that do not fit.
        diffusers: the patch embedding's Conv3d input."""
        x = hidden_states if isinstance(hidden_states, Tensor) else asarray(
            np.asarray(hidden_states), device=self.device)
        (pt, ph, pw), channels = self.config["patch"], self.config["in_channels"]
        if x.ndim != 5 or x.shape[1] != channels or x.shape[2] % pt or x.shape[3] % ph \
                or x.shape[4] % pw:
            raise ValueError(f"hidden_states must be (batch, {channels}, frames, H, W) latents "
                             f"(with their condition channels where the model takes them), "
                             f"frames a multiple of {pt}, H of {ph} and W of {pw}, got shape "
                             f"{x.shape}")
        batch = x.shape[0]
        grid = (x.shape[2] // pt, x.shape[3] // ph, x.shape[4] // pw)
        patches = permute(cast(x, self.dtype).reshape(
            batch, channels, grid[0], pt, grid[1], ph, grid[2], pw), (0, 2, 4, 6, 1, 3, 5, 7))
        return patches.reshape(batch, math.prod(grid), channels * pt * ph * pw), grid

    def _unpatched(self, out: Tensor, grid: tuple[int, int, int]) -> Tensor:
        """proj_out's (B, L, out_channels * pt * ph * pw) patches back to (B, out_channels,
        T, H, W). diffusers: the reshape and permute ending the transformers' forward."""
        (pt, ph, pw), out_channels = self.config["patch"], self.config["out_channels"]
        out = permute(out.reshape(out.shape[0], *grid, out_channels, pt, ph, pw),
                      (0, 4, 1, 5, 2, 6, 3, 7))
        return out.reshape(out.shape[0], out_channels, grid[0] * pt, grid[1] * ph,
                           grid[2] * pw)


class HunyuanVideo15Transformer3DModel(VideoPatches, nn.Module):
    """Latents with their condition channels (B, in_channels, T, H, W) and the prompt's,
    glyph's and image's states -> the velocity (B, out_channels, T, H, W), diffusers' layout.

    Config: `transformer/config.json` of a HunyuanVideo 1.5 folder (diffusers' fields;
    `target_size` and `task_type` are the pipeline's). Parameter names are diffusers'
    (`x_embedder.proj.weight`, `image_embedder.linear_1.weight`,
    `context_embedder.token_refiner.refiner_blocks.0.attn.to_q.weight`,
    `context_embedder_2.linear_1.weight`, `time_embed.timestep_embedder.linear_1.weight`,
    `cond_type_embed.weight`, `transformer_blocks.0.attn.add_q_proj.weight`, ...).
    diffusers: `HunyuanVideo15Transformer3DModel(hidden_states, timestep,
    encoder_hidden_states, encoder_attention_mask, timestep_r, encoder_hidden_states_2,
    encoder_attention_mask_2, image_embeds, return_dict=False)[0]`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = self.config = _checked(config)
        place: Place = {"dtype": dtype, "device": device}
        heads, head_dim = cfg["num_attention_heads"], cfg["attention_head_dim"]
        dim = heads * head_dim
        self.x_embedder = PatchEmbed(cfg["in_channels"], dim, cfg["patch"], place)
        self.image_embedder = ImageProjection(cfg["image_embed_dim"], dim, place)
        self.context_embedder = TokenRefiner(cfg["text_embed_dim"], heads, head_dim,
                                             cfg["num_refiner_layers"], place)
        self.context_embedder_2 = ByT5TextProjection(cfg["text_embed_2_dim"], dim, place)
        self.time_embed = TimeEmbedding(dim, place, meanflow=bool(cfg["use_meanflow"]))
        self.cond_type_embed = nn.Embedding(3, dim, **place)
        self.transformer_blocks = nn.ModuleList(
            [JointTransformerBlock(dim, heads, head_dim, place, qk_norm=True)
             for _ in range(cfg["num_layers"])])
        self.norm_out = AdaLayerNormContinuous(dim, place)
        self.proj_out = nn.Linear(dim, math.prod(cfg["patch"]) * cfg["out_channels"], **place)
        self._tables: dict[tuple[Any, ...], tuple[Tensor, Tensor]] = {}

    def _host(self, values: Any, batch: int, name: str) -> np.ndarray | None:
        """A (B,) conditioning input as host values of the model's dtype (a scalar for every
        sample), None where not given."""
        if values is None:
            return None
        array = np.asarray(values, dtype=np.float32).reshape(-1)
        if array.size not in (1, batch):
            raise ValueError(f"{name} must be one value or one per sample ({batch}), got "
                             f"{array.size}")
        return np.broadcast_to(array, (batch,)).astype(self.dtype)

    def _tagged(self, tokens: Tensor, kind: int) -> Tensor:
        """tokens (B, N, dim) plus cond_type_embed's row `kind` (which text they are)."""
        row = take_slice(self.cond_type_embed.weight, kind, kind + 1, axis=0)
        return tokens + row.reshape(1, 1, -1)

    def _image(self, image_embeds: Any, batch: int) -> Tensor | None:
        """The image tokens (B, Li, dim), tagged; None for text-to-video (no image_embeds, or
        all of them zero: diffusers' test, which masks them out)."""
        if image_embeds is None:
            return None
        values = image_embeds.numpy() if isinstance(image_embeds, Tensor) else \
            np.asarray(image_embeds)
        if values.ndim != 3 or values.shape[0] != batch \
                or values.shape[2] != self.config["image_embed_dim"]:
            raise ValueError(f"image_embeds must be (batch, tokens, "
                             f"{self.config['image_embed_dim']}) SigLIP states (zeros or None "
                             f"for text-to-video), got shape {values.shape}")
        if not values.any():
            return None
        states = device_states(values, self.dtype, self.device, "image_embeds")
        return self._tagged(self.image_embedder(states), _IMAGE)

    def prepare_text(self, states: Any, mask: Any, glyph: Any = None, glyph_mask: Any = None,
                     image_embeds: Any = None) -> PromptText:
        """A prompt batch's part of every step that no timestep changes, made once per
        prompt (forward takes it as encoder_hidden_states): the kept tokens of states (B, L,
        text_embed_dim) (mask (B, L) nonzero for them) projected for the refiner, and their
        mean; ahead of them, in diffusers' order, the image tokens of image_embeds and the
        kept glyph tokens of glyph (B, L2, text_embed_2_dim) (glyph_mask), projected and
        tagged."""
        states = device_states(states, self.dtype, self.device, "encoder_hidden_states")
        batch = states.shape[0]
        if mask is None:
            raise ValueError("encoder_hidden_states needs encoder_attention_mask (the text "
                             "encoder's attention mask)")
        rows = kept_tokens(mask, batch, states.shape[1], "encoder_attention_mask")
        if any(len(r) == 0 for r in rows):
            raise ValueError("encoder_attention_mask keeps no token of a prompt; the template's "
                             "tokens are always kept: pass the text encoder's mask")
        tokens, real = gather_tokens(states, rows)
        # no token-0 rule here: the refiner's padding is dropped, as diffusers masks it
        refiner = self.context_embedder.prepare(tokens, real, np.zeros(batch, bool))
        parts, ahead = [(tokens.shape[1], real)], []
        glyph_tokens = None if glyph is None else glyph_part(
            self.context_embedder_2, glyph, glyph_mask, batch, self.dtype, self.device)
        if glyph_tokens is not None:
            ahead.append(self._tagged(glyph_tokens[0], _GLYPH))
            parts.insert(0, (ahead[0].shape[1], glyph_tokens[1]))
        image = self._image(image_embeds, batch)
        if image is not None:
            ahead.insert(0, image)
            parts.insert(0, (image.shape[1], None))
        prefix = (None if not ahead else ahead[0] if len(ahead) == 1
                  else concatenate(ahead, axis=1))
        plan = join_plan(parts, batch, self.device)
        return PromptText(batch, refiner, prefix, plan, real if plan is None else plan.real)

    def forward(self, hidden_states: Any, timestep: Any, encoder_hidden_states: Any,
                encoder_attention_mask: Any, timestep_r: Any = None,
                encoder_hidden_states_2: Any = None, encoder_attention_mask_2: Any = None,
                image_embeds: Any = None, *, cache: BranchCache | None = None) -> Tensor:
        """hidden_states (B, in_channels, T, H, W): the latents, the condition latents and
        their mask as the pipelines concatenate them (a Tensor or host array); timestep (B,)
        in diffusers' scale (0..1000); encoder_hidden_states (B, L, text_embed_dim)
        Qwen2.5-VL's states, encoder_attention_mask (B, L) nonzero for the kept tokens;
        encoder_hidden_states_2 (B, L2, text_embed_2_dim) ByT5's glyph states and
        encoder_attention_mask_2 (B, L2) (all zero: no glyph text); image_embeds (B, Li,
        image_embed_dim) SigLIP's states of the first frame (all zero or None: text-to-video;
        read on the host to tell, so a host array rather than a Tensor saves a read-back);
        or, made once for every step, `prepare_text`'s PromptText of those five as
        encoder_hidden_states (the four others None); timestep_r (B,) meanflow's next
        timestep. `cache`: a step cache branch the blocks run through. Returns the velocity
        (B, out_channels, T, H, W) in the model's dtype."""
        patches, grid = self._latents(hidden_states)
        batch, cfg = patches.shape[0], self.config
        if timestep_r is not None and not cfg["use_meanflow"]:
            raise ValueError("timestep_r is for meanflow checkpoints (use_meanflow); this one "
                             "has none: pass timestep_r=None")
        text = prompt_text(encoder_hidden_states, (encoder_attention_mask,
                           encoder_hidden_states_2, encoder_attention_mask_2, image_embeds),
                           self.prepare_text)
        if text.batch != batch:
            raise ValueError(f"the text is of {text.batch} prompts for {batch} latents; give "
                             "one prompt per latent")
        # 1. conditioning; the text stream; the patches
        t = self._host(timestep, batch, "timestep")
        if t is None:
            raise ValueError("timestep is required: the diffusion timestep (0..1000) per sample")
        temb = self.time_embed(t, self._host(timestep_r, batch, "timestep_r"), self.device)
        context = text.stream(self._tagged(self.context_embedder(text.refiner, t), _MLLM))
        x = self.x_embedder(patches)
        text_length = context.shape[1]
        mask = text.key_mask(x.shape[1], self.device)
        tables = self.rotary(grid, text_length)
        activated = nn.silu(temb)  # every adaLN's input, once
        # 2. the double-stream blocks (the first apart: a step cache decides after it whether
        # the others run)
        blocks = list(self.transformer_blocks)

        def head(x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
            if not blocks:
                return x, context
            x, context = blocks[0](x, context, temb, tables, activated=activated, mask=mask)
            return x, context

        def tail(x: Tensor, context: Tensor) -> Tensor:
            for block in blocks[1:]:
                x, context = block(x, context, temb, tables, activated=activated, mask=mask)
            return x

        def probe(x: Tensor) -> Tensor:
            return blocks[0].modulated_input(x, temb)

        x = run_blocks(cache, x, context, head, tail, probe if blocks else None)
        # 3. final modulated norm and projection; patches back to (B, C, T, H, W)
        return self._unpatched(self.proj_out(self.norm_out(x, temb, activated)), grid)
