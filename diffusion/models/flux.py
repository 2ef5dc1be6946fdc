"""The FLUX.1 transformer (diffusers' FluxTransformer2DModel names): double-stream blocks,
single-stream blocks, rotary embeddings over 3 position axes, timestep / guidance / pooled
text conditioning and adaLN modulation. schnell and dev differ only in `guidance_embeds`."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, concatenate, empty, nn, take_slice
from gpustd.shape import put_slice

from .dit_layers import (
    AdaLayerNormContinuous,
    AdaLayerNormZero,
    CombinedTimestepTextProjEmbeddings,
    JointAttention,
    JointTransformerBlock,
    Rope,
    modulated_norm,
    modulated_norm_of,
)
from .layers import Place
from .step_cache import BranchCache, run_blocks
from .transformer_ops import gated_add, gated_linear, rope_heads, rope_tables

_DEFAULTS: dict[str, Any] = {
    "patch_size": 1, "in_channels": 64, "out_channels": None, "num_layers": 19,
    "num_single_layers": 38, "attention_head_dim": 128, "num_attention_heads": 24,
    "joint_attention_dim": 4096, "pooled_projection_dim": 768, "guidance_embeds": False,
    "axes_dims_rope": (16, 56, 56),
}
_ROPE_THETA = 10000.0


class SingleStreamBlock(nn.Module):
    """One stream of text + image tokens: attention and an MLP side by side from one
    modulated norm, projected together (proj_out over their concatenation), gated; the
    modulation given (FLUX's from its own `norm`, Chroma's from its approximator)."""

    # proj_mlp's width in MLP widths: 2 where it gives a SwiGLU's value and gate halves
    # (Ovis-Image's, whose `joint` reads them)
    mlp_halves = 1

    def __init__(self, dim: int, heads: int, head_dim: int, place: Place,
                 mlp_ratio: float = 4.0) -> None:
        hidden = int(dim * mlp_ratio)
        self.proj_mlp = nn.Linear(dim, self.mlp_halves * hidden, **place)
        self.proj_out = nn.Linear(dim + hidden, dim, **place)
        self.attn = JointAttention(dim, heads, head_dim, place, qk_norm=True, context=False,
                                   out=False)

    def modulated(self, x: Tensor, shift: Tensor, scale: Tensor, gate: Tensor, rotary: Rope,
                  mask: Tensor | None = None) -> Tensor:
        """x: text then image tokens (B, L, dim); shift, scale, gate (B, 1, dim)."""
        return self.normed(x, modulated_norm(x, shift, scale, self.input_layers()), gate, rotary,
                           mask)

    def input_layers(self) -> list[nn.Linear]:
        """The layers that read the modulated norm (modulated_norm's readers)."""
        return self.attn.image_inputs((self.proj_mlp,))

    def normed(self, x: Tensor, normed: Tensor, gate: Tensor, rotary: Rope,
               mask: Tensor | None = None) -> Tensor:
        """modulated's rest after its norm: x + gate * proj_out([attention | MLP] of
        normed)."""
        joint = self.joint(normed, rotary, mask, x.dtype)
        if not self.proj_mlp.plain():  # --int8: two passes, as ever
            return gated_add(x, gate, self.proj_out(joint))
        return gated_linear(x, gate, self.proj_out, joint)

    def joint(self, normed: Tensor, rotary: Rope, mask: Tensor | None = None,
              dtype: Any = None) -> Tensor:
        """proj_out's input [attention | gelu(MLP)] (B, L, dim + hidden) of the modulated
        norm `normed`, in `dtype` (the stream's; None: normed's) (a caller gating proj_out's
        output itself: HunyuanVideo's token replace)."""
        if not self.proj_mlp.plain():  # --int8: the MLP's input quantized with q, k and v's
            q, k, v, (mlp,) = self.attn.projections(normed, also=(self.proj_mlp,),
                                                    rotary=rotary)
            attn = self.attn.attend(q, k, v, None, mask)[0]
            return concatenate([attn, nn.gelu(mlp, approximate="tanh")], axis=2)
        # the MLP's GEMM writes its GELU into the right-hand columns, and the attention's
        # output is copied beside it
        batch, length, dim = normed.shape
        joint = empty((batch, length, dim + self.proj_mlp.weight.shape[0]),
                      normed.dtype if dtype is None else dtype, device=normed.device)
        self.proj_mlp.gelu(normed, approximate="tanh", out=joint, start=dim)
        q, k, v, _ = self.attn.projections(normed, rotary=rotary)
        put_slice(joint, self.attn.attend(q, k, v, None, mask)[0], 0, axis=2)
        return joint


class FluxSingleTransformerBlock(SingleStreamBlock):
    """FLUX's single-stream block: its modulation `linear(silu(temb))` (`norm`)."""

    def __init__(self, dim: int, heads: int, head_dim: int, place: Place,
                 mlp_ratio: float = 4.0) -> None:
        self.norm = AdaLayerNormZero(dim, place, count=3)
        super().__init__(dim, heads, head_dim, place, mlp_ratio)

    def forward(self, x: Tensor, temb: Tensor, rotary: Rope, *,
                activated: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        """x: text then image tokens (B, L, dim); `activated`: silu(temb) where the model
        has it; `mask`: the keys kept (JointAttention.forward's)."""
        mods = self.norm.modulation(temb, activated)  # shift, scale, gate
        return self.normed(x, modulated_norm_of(x, mods, 0, 1, self.input_layers()), mods[2],
                           rotary, mask)


def _residuals(samples: Sequence[Tensor], blocks: int) -> Any:
    """The residual block i takes: samples[i // ceil(blocks / len(samples))], as diffusers'
    FluxTransformer2DModel spreads a ControlNet's fewer residuals over its blocks (None-like
    when there are none)."""
    if not samples:
        return None
    interval = math.ceil(blocks / len(samples))
    return lambda index: samples[index // interval]


class FluxTrunk(nn.Module):
    """The FLUX transformer's embeddings and blocks (diffusers' names: `time_text_embed`,
    `context_embedder`, `x_embedder`, `transformer_blocks`, `single_transformer_blocks`) for
    the config `cfg`: its own, and its ControlNet's shortened copy (flux_controlnet)."""

    # the block kinds (Ovis-Image's have SwiGLU MLPs)
    double_block: type[JointTransformerBlock] = JointTransformerBlock
    single_block: type[FluxSingleTransformerBlock] = FluxSingleTransformerBlock

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        self.config = cfg
        heads, head_dim = rope_heads(cfg)
        dim = heads * head_dim
        self.conditioning(dim, cfg, place)
        self.context_embedder = nn.Linear(cfg["joint_attention_dim"], dim, **place)
        self.x_embedder = nn.Linear(cfg["in_channels"], dim, **place)
        self.transformer_blocks = nn.ModuleList(
            [self.double_block(dim, heads, head_dim, place, qk_norm=True)
             for _ in range(cfg["num_layers"])])
        self.single_transformer_blocks = nn.ModuleList(
            [self.single_block(dim, heads, head_dim, place)
             for _ in range(cfg["num_single_layers"])])

    def conditioning(self, dim: int, cfg: dict[str, Any], place: Place) -> None:
        """The conditioning vector's embedders: FLUX's timestep (and guidance) and pooled
        text (`time_text_embed`); a FLUX-like model without pooled text (LongCat-Image)
        puts its own in their place."""
        self.time_text_embed = CombinedTimestepTextProjEmbeddings(
            dim, cfg["pooled_projection_dim"], place, guidance=cfg["guidance_embeds"])


class FluxTransformer2DModel(FluxTrunk):
    """Packed latents (B, L, in_channels) -> the flow (B, L, out_channels).

    Config: `transformer/config.json` of a FLUX folder (diffusers' FluxTransformer2DModel
    fields). Parameter names are diffusers' (`transformer_blocks.0.attn.to_q.weight`,
    `single_transformer_blocks.0.proj_mlp.weight`, ...). diffusers:
    `FluxTransformer2DModel(hidden_states, encoder_hidden_states, pooled_projections,
    timestep, img_ids, txt_ids, guidance).sample`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        place: Place = {"dtype": dtype, "device": device}
        super().__init__(cfg, place)
        heads, head_dim = rope_heads(cfg)
        dim = heads * head_dim
        out_channels = cfg["out_channels"] or cfg["in_channels"]
        self.norm_out = AdaLayerNormContinuous(dim, place)
        self.proj_out = nn.Linear(dim, cfg["patch_size"] ** 2 * out_channels, **place)

    def rotary(self, txt_ids: Any, img_ids: Any) -> tuple[Tensor, Tensor]:
        """cos/sin tables for text then image positions ((Lt, 3) and (Li, 3) ids, as
        FluxPipeline builds them: zeros for text, (0, row, column) for image patches)."""
        ids = np.concatenate([np.asarray(txt_ids), np.asarray(img_ids)])
        return rope_tables(ids, tuple(self.config["axes_dims_rope"]), _ROPE_THETA,
                           device=self.x_embedder.weight.device)

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Tensor, pooled: Tensor,
                timestep: Any, img_ids: Any, txt_ids: Any, guidance: Any = None, *,
                rotary: tuple[Tensor, Tensor] | None = None,
                cache: BranchCache | None = None,
                control: tuple[Sequence[Tensor], Sequence[Tensor]] | None = None) -> Tensor:
        """hidden_states (B, Li, in_channels): packed latents; encoder_hidden_states
        (B, Lt, joint_attention_dim): T5 states; pooled (B, pooled_projection_dim): CLIP's
        pooled output; timestep (B,) in [0, 1] (sigmas); guidance (B,) the distilled CFG
        scale (dev; None for schnell): host numbers, or float32 Tensors to capture a step;
        img_ids (Li, 3), txt_ids (Lt, 3) positions, or their tables precomputed once per
        picture size by `rotary` (the ids are then unused). `cache`: a step cache branch
        (`step_cache.StepCache.branch()`) the blocks run through, its calls in step order.
        `control`: a ControlNet's residuals (double blocks', single blocks'; each (B, Li,
        dim)), added to the image tokens after the blocks as diffusers adds
        `controlnet_block_samples` / `controlnet_single_block_samples`.
        """
        cfg = self.config
        if (guidance is None) == bool(cfg["guidance_embeds"]):
            raise ValueError("this FLUX transformer " + (
                "embeds a guidance scale (dev): pass guidance=" if cfg["guidance_embeds"]
                else "has no guidance embedding (schnell): pass guidance=None"))
        # 1. embeddings; timesteps and guidance arrive in [0, 1] and are embedded x1000
        temb = self.time_text_embed(self._thousandfold(timestep), pooled,
                                    None if guidance is None else self._thousandfold(guidance))
        tables = rotary if rotary is not None else self.rotary(txt_ids, img_ids)
        return self.denoise(hidden_states, encoder_hidden_states, temb, tables, cache=cache,
                            control=control)

    def denoise(self, hidden_states: Tensor, encoder_hidden_states: Tensor, temb: Tensor,
                tables: tuple[Tensor, Tensor], *, cache: BranchCache | None = None,
                control: tuple[Sequence[Tensor], Sequence[Tensor]] | None = None) -> Tensor:
        """`forward` after the conditioning vector `temb` (B, dim) and the rotary `tables`:
        the embedders of the latents and text, the blocks, the final norm and projection."""
        x = self.x_embedder(hidden_states)
        context = self.context_embedder(encoder_hidden_states)
        activated = nn.silu(temb)  # every adaLN's input, once
        # 2. double-stream blocks, then one stream of text + image tokens (the first block
        # apart: a step cache decides after it whether the others run)
        blocks = list(self.transformer_blocks)
        singles = list(self.single_transformer_blocks)
        double_residual, single_residual = ((_residuals(control[0], len(blocks)),
                                             _residuals(control[1], len(singles)))
                                            if control is not None else (None, None))

        def head(x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
            if not blocks:
                return x, context
            x, context = blocks[0](x, context, temb, tables, activated=activated)
            return (x if double_residual is None else x + double_residual(0)), context

        def tail(x: Tensor, context: Tensor) -> Tensor:
            for index, block in enumerate(blocks[1:], 1):
                x, context = block(x, context, temb, tables, activated=activated)
                if double_residual is not None:
                    x = x + double_residual(index)
            text_length = context.shape[1]
            x = concatenate([context, x], axis=1)
            for index, single in enumerate(singles):
                x = single(x, temb, tables, activated=activated)
                if single_residual is not None:  # the image tokens only
                    x = concatenate([take_slice(x, 0, text_length, axis=1),
                                     take_slice(x, text_length, x.shape[1], axis=1)
                                     + single_residual(index)], axis=1)
            return take_slice(x, text_length, x.shape[1], axis=1)

        def probe(x: Tensor) -> Tensor:
            return blocks[0].modulated_input(x, temb)

        x = run_blocks(cache, x, context, head, tail, probe if blocks else None)
        # 3. final modulated norm and projection
        return self.proj_out(self.norm_out(x, temb, activated))

    def _thousandfold(self, values: Any) -> Any:
        """values x 1000 in the model's dtype, as diffusers scales them; a float32 Tensor (a
        captured step's input) is scaled on the device, in float32."""
        if isinstance(values, Tensor):
            if values.dtype != np.float32:
                raise TypeError(f"timestep and guidance Tensors must be float32, got "
                                f"{values.dtype}")
            return values.reshape(-1) * 1000.0
        dtype = self.x_embedder.weight.dtype
        return np.asarray(values, dtype).reshape(-1) * dtype.type(1000)
