"""The Chroma transformer (diffusers' ChromaTransformer2DModel names): FLUX.1-schnell's
double- and single-stream blocks without their per-block modulation layers, whose shift /
scale / gate vectors all come from one small network instead, the "approximator"
(`distilled_guidance_layer`), fed the timestep and each vector's index; T5 states only (no
pooled CLIP), with the text's padding masked out of attention."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, nn, take_slice

from .dit_layers import (
    FeedForward,
    JointAttention,
    Rope,
    TimestepEmbedding,
    modulated_norm_of,
)
from .flux import SingleStreamBlock
from .layers import Place
from .step_cache import BranchCache, run_blocks
from .transformer_ops import Modulation, RMSNorm, gated_add, rope_heads, rope_tables

__all__ = ["ChromaTransformer2DModel", "approximator_input"]

_DEFAULTS: dict[str, Any] = {
    "patch_size": 1, "in_channels": 64, "out_channels": None, "num_layers": 19,
    "num_single_layers": 38, "attention_head_dim": 128, "num_attention_heads": 24,
    "joint_attention_dim": 4096, "axes_dims_rope": (16, 56, 56),
    "approximator_num_channels": 64, "approximator_hidden_dim": 5120, "approximator_layers": 5,
}
_ROPE_THETA = 10000.0


def _sinusoid(values: np.ndarray, dim: int) -> np.ndarray:
    """[cos, sin] (N, dim) float32 of float32 `values`, as diffusers' `get_timestep_embedding(
    values, dim, flip_sin_to_cos=True, downscale_freq_shift=0)` computes it in float32 (the
    product rounded to float32, its sine taken exactly: the index table's angles reach 3e5, where
    a frequency one ulp off moves an angle by 0.02)."""
    half = dim // 2
    # torch's float32 exponent, its exp rounded from float64 (torch's agrees at these sizes)
    exponent = np.float32(-math.log(10000)) * np.arange(half, dtype=np.float32) / np.float32(half)
    freqs = np.exp(exponent.astype(np.float64)).astype(np.float32)
    angles = (values.astype(np.float32)[:, None] * freqs[None, :]).astype(np.float64)
    return np.concatenate([np.cos(angles), np.sin(angles)], axis=1).astype(np.float32)


def approximator_input(timesteps: np.ndarray, count: int, channels: int) -> np.ndarray:
    """(B, count, channels) float32: for each of the `count` modulation vectors, the
    embedded timestep (x1000), the embedded guidance (always 0) and the embedded index
    (x1000), channels/4 + channels/4 + channels/2 wide. diffusers:
    `ChromaCombinedTimestepTextProjEmbeddings(channels // 4, count)(timesteps * 1000)`."""
    quarter = channels // 4
    times = np.asarray(timesteps, np.float32).reshape(-1) * np.float32(1000)
    batch = times.shape[0]
    time_guidance = np.concatenate([_sinusoid(times, quarter),
                                    _sinusoid(np.zeros(batch, np.float32), quarter)], axis=1)
    index = _sinusoid(np.arange(count, dtype=np.float32) * np.float32(1000), 2 * quarter)
    return np.concatenate([np.repeat(time_guidance[:, None], count, axis=1),
                           np.repeat(index[None], batch, axis=0)], axis=2)


class ChromaApproximator(nn.Module):
    """in_proj, residual [RMSNorm -> linear_1, SiLU, linear_2] layers, out_proj: the
    modulation vectors (B, count, dim) from approximator_input. diffusers:
    `ChromaApproximator`. The norms' eps is 1e-6, as in Chroma's own code, ComfyUI's and
    Forge's (BFL's RMSNorm); diffusers' torch.nn.RMSNorm takes the dtype's machine epsilon
    (1.2e-7 in float32, where the tests compare; 7.8e-3 in bfloat16)."""

    def __init__(self, in_dim: int, out_dim: int, hidden_dim: int, layers: int,
                 place: Place) -> None:
        eps = 1e-6
        self.in_proj = nn.Linear(in_dim, hidden_dim, **place)
        self.layers = nn.ModuleList([TimestepEmbedding(hidden_dim, hidden_dim, place)
                                     for _ in range(layers)])
        self.norms = nn.ModuleList([RMSNorm(hidden_dim, eps, place=place)
                                    for _ in range(layers)])
        self.out_proj = nn.Linear(hidden_dim, out_dim, **place)

    def forward(self, x: Tensor) -> Tensor:
        x = self.in_proj(x)
        for layer, norm in zip(self.layers, self.norms):
            x = x + layer(norm(x))
        return self.out_proj(x)


class ChromaTransformerBlock(nn.Module):
    """The double-stream block of FLUX (`JointTransformerBlock`'s attention and
    feed-forwards, the same names) with its modulations given: 6 vectors for the image
    stream, 6 for the text's. diffusers: `ChromaTransformerBlock`."""

    def __init__(self, dim: int, heads: int, head_dim: int, place: Place) -> None:
        self.attn = JointAttention(dim, heads, head_dim, place, qk_norm=True, context=True)
        self.ff = FeedForward(dim, place)
        self.ff_context = FeedForward(dim, place)

    def forward(self, x: Tensor, context: Tensor, mods: Modulation, image: int, text: int,
                rotary: Rope, mask: Tensor | None) -> tuple[Tensor, Tensor]:
        """(image (B, Lx, dim), text (B, Lc, dim)); mods: the approximator's vectors, the
        image stream's shift, scale, gate of attention, then of the feed-forward at
        `image` .. image + 5, the text stream's at `text` .. text + 5. The norms read their
        shift and scale in place; the gate and residual go into to_out's and net.2's GEMMs
        where they take them."""
        x, context_attn = self.attn.gated(
            x, mods[image + 2],
            modulated_norm_of(x, mods, image, image + 1, self.attn.image_inputs()),
            modulated_norm_of(context, mods, text, text + 1, self.attn.text_inputs()),
            rotary, mask)
        x = self.ff.gated(x, mods[image + 5], modulated_norm_of(x, mods, image + 3, image + 4,
                                                                 self.ff.input_layers()))
        assert context_attn is not None  # a block with a text stream returns its output
        context = gated_add(context, mods[text + 2], context_attn)
        return x, self.ff_context.gated(context, mods[text + 5], modulated_norm_of(
            context, mods, text + 3, text + 4, self.ff_context.input_layers()))


class ChromaSingleTransformerBlock(SingleStreamBlock):
    """Chroma's single-stream block: its modulation given, from the approximator. Its
    `forward` is the modulated pass, so a memory mode's streaming brings it in
    (diffusion.pipelines.flow.flow_memory)."""

    def forward(self, x: Tensor, mods: Modulation, at: int, rotary: Rope,
                mask: Tensor | None = None) -> Tensor:
        """x: text then image tokens; its shift, scale and gate are mods[at .. at + 2], the
        norm reading the first two in place."""
        return self.normed(x, modulated_norm_of(x, mods, at, at + 1, self.input_layers()),
                           mods[at + 2], rotary, mask)


class ChromaTransformer2DModel(nn.Module):
    """Packed latents (B, L, in_channels) -> the flow (B, L, out_channels).

    Config: `transformer/config.json` of a Chroma folder (diffusers' ChromaTransformer2DModel
    fields). Parameter names are diffusers' (`distilled_guidance_layer.in_proj.weight`,
    `transformer_blocks.0.attn.to_q.weight`, ...). diffusers: `ChromaTransformer2DModel(
    hidden_states, encoder_hidden_states, timestep, img_ids, txt_ids, attention_mask).sample`
    with a boolean mask.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        self.config = cfg
        place: Place = {"dtype": dtype, "device": device}
        heads, head_dim = rope_heads(cfg)
        dim = heads * head_dim
        out_channels = cfg["out_channels"] or cfg["in_channels"]
        double, single = cfg["num_layers"], cfg["num_single_layers"]
        # 3 vectors per single block, 6 + 6 per double block, shift and scale of norm_out
        self.modulations = 3 * single + 12 * double + 2
        self.distilled_guidance_layer = ChromaApproximator(
            cfg["approximator_num_channels"], dim, cfg["approximator_hidden_dim"],
            cfg["approximator_layers"], place)
        self.context_embedder = nn.Linear(cfg["joint_attention_dim"], dim, **place)
        self.x_embedder = nn.Linear(cfg["in_channels"], dim, **place)
        self.transformer_blocks = nn.ModuleList(
            [ChromaTransformerBlock(dim, heads, head_dim, place) for _ in range(double)])
        self.single_transformer_blocks = nn.ModuleList(
            [ChromaSingleTransformerBlock(dim, heads, head_dim, place) for _ in range(single)])
        self.proj_out = nn.Linear(dim, cfg["patch_size"] ** 2 * out_channels, **place)

    def rotary(self, txt_ids: Any, img_ids: Any) -> tuple[Tensor, Tensor]:
        """cos/sin tables for text then image positions, as FluxTransformer2DModel.rotary."""
        ids = np.concatenate([np.asarray(txt_ids), np.asarray(img_ids)])
        return rope_tables(ids, tuple(self.config["axes_dims_rope"]), _ROPE_THETA,
                           device=self.x_embedder.weight.device)

    def modulation_vectors(self, timestep: Any) -> Tensor:
        """(B, modulations, dim): every block's shift / scale / gate at these timesteps
        ((B,) host numbers in [0, 1], or their `approximator_inputs` as a Tensor in the
        model's dtype: a replayed step's input). Single blocks' first, then the double
        blocks' image vectors, their text vectors, and norm_out's shift and scale."""
        weight = self.x_embedder.weight
        inputs = timestep if isinstance(timestep, Tensor) else asarray(
            self.approximator_inputs(timestep), dtype=weight.dtype, device=weight.device)
        return self.distilled_guidance_layer(inputs)

    def approximator_inputs(self, timestep: Any) -> np.ndarray:
        """approximator_input of (B,) host timesteps in [0, 1], rounded to the model's dtype
        first (its sinusoids exact on the host: the index table's angles reach 3e5)."""
        return approximator_input(
            np.asarray(timestep, np.float32).astype(self.x_embedder.weight.dtype),
            self.modulations, self.config["approximator_num_channels"])

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Tensor, timestep: Any,
                img_ids: Any, txt_ids: Any, attention_mask: Any = None, *,
                rotary: tuple[Tensor, Tensor] | None = None,
                cache: BranchCache | None = None) -> Tensor:
        """hidden_states (B, Li, in_channels): packed latents; encoder_hidden_states
        (B, Lt, joint_attention_dim): T5 states; timestep (B,) host numbers in [0, 1]
        (sigmas), or a Tensor of their `approximator_inputs`; img_ids (Li, 3), txt_ids
        (Lt, 3) positions, or their tables precomputed by `rotary`; attention_mask (B, Lt +
        Li) or None: True / nonzero for the tokens attended to (text then image;
        ChromaPipeline keeps the prompt's tokens and one pad).
        `cache`: a step cache branch (`step_cache.StepCache.branch()`) the blocks run
        through, its calls in step order.
        """
        batch = hidden_states.shape[0]
        text_length = encoder_hidden_states.shape[1]
        mask = None
        if attention_mask is not None:
            keep = np.asarray(attention_mask)
            expected = (batch, text_length + hidden_states.shape[1])
            if keep.shape != expected:
                raise ValueError(f"attention_mask must be (batch, text + image tokens) = "
                                 f"{expected}, got {keep.shape}")
            mask = asarray((keep != 0).astype(np.uint32).reshape(batch, 1, 1, -1),
                           device=hidden_states.device)
        # 1. embeddings, and every block's modulation from the approximator, left in its
        # output: the norms read theirs in place, only the gates are copied
        vectors = self.modulation_vectors(timestep)
        mods = Modulation(vectors.reshape(batch, -1), self.modulations)
        x = self.x_embedder(hidden_states)
        context = self.context_embedder(encoder_hidden_states)
        tables = rotary if rotary is not None else self.rotary(txt_ids, img_ids)
        single, double = len(self.single_transformer_blocks), len(self.transformer_blocks)

        # 2. double-stream blocks, then one stream of text + image tokens (the first block
        # apart: a step cache decides after it whether the others run)
        blocks = list(self.transformer_blocks)

        def double_block(i: int, x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
            return blocks[i](x, context, mods, 3 * single + 6 * i,
                             3 * single + 6 * (double + i), tables, mask)

        def head(x: Tensor, context: Tensor) -> tuple[Tensor, Tensor]:
            return double_block(0, x, context) if blocks else (x, context)

        def tail(x: Tensor, context: Tensor) -> Tensor:
            for i in range(1, double):
                x, context = double_block(i, x, context)
            x = concatenate([context, x], axis=1)
            for i, stream in enumerate(self.single_transformer_blocks):
                x = stream(x, mods, 3 * i, tables, mask)
            return take_slice(x, text_length, x.shape[1], axis=1)

        x = run_blocks(cache, x, context, head, tail)
        # 3. final modulated norm (shift first, then scale) and projection
        return self.proj_out(mods.norm(x, shift=self.modulations - 2,
                                       scale=self.modulations - 1))
