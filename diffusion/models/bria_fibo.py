"""The Bria FIBO transformer (diffusers' BriaFiboTransformer2DModel names): FLUX.1's double-
and single-stream blocks, rotary embedding and output head, conditioned on the timestep alone
(`time_embed`, LongCat-Image's: no pooled text, no guidance embedding), and fed the text
encoder's layers one per block: before each block the text stream's second half is replaced
by that block's layer of SmolLM3's hidden states through its own bias-free projection
(`caption_projection.i`, text_encoder_dim -> dim / 2); the first half carries on from the
block before (at the start: `context_embedder` of SmolLM3's last two states side by side)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np

from gpucore import Device
from gpustd import Tensor, concatenate, nn, take_slice

from .flux import FluxTransformer2DModel
from .layers import Place
from .longcat_image import LongCatImageTimestepEmbeddings

__all__ = ["BriaFiboTransformer2DModel", "block_layers"]

_DEFAULTS: dict[str, Any] = {
    "patch_size": 1, "in_channels": 48, "num_layers": 8, "num_single_layers": 38,
    "attention_head_dim": 128, "num_attention_heads": 24, "joint_attention_dim": 4096,
    "axes_dims_rope": (16, 56, 56), "rope_theta": 10000, "time_theta": 10000,
    "text_encoder_dim": 2048, "guidance_embeds": False,
}

T = TypeVar("T")


def block_layers(states: Sequence[T], blocks: int) -> list[T]:
    """The text encoder's hidden states (embeddings first, as transformers' `hidden_states`)
    the `blocks` transformer blocks read in order: the last `blocks` of them, or all with the
    last repeated up to `blocks`. diffusers: BriaFiboPipeline's `prompt_layers` selection."""
    states = list(states)
    if len(states) >= blocks:
        return states[len(states) - blocks:]
    return states + [states[-1]] * (blocks - len(states))


class BriaFiboTextProjection(nn.Module):
    """One block's text encoder layer -> the text stream's second half (`linear`, no bias)."""

    def __init__(self, in_features: int, width: int, place: Place) -> None:
        self.linear = nn.Linear(in_features, width, bias=False, **place)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x)


class BriaFiboTransformer2DModel(FluxTransformer2DModel):
    """Latents as tokens (B, L, in_channels), one per latent pixel -> the flow (B, L,
    in_channels).

    Config: `transformer/config.json` of a FIBO folder (diffusers' BriaFiboTransformer2DModel
    fields). Parameter names are diffusers' (`time_embed.timestep_embedder.linear_1.weight`,
    `caption_projection.0.linear.weight`, `transformer_blocks.0.attn.to_q.weight`, ...).
    diffusers: `BriaFiboTransformer2DModel(hidden_states, encoder_hidden_states,
    text_encoder_layers, timestep=, img_ids=, txt_ids=).sample`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        if cfg["patch_size"] != 1 or cfg["guidance_embeds"] or float(
                cfg["rope_theta"]) != 10000 or float(cfg["time_theta"]) != 10000:
            raise ValueError("this Bria FIBO transformer implements patch_size 1, no guidance "
                             "embedding and rope_theta = time_theta = 10000 (the released "
                             "model's); got " + ", ".join(f"{k} {cfg[k]}" for k in (
                                 "patch_size", "guidance_embeds", "rope_theta", "time_theta")))
        super().__init__({**cfg, "out_channels": None}, dtype=dtype, device=device)
        place: Place = {"dtype": dtype, "device": device}
        half = cfg["num_attention_heads"] * cfg["attention_head_dim"] // 2
        self.caption_projection = nn.ModuleList(
            [BriaFiboTextProjection(cfg["text_encoder_dim"], half, place)
             for _ in range(cfg["num_layers"] + cfg["num_single_layers"])])

    def conditioning(self, dim: int, cfg: dict[str, Any], place: Place) -> None:
        """The timestep's embedder alone (`time_embed`)."""
        self.time_embed = LongCatImageTimestepEmbeddings(dim, place)

    def forward(self, hidden_states: Tensor, encoder_hidden_states: Tensor,  # type: ignore[override]
                text_layers: Sequence[Tensor], timestep: Any, img_ids: Any = None,
                txt_ids: Any = None, *, rotary: tuple[Tensor, Tensor] | None = None
                ) -> Tensor:
        """hidden_states (B, Li, in_channels); encoder_hidden_states (B, Lt,
        joint_attention_dim): SmolLM3's last two states side by side; text_layers: one (B, Lt,
        text_encoder_dim) per block (`block_layers`), every token attended to (a prompt's
        padding is left out rather than masked); timestep (B,) in [0, 1] (sigmas), host
        numbers or a float32 Tensor; img_ids (Li, 3), txt_ids (Lt, 3) positions, or their
        tables precomputed by `rotary`."""
        blocks, singles = list(self.transformer_blocks), list(self.single_transformer_blocks)
        if len(text_layers) != len(blocks) + len(singles):
            raise ValueError(f"this FIBO transformer reads {len(blocks) + len(singles)} text "
                             f"layers (one per block), got {len(text_layers)}")
        temb = self.time_embed(self._thousandfold(timestep), self.x_embedder.weight.device)
        tables = rotary if rotary is not None else self.rotary(txt_ids, img_ids)
        x = self.x_embedder(hidden_states)
        context = self.context_embedder(encoder_hidden_states)
        activated = nn.silu(temb)  # every adaLN's input, once
        half = context.shape[2] // 2
        layers = [projection(layer) for projection, layer in
                  zip(self.caption_projection, text_layers, strict=True)]

        def fed(text: Tensor, index: int) -> Tensor:  # the first half kept, the layer after
            return concatenate([take_slice(text, 0, half, axis=2), layers[index]], axis=2)

        for index, block in enumerate(blocks):
            x, context = block(x, fed(context, index), temb, tables, activated=activated)
        length = context.shape[1]
        for index, single in enumerate(singles, len(blocks)):
            joint = concatenate([fed(context, index), x], axis=1)
            joint = single(joint, temb, tables, activated=activated)
            context = take_slice(joint, 0, length, axis=1)
            x = take_slice(joint, length, joint.shape[1], axis=1)
        return self.proj_out(self.norm_out(x, temb, activated))
