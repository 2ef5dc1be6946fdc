"""The NucleusMoE-Image transformer (diffusers' NucleusMoEImageTransformer2DModel names): a
single stream of image patches whose blocks attend to the image and to the prompt's states
(text keys and values only: no text queries, no text stream carried between blocks), each
block's feed-forward a SwiGLU or a mixture of experts (nucleus_moe) as `dense_moe_strategy`
says. The conditioning vector is the timestep's embedding alone, RMS-normed; each block
modulates the image with scale and tanh-gate pairs (no shifts) for attention and the
feed-forward; the text states pass one RMS norm and each block's own projection
(`encoder_proj`). Rotary positions are Qwen-Image's: the image's rows and columns centred on
zero, the text's after the image's largest half side.
"""

from __future__ import annotations

import math
import typing
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, elementwise_kernel, empty, nn

from .dit_layers import AdaLayerNormContinuous, layer_norm
from .layers import Place
from .nucleus_moe import NucleusMoELayer, SharedSwiGLU
from .qwen_image import qwen_image_positions
from .transformer_ops import (
    RMSNorm,
    cast,
    chunks,
    joint_norm_rope,
    kept,
    norm_rope,
    rms_norm,
    rope_heads,
    rope_tables,
)

__all__ = ["NucleusMoEImageTransformer2DModel", "is_moe_layer"]

_DEFAULTS: dict[str, Any] = {
    "patch_size": 2, "in_channels": 64, "out_channels": None, "num_layers": 24,
    "attention_head_dim": 128, "num_attention_heads": 16, "num_key_value_heads": None,
    "joint_attention_dim": 3584, "axes_dims_rope": (16, 56, 56), "mlp_ratio": 4.0,
    "moe_enabled": True, "dense_moe_strategy": "leave_first_three_and_last_block_dense",
    "num_experts": 128, "moe_intermediate_dim": 1344, "capacity_factors": 8.0,
    "use_sigmoid": False, "route_scale": 2.5,
}
_ROPE_THETA = 10000.0


@elementwise_kernel
def _scaled(x, scale):  # norm(x) * (1 + scale): adaLN without a shift
    return x * (1.0 + scale)


@elementwise_kernel
def _tanh_gated(residual, gate, y):
    return residual + math.tanh(min(max(float(gate), -2.0), 2.0)) * float(y)


@elementwise_kernel
def _tanh_gated_f16(residual, gate, y):  # float16 out, clipped to its range as diffusers clips
    out = float(residual) + math.tanh(min(max(float(gate), -2.0), 2.0)) * float(y)
    return np.float16(out if math.isnan(out) else min(max(out, -65504.0), 65504.0))


@elementwise_kernel
def _repeated(k, v, like):  # k and v broadcast over like's shape (like's values unused)
    return k, v


def is_moe_layer(strategy: str, index: int, layers: int) -> bool:
    """Whether block `index` of `layers` is a mixture of experts under `strategy`. diffusers:
    `_is_moe_layer` (an unknown strategy's blocks are all experts, as there)."""
    return {"leave_first_three_and_last_block_dense": 3 <= index < layers - 1,
            "leave_first_three_blocks_dense": index >= 3, "leave_first_block_dense": index >= 1,
            "all_moe": True, "all_dense": False}.get(strategy, True)


def _gated(residual: Tensor, gate: Tensor, y: Tensor) -> Tensor:
    """residual + tanh(clamp(gate, -2, 2)) * y in residual's dtype (float16 clipped)."""
    kernel = _tanh_gated_f16 if residual.dtype == np.float16 else _tanh_gated
    return cast(typing.cast(Tensor, kernel(residual, gate, y)), residual.dtype)


