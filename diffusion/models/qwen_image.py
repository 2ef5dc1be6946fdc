"""The Qwen-Image transformer (diffusers' QwenImageTransformer2DModel names): a stack of
double-stream blocks over packed image patches and a Qwen2.5-VL prompt's hidden states. The
text states pass an RMS norm (`txt_norm`) before their projection; the conditioning vector is
the timestep's embedding alone (no pooled text); each block modulates both streams from it
with its own adaLN-Zero (`img_mod`, `txt_mod`); rotary positions on three axes (frame, row,
column), the image's rows and columns centred on zero and the text's positions after the
image's largest (the same number on all three axes).

Qwen-Image-Layered's variant (`use_additional_t_cond`, `use_layer3d_rope`) adds a learned
row (`time_text_embed.addition_t_embedding`, chosen by an RGB flag) to the timestep's
embedding, and numbers its frames (the layers, then the input picture) 0, 1, ... with the
picture at frame -1.
"""

from __future__ import annotations

import typing
from collections.abc import Sequence
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, nn

from .dit_layers import (
    AdaLayerNormContinuous,
    FeedForward,
    JointAttention,
    Rope,
    TimestepEmbedding,
    modulated_norm_of,
    silu_of,
)
from .layers import Place
from .step_cache import BranchCache, run_blocks
from .transformer_ops import (
    Modulation,
    RMSNorm,
    cast,
    gated_add,
    kept,
    rms_norm,
    rope_heads,
    rope_tables,
)

__all__ = ["QwenImageTransformer2DModel", "qwen_image_positions"]

_DEFAULTS: dict[str, Any] = {
    "patch_size": 2, "in_channels": 64, "out_channels": 16, "num_layers": 60,
    "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 3584,
    "guidance_embeds": False, "axes_dims_rope": (16, 56, 56), "zero_cond_t": False,
    "use_additional_t_cond": False, "use_layer3d_rope": False,
}
_ROPE_THETA = 10000.0
_ROPE_LENGTH = 4096  # diffusers' tables hold positions -4096..4095


