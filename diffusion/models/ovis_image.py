"""The Ovis-Image transformer (diffusers' OvisImageTransformer2DModel names): FLUX.1's double-
and single-stream trunk with SwiGLU MLPs (each double block's `ff` / `ff_context`, each single
block's `proj_mlp` giving value and gate halves), conditioned on the timestep alone
(`timestep_embedder`: no pooled text, no guidance embedding), reading Qwen3's states through an
RMS norm (`context_embedder_norm`) before `context_embedder`. Text tokens sit at (0, i, i),
image patches at (0, row, column), as OvisImagePipeline passes them."""

from __future__ import annotations

import typing
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, concatenate, nn

from .dit_layers import FeedForward, JointTransformerBlock, Rope, TimestepEmbedding
from .flux import FluxSingleTransformerBlock, FluxTransformer2DModel
from .flux2 import _halves, swiglu
from .layers import Place
from .step_cache import BranchCache
from .transformer_ops import RMSNorm, cast, gated_add, gated_linear

__all__ = ["OvisImageTransformer2DModel"]

_DEFAULTS: dict[str, Any] = {
    "patch_size": 1, "in_channels": 64, "out_channels": 64, "num_layers": 6,
    "num_single_layers": 27, "attention_head_dim": 128, "num_attention_heads": 24,
    "joint_attention_dim": 2048, "axes_dims_rope": (16, 56, 56),
}


class SwiGLUProjection(nn.Module):
    """proj(x) split into (value, gate) halves, value * silu(gate). diffusers: `SwiGLU`."""

    def __init__(self, dim: int, inner: int, place: Place, *, bias: bool = True) -> None:
        self.inner = inner
        self.proj = nn.Linear(dim, 2 * inner, bias, **place)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = _halves(self.proj(x), 0, self.inner)
        return swiglu(gate, value)


class SwiGLUFeedForward(FeedForward):
    """net.0 (SwiGLU projection to 4 * dim), net.2 (Linear). diffusers: `FeedForward(dim,
    dim, activation_fn="swiglu")`."""

    def __init__(self, dim: int, place: Place, mult: int = 4, *, bias: bool = True) -> None:
        self.net = nn.ModuleList([SwiGLUProjection(dim, mult * dim, place, bias=bias),
                                  nn.Identity(), nn.Linear(mult * dim, dim, bias, **place)])

    def input_layers(self) -> list[nn.Linear]:
        """The layer that reads forward's x (modulated_norm's reader)."""
        return [typing.cast(SwiGLUProjection, self.net[0]).proj]

    def gated(self, residual: Tensor, gate: Tensor, x: Tensor) -> Tensor:
        """gated_add(residual, gate, self(x)), net.2's GEMM applying the gate and the
        residual where it can."""
        out = typing.cast(nn.Linear, self.net[2])
        if "forward" in vars(self) or not out.plain():
            return gated_add(residual, gate, self(x))
        return gated_linear(residual, gate, out, self.net[0](x))

    def forward(self, x: Tensor) -> Tensor:
        return typing.cast(nn.Linear, self.net[2])(self.net[0](x))


class OvisImageTransformerBlock(JointTransformerBlock):
    """FLUX.1's double-stream block with SwiGLU feed-forwards. diffusers:
    `OvisImageTransformerBlock`."""

    feed_forward = SwiGLUFeedForward


class OvisImageSingleTransformerBlock(FluxSingleTransformerBlock):
    """FLUX.1's single-stream block whose MLP is a SwiGLU (proj_mlp 2 x 4 dim wide: value,
    then gate). diffusers: `OvisImageSingleTransformerBlock`."""

    mlp_halves = 2

    def joint(self, normed: Tensor, rotary: Rope, mask: Tensor | None = None,
              dtype: Any = None) -> Tensor:
        """proj_out's input [attention | value * silu(gate)] of the modulated norm."""
        q, k, v, (mlp,) = self.attn.projections(normed, also=(self.proj_mlp,), rotary=rotary)
        attn = self.attn.attend(q, k, v, None, mask)[0]
        value, gate = _halves(mlp, 0, mlp.shape[2] // 2)
        joint = concatenate([attn, swiglu(gate, value)], axis=2)
        return joint if dtype is None or joint.dtype == dtype else cast(joint, dtype)


class OvisImageTransformer2DModel(FluxTransformer2DModel):
    """Packed latents (B, L, in_channels) -> the flow (B, L, out_channels).

    Config: `transformer/config.json` of an Ovis-Image folder (diffusers'
    OvisImageTransformer2DModel fields). Parameter names are diffusers'
    (`timestep_embedder.linear_1.weight`, `context_embedder_norm.weight`,
    `transformer_blocks.0.ff.net.0.proj.weight`, `single_transformer_blocks.0.proj_mlp.weight`,
    ...). diffusers: `OvisImageTransformer2DModel(hidden_states, encoder_hidden_states,
    timestep, img_ids, txt_ids).sample`.
    """

    double_block = OvisImageTransformerBlock
    single_block = OvisImageSingleTransformerBlock

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        if cfg["patch_size"] != 1:
            raise ValueError(f"Ovis-Image's transformer reads packed latents (patch_size 1), "
                             f"got patch_size {cfg['patch_size']}")
        super().__init__({**cfg, "guidance_embeds": False}, dtype=dtype, device=device)
        self.context_embedder_norm = RMSNorm(cfg["joint_attention_dim"], 1e-6,
                                             place={"dtype": dtype, "device": device})

    def conditioning(self, dim: int, cfg: dict[str, Any], place: Place) -> None:
        """The timestep's embedder alone (`timestep_embedder`, over a 256-wide sinusoid)."""
        self.timestep_embedder = TimestepEmbedding(256, dim, place)

    def embed_timestep(self, timestep: Any) -> Tensor:
        """temb (B, dim) of timesteps in [0, 1] (host numbers or a float32 Tensor): x1000 in
        the model's dtype, Timesteps(256, flip_sin_to_cos=True, downscale_freq_shift=0),
        then `timestep_embedder`."""
        scaled = self._thousandfold(timestep)
        if not isinstance(scaled, Tensor):
            scaled = np.asarray(scaled, np.float32).reshape(-1)
        weight = self.x_embedder.weight
        return self.timestep_embedder(nn.timestep_embedding(
            scaled, 256, flip_sin_to_cos=True, downscale_freq_shift=0, dtype=weight.dtype,
            device=weight.device))

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Tensor,  # type: ignore[override]
                timestep: Any, img_ids: Any = None, txt_ids: Any = None, *,
                rotary: tuple[Tensor, Tensor] | None = None,
                cache: BranchCache | None = None) -> Tensor:
        """hidden_states (B, Li, in_channels): packed latents; encoder_hidden_states
        (B, Lt, joint_attention_dim): Qwen3's states of the padded prompt (the padding's
        zeroed), every place attended to; timestep (B,) in [0, 1] (sigmas); img_ids (Li, 3),
        txt_ids (Lt, 3) positions, or their tables precomputed once per picture size by
        `rotary` (the ids are then unused). `cache`: a step cache branch the blocks run
        through, its calls in step order."""
        temb = self.embed_timestep(timestep)
        tables = rotary if rotary is not None else self.rotary(txt_ids, img_ids)
        return self.denoise(hidden_states, self.context_embedder_norm(encoder_hidden_states),
                            temb, tables, cache=cache)