class NucleusAttention(nn.Module):
    """The image's queries against the image's and the text's keys and values (image
    first), `kv_heads` key/value heads each serving heads / kv_heads query heads; per-head RMS
    norms of q, k and the text's k, rotary embeddings (interleaved pairs) on all keys; no
    biases. `norm_added_q` is read but unused, as in diffusers. diffusers: `Attention` with
    `NucleusMoEAttnProcessor2_0`."""

    def __init__(self, dim: int, heads: int, kv_heads: int, head_dim: int, place: Place
                 ) -> None:
        self.heads, self.kv_heads, self.head_dim = heads, kv_heads, head_dim
        kv = kv_heads * head_dim
        self.to_q = nn.Linear(dim, heads * head_dim, False, **place)
        self.to_k = nn.Linear(dim, kv, False, **place)
        self.to_v = nn.Linear(dim, kv, False, **place)
        self.add_k_proj = nn.Linear(dim, kv, False, **place)
        self.add_v_proj = nn.Linear(dim, kv, False, **place)
        self.norm_q, self.norm_k, self.norm_added_q, self.norm_added_k = (
            RMSNorm(head_dim, 1e-6, place=place) for _ in range(4))
        self.to_out = nn.ModuleList([nn.Linear(heads * head_dim, dim, False, **place)])
        self._group: dict[Device, Tensor] = {}

    def _repeat(self, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """k, v (B, L, KVH*D) -> (B, L, H*D), kv head h // group serving query head h. torch:
        `repeat_interleave(group, dim=2)`."""
        group = self.heads // self.kv_heads
        if group == 1:
            return k, v
        batch, length, _ = k.shape
        heads = (batch * length, self.kv_heads, 1, self.head_dim)
        like = self._group.get(k.device)
        if like is None:
            like = self._group[k.device] = empty((1, 1, group, 1), np.uint32, device=k.device)
        out = typing.cast(tuple[Tensor, Tensor],
                          _repeated(k.reshape(*heads), v.reshape(*heads), like))
        return out[0].reshape(batch, length, -1), out[1].reshape(batch, length, -1)

    def forward(self, x: Tensor, context: Tensor, tables: tuple[Any, Any],
                mask: Tensor | None) -> Tensor:
        """x (B, N, dim) modulated image tokens, context (B, T, dim) the block's text;
        tables (the image's cos/sin, the image's then the text's); mask (B, 1, 1, N + T)
        keys kept, or None."""
        image, joint = tables
        q, k, v = nn.Linear.each(x, [self.to_q, self.to_k, self.to_v])
        k_txt, v_txt = nn.Linear.each(context, [self.add_k_proj, self.add_v_proj])
        q = norm_rope(self.norm_q, q, image, self.heads)
        k = joint_norm_rope([(self.norm_k, k), (self.norm_added_k, k_txt)], joint,
                            self.kv_heads)
        k, v = self._repeat(k, concatenate([v, v_txt], axis=1))
        out = nn.attention(q, k, v, mask=mask, heads=self.heads)
        return typing.cast(nn.Linear, self.to_out[0])(out)


class NucleusBlock(nn.Module):
    """x += tanh(gate1) * attn(norm(x) * (1 + scale1), text); x += tanh(gate2) *
    mlp(norm(x) * (1 + scale2)), the gates clamped to [-2, 2] and (scale1, gate1, scale2,
    gate2) = img_mod(silu(temb)). diffusers: `NucleusMoEImageTransformerBlock`."""

    def __init__(self, cfg: dict[str, Any], moe: bool, capacity: float, place: Place) -> None:
        heads, head_dim = rope_heads(cfg)
        dim = heads * head_dim
        self.img_mod = nn.ModuleList([nn.Identity(), nn.Linear(dim, 4 * dim, **place)])
        self.encoder_proj = nn.Linear(cfg["joint_attention_dim"], dim, **place)
        self.attn = NucleusAttention(dim, heads, cfg["num_key_value_heads"] or heads,
                                     head_dim, place)
        self.img_mlp: NucleusMoELayer | SharedSwiGLU = (
            NucleusMoELayer(dim, cfg["moe_intermediate_dim"], cfg["num_experts"], capacity,
                            cfg["use_sigmoid"], cfg["route_scale"], place) if moe else
            SharedSwiGLU(dim, int(dim * cfg["mlp_ratio"] * 2 / 3) // 128 * 128, place))

    def forward(self, x: Tensor, text: Tensor, temb: Tensor, activated: Tensor,
                tables: tuple[Any, Any], mask: Tensor | None) -> Tensor:
        scale1, gate1, scale2, gate2 = chunks(self.img_mod[1](activated), 4)
        context = self.encoder_proj(text)
        x = _gated(x, gate1, self.attn(_scaled(layer_norm(x), scale1), context, tables, mask))
        normed = layer_norm(x)
        modulated = typing.cast(Tensor, _scaled(normed, scale2))
        mlp = self.img_mlp
        y = mlp(modulated, normed, temb) if isinstance(mlp, NucleusMoELayer) else mlp(modulated)
        return _gated(x, gate2, y)


class NucleusTimestepEmbedding(nn.Module):
    """RMSNorm(linear_2(silu(linear_1(sinusoid(t))))), the sinusoid `dim` wide (cos first,
    of t x 1000), the hidden layer 4 * dim. diffusers: `NucleusMoETimestepProjEmbeddings`."""

    def __init__(self, dim: int, place: Place) -> None:
        self.dim = dim
        self.timestep_embedder = _Embedder(dim, place)
        self.norm = RMSNorm(dim, 1e-6, place=place)

    def forward(self, timestep: np.ndarray, dtype: Any, device: Device) -> Tensor:
        # diffusers casts the timestep to the model's dtype before its sinusoid
        t = np.asarray(timestep, dtype).reshape(-1).astype(np.float32)
        features = nn.timestep_embedding(t, self.dim, flip_sin_to_cos=True,
                                         downscale_freq_shift=0, scale=1000.0, dtype=dtype,
                                         device=device)
        emb = self.timestep_embedder
        return self.norm(emb.linear_2(nn.silu(emb.linear_1(features))))


class _Embedder(nn.Module):
    """diffusers' `TimestepEmbedding(dim, 4 * dim, out_dim=dim)`: its two linears."""

    def __init__(self, dim: int, place: Place) -> None:
        self.linear_1 = nn.Linear(dim, 4 * dim, **place)
        self.linear_2 = nn.Linear(4 * dim, dim, **place)


class NucleusMoEImageTransformer2DModel(nn.Module):
    """Packed latents (B, rows * columns, in_channels) and text states (B, T,
    joint_attention_dim) -> the flow (B, rows * columns, patch_size^2 * out_channels).

    Config: `transformer/config.json` of a NucleusMoE-Image folder (diffusers' fields).
    Parameter names are diffusers' (`img_in.weight`, `transformer_blocks.3.img_mlp.experts.
    gate_up_proj`, ...). diffusers: `NucleusMoEImageTransformer2DModel(hidden_states,
    img_shapes, encoder_hidden_states, encoder_hidden_states_mask, timestep).sample`."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        self.config = cfg
        place: Place = {"dtype": dtype, "device": device}
        heads, head_dim = rope_heads(cfg)
        if heads % (cfg["num_key_value_heads"] or heads):
            raise ValueError(f"num_attention_heads {heads} is not a multiple of "
                             f"num_key_value_heads {cfg['num_key_value_heads']}")
        dim = heads * head_dim
        layers = cfg["num_layers"]
        factors = cfg["capacity_factors"]
        factors = list(factors) if isinstance(factors, (list, tuple)) else [factors] * layers
        if len(factors) < layers:
            raise ValueError(f"capacity_factors names {len(factors)} blocks of {layers}: give "
                             "one a block (or one number for all)")
        self.time_text_embed = NucleusTimestepEmbedding(dim, place)
        self.txt_norm = RMSNorm(cfg["joint_attention_dim"], 1e-6, place=place)
        self.img_in = nn.Linear(cfg["in_channels"], dim, **place)
        self.transformer_blocks = nn.ModuleList([
            NucleusBlock(cfg, bool(cfg["moe_enabled"]) and is_moe_layer(
                cfg["dense_moe_strategy"], index, layers), factors[index], place)
            for index in range(layers)])
        self.norm_out = AdaLayerNormContinuous(dim, place)
        out_channels = cfg["out_channels"] or cfg["in_channels"]
        self.proj_out = nn.Linear(dim, cfg["patch_size"] ** 2 * out_channels, False, **place)
        self._tables: dict[tuple[Any, ...], Any] = {}

    @property
    def device(self) -> Device:
        return self.img_in.weight.device

    @property
    def dtype(self) -> np.dtype:
        return self.img_in.weight.dtype

    def rotary(self, rows: int, columns: int, text_length: int) -> tuple[Any, Any]:
        """(the image's cos/sin, the image's then the text's), kept per size: image patches
        at (0, row, column) centred on zero, text token i at m + i on every axis, m the
        larger of rows // 2 and columns // 2. diffusers: `NucleusMoEEmbedRope(scale_rope=
        True)`."""
        def make() -> tuple[Any, Any]:
            ids = qwen_image_positions(rows, columns, text_length)
            ids = np.concatenate([ids[text_length:], ids[:text_length]])
            axes = tuple(self.config["axes_dims_rope"])
            return (rope_tables(ids[:rows * columns], axes, _ROPE_THETA, device=self.device),
                    rope_tables(ids, axes, _ROPE_THETA, device=self.device))
        return kept(self._tables, (rows, columns, text_length, self.device), make)

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Tensor, timestep: Any,
                rows: int, columns: int, encoder_mask: Any = None) -> Tensor:
        """hidden_states (B, rows * columns, in_channels) packed latents (row-major
        patches); encoder_hidden_states (B, T, joint_attention_dim) in any float dtype;
        timestep (B,) host numbers in [0, 1] (the pipeline's t / 1000); encoder_mask (B, T)
        nonzero for the text tokens attended to, or None for all."""
        batch, length, _ = hidden_states.shape
        if length != rows * columns:
            raise ValueError(f"{length} image tokens are not {rows} x {columns} patches")
        text_length = encoder_hidden_states.shape[1]
        mask = None
        if encoder_mask is not None:
            keep = np.asarray(encoder_mask) != 0
            if keep.shape != (batch, text_length):
                raise ValueError(f"encoder_mask must be (batch, text tokens) = "
                                 f"{(batch, text_length)}, got {keep.shape}")
            keys = np.concatenate([np.ones((batch, length), bool), keep], axis=1)
            mask = asarray(keys.astype(np.uint32).reshape(batch, 1, 1, -1), device=self.device)
        x = self.img_in(hidden_states)
        norm = self.txt_norm
        text = cast(rms_norm(encoder_hidden_states, norm.weight, norm.eps), self.dtype)
        temb = self.time_text_embed(np.asarray(timestep, np.float32), self.dtype, self.device)
        activated = nn.silu(temb)  # one SiLU for every block's modulation
        tables = self.rotary(rows, columns, text_length)
        for block in self.transformer_blocks:
            x = block(x, text, temb, activated, tables, mask)
        return self.proj_out(self.norm_out(x, temb, activated))