def qwen_image_positions(rows: int, columns: int, text_length: int,
                         references: Sequence[tuple[int, int]] = (), *,
                         layered: bool = False) -> np.ndarray:
    """Rotary positions (text_length + rows * columns + the references', 3), text first: the
    image's patches at (0, row - ceil(rows / 2), column - ceil(columns / 2)), row-major; then
    each reference picture's (rows, columns) patches alike at frame k (1, 2, ...); the text's
    i-th token at (m + i, m + i, m + i) with m the largest rows // 2 or columns // 2 of them
    all. diffusers: `QwenEmbedRope(theta, axes_dim, scale_rope=True)([[(1, rows, columns),
    *references]], text_length)`. `layered`: the last grid (the input picture) at frame -1
    instead, the text after the other grids' count too (`QwenEmbedLayer3DRope`)."""
    grids = [(rows, columns), *references]
    start = max(max(r // 2, c // 2) for r, c in grids)
    if layered:
        start = max(start, len(grids) - 1)
    if max(max(max(g) for g in grids), start + text_length, len(grids)) > _ROPE_LENGTH:
        raise ValueError(f"{rows} x {columns} patches and {text_length} text tokens pass "
                         f"Qwen-Image's {_ROPE_LENGTH} rotary positions; use a smaller picture "
                         "or a shorter prompt")
    text = np.repeat(np.arange(start, start + text_length)[:, None], 3, axis=1)
    images = []
    for frame, (height, width) in enumerate(grids):
        frame = -1 if layered and frame == len(grids) - 1 else frame
        grid = np.meshgrid(np.arange(height) - (height - height // 2),
                           np.arange(width) - (width - width // 2), indexing="ij")
        images.append(np.stack([np.full_like(grid[0], frame), *grid], axis=-1).reshape(-1, 3))
    return np.concatenate([text, *images]).astype(np.int64)


class QwenTimestepProjEmbeddings(nn.Module):
    """The 256 sinusoid features of timestep x 1000 (cos first), then `timestep_embedder`;
    with `additional` (the layered variant) plus `addition_t_embedding`'s row of each
    sample's flag. diffusers: `QwenTimestepProjEmbeddings(dim, use_additional_t_cond)`."""

    def __init__(self, dim: int, place: Place, additional: bool = False) -> None:
        self.dtype = place["dtype"]
        self.timestep_embedder = TimestepEmbedding(256, dim, place)
        self.addition_t_embedding = nn.Embedding(2, dim, **place) if additional else None

    def forward(self, timestep: Any, device: Device, addition: Any = None) -> Tensor:
        """`timestep` (B,) host numbers or a float32 Tensor (a replayed step's input, rounded
        on the device as host numbers are)."""
        # diffusers casts the timestep to the model's dtype before scaling it by 1000
        t: Any
        if isinstance(timestep, Tensor):
            if timestep.dtype != np.float32:
                raise TypeError(f"a timestep Tensor must be float32, got {timestep.dtype}")
            t = timestep.reshape(-1)
            t = (t if np.dtype(self.dtype) == np.float32 else cast(cast(t, self.dtype), np.float32)
                 ) * 1000.0
        else:
            t = np.asarray(timestep, self.dtype).reshape(-1).astype(np.float32) * np.float32(1000)
        features = nn.timestep_embedding(t, 256, flip_sin_to_cos=True, downscale_freq_shift=0,
                                         dtype=self.dtype, device=device)
        temb = self.timestep_embedder(features)
        if self.addition_t_embedding is None:
            return temb
        if addition is None:
            raise ValueError("this Qwen-Image-Layered transformer needs additional_t_cond "
                             "(each sample's RGB flag, 0 for RGBA layers)")
        return temb + self.addition_t_embedding(np.asarray(addition, np.int64).reshape(-1))


class QwenImageTransformerBlock(nn.Module):
    """Image and text tokens, each stream with its own adaLN-Zero (`img_mod.1`, `txt_mod.1`:
    shift, scale, gate for attention then for the feed-forward), its own projections and
    gelu-tanh feed-forward, meeting in one attention (text first). diffusers:
    `QwenImageTransformerBlock`."""

    def __init__(self, dim: int, heads: int, head_dim: int, place: Place) -> None:
        self.img_mod = nn.ModuleList([nn.Identity(), nn.Linear(dim, 6 * dim, **place)])
        self.txt_mod = nn.ModuleList([nn.Identity(), nn.Linear(dim, 6 * dim, **place)])
        self.attn = JointAttention(dim, heads, head_dim, place, qk_norm=True, context=True)
        self.img_mlp = FeedForward(dim, place)
        self.txt_mlp = FeedForward(dim, place)

    def forward(self, x: Tensor, context: Tensor, temb: Tensor, rotary: Rope,
                mask: Tensor | None = None, *, activated: Tensor | None = None
                ) -> tuple[Tensor, Tensor]:
        """x (B, Li, dim), context (B, Lt, dim), temb (B, dim) -> both streams.
        `activated`: silu(temb) where the model computed it once for all its blocks."""
        # 1. each stream's modulations from silu(temb), left in the linears' outputs: the
        # norms read their shift and scale in place, only the gates are copied
        silu = silu_of(temb, activated)
        mods = Modulation(self.img_mod[1](silu), 6)
        c_mods = Modulation(self.txt_mod[1](silu), 6)
        # 2. joint attention, gated residuals (float16 clipped to +-65504, as diffusers); the
        # image's gate and residual in to_out's GEMM where it takes them
        x, context_attn = self.attn.gated(
            x, mods[2], modulated_norm_of(x, mods, 0, 1, self.attn.image_inputs()),
            modulated_norm_of(context, c_mods, 0, 1, self.attn.text_inputs()), rotary, mask)
        context = gated_add(context, c_mods[2], typing.cast(Tensor, context_attn))
        # 3. the feed-forward of each stream, net.2's GEMM applying the gate and residual
        x = self.img_mlp.gated(x, mods[5], modulated_norm_of(x, mods, 3, 4,
                                                              self.img_mlp.input_layers()))
        return x, self.txt_mlp.gated(context, c_mods[5], modulated_norm_of(
            context, c_mods, 3, 4, self.txt_mlp.input_layers()))


class QwenImageTrunk(nn.Module):
    """Qwen-Image's embeddings and double-stream blocks (diffusers' names: `time_text_embed`,
    `txt_norm`, `img_in`, `txt_in`, `transformer_blocks`) for the config `cfg`: the
    transformer's, and its ControlNet's shortened copy (qwen_image_controlnet)."""

    def __init__(self, cfg: dict[str, Any], place: Place) -> None:
        self.config = cfg
        heads, head_dim = rope_heads(cfg)
        dim = heads * head_dim
        self.time_text_embed = QwenTimestepProjEmbeddings(
            dim, place, additional=bool(cfg.get("use_additional_t_cond")))
        self.txt_norm = RMSNorm(cfg["joint_attention_dim"], 1e-6, place=place)
        self.img_in = nn.Linear(cfg["in_channels"], dim, **place)
        self.txt_in = nn.Linear(cfg["joint_attention_dim"], dim, **place)
        self.transformer_blocks = nn.ModuleList(
            [QwenImageTransformerBlock(dim, heads, head_dim, place)
             for _ in range(cfg["num_layers"])])

    @property
    def device(self) -> Device:
        return self.img_in.weight.device

    @property
    def dtype(self) -> np.dtype:
        return self.img_in.weight.dtype


class QwenImageTransformer2DModel(QwenImageTrunk):
    """Packed latents (B, Li, in_channels) and text states (B, Lt, joint_attention_dim) ->
    the flow (B, Li, patch_size^2 * out_channels).

    Config: `transformer/config.json` of a Qwen-Image folder (diffusers' fields; the layered
    variant's `use_additional_t_cond` and `use_layer3d_rope` too; Edit-2511's `zero_cond_t`
    is not supported). Parameter names are diffusers' (`img_in.weight`, `txt_norm.weight`,
    `transformer_blocks.0.img_mod.1.weight`, `transformer_blocks.0.attn.add_q_proj.weight`,
    `norm_out.linear.weight`, ...). diffusers: `QwenImageTransformer2DModel(hidden_states,
    encoder_hidden_states, encoder_hidden_states_mask, timestep, img_shapes).sample`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        if cfg["zero_cond_t"]:
            raise ValueError("this Qwen-Image transformer sets zero_cond_t (Qwen-Image-Edit-"
                             "2511), which is not supported; use Qwen-Image-Edit-2509")
        place: Place = {"dtype": dtype, "device": device}
        super().__init__(cfg, place)
        heads, head_dim = rope_heads(cfg)
        dim = heads * head_dim
        out_channels = cfg["out_channels"] or cfg["in_channels"]
        self.norm_out = AdaLayerNormContinuous(dim, place)
        self.proj_out = nn.Linear(dim, cfg["patch_size"] ** 2 * out_channels, **place)
        self._tables: dict[tuple[Any, ...], tuple[Tensor, Tensor]] = {}

    def rotary(self, rows: int, columns: int, text_length: int,
               references: Sequence[tuple[int, int]] = ()) -> tuple[Tensor, Tensor]:
        """cos/sin tables of `qwen_image_positions` (diffusers computes them in float32 from
        float32 frequencies; ours in float64, then float32), made once per sizes and kept on
        the device for the next steps (a step's two uploads and their submits)."""
        layered = bool(self.config["use_layer3d_rope"])
        return kept(self._tables, (rows, columns, text_length, tuple(references), self.device),
                    lambda: rope_tables(
                        qwen_image_positions(rows, columns, text_length, references,
                                             layered=layered),
                        tuple(self.config["axes_dims_rope"]), _ROPE_THETA, device=self.device))

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Tensor, timestep: Any,
                rows: int, columns: int, encoder_mask: Any = None, *,
                cache: BranchCache | None = None,
                references: Sequence[tuple[int, int]] = (),
                control: Sequence[Tensor] | None = None,
                additional_t_cond: Any = None) -> Tensor:
        """hidden_states (B, rows * columns, in_channels): packed latents (row-major
        patches); encoder_hidden_states (B, Lt, joint_attention_dim) in any float dtype
        (the RMS norm reads them as they are); timestep (B,) host numbers or a float32 Tensor
        (a replayed step's) in [0, 1] (the sigmas; QwenImagePipeline passes t / 1000);
        encoder_mask (B, Lt) nonzero for the text tokens attended to, or None for all.
        `cache`: a step cache branch (`step_cache.StepCache.branch()`) the blocks run
        through, its calls in step order.
        `references`: the (rows, columns) of reference pictures whose packed latents follow
        the image's in hidden_states (Qwen-Image-Edit's `img_shapes` after the first); the
        flow comes for every token, the references' too. Qwen-Image-Layered: the layers'
        grids after the first, then the input picture's, are the references, and
        `additional_t_cond` (B,) the RGB flags (its pipeline's 0s)."""
        batch, length, _ = hidden_states.shape
        if length != rows * columns + sum(r * c for r, c in references):
            raise ValueError(f"{length} image tokens are not {rows} x {columns} patches and "
                             f"the references' {list(references)}")
        text_length = encoder_hidden_states.shape[1]
        mask = None
        if encoder_mask is not None:
            keep = np.asarray(encoder_mask) != 0
            if keep.shape != (batch, text_length):
                raise ValueError(f"encoder_mask must be (batch, text tokens) = "
                                 f"{(batch, text_length)}, got {keep.shape}")
            keys = np.concatenate([keep, np.ones((batch, length), bool)], axis=1)
            mask = asarray(keys.astype(np.uint32).reshape(batch, 1, 1, -1), device=self.device)
        # 1. embeddings: the timestep's; the text's RMS norm and projection; the patches'
        temb = self.time_text_embed(
            timestep if isinstance(timestep, Tensor) else np.asarray(timestep, np.float32),
            self.device, additional_t_cond)
        norm = self.txt_norm
        states = rms_norm(encoder_hidden_states, norm.weight, norm.eps)
        context = self.txt_in(cast(states, self.dtype))
        x = self.img_in(hidden_states)
        tables = self.rotary(rows, columns, text_length, references)
        # 2. the double-stream blocks (the first apart: a step cache decides after it whether
        # the others run); 3. the final modulated norm over the image's tokens
        blocks = list(self.transformer_blocks)
        interval = -(-len(blocks) // len(control)) if control else 0

        activated = nn.silu(temb)  # one SiLU for every block's modulations

        def run(index: int, x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
            x, context = blocks[index](x, context, temb, tables, mask, activated=activated)
            return (x + control[index // interval], context) if control else (x, context)

        def head(x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
            return run(0, x, context) if blocks else (x, context)

        def tail(x: Tensor, context: Tensor) -> Tensor:
            for index in range(1, len(blocks)):
                x, context = run(index, x, context)
            return x

        x = run_blocks(cache, x, context, head, tail)
        return self.proj_out(self.norm_out(x, temb, activated))
