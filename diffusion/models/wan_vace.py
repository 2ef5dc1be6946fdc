"""Wan VACE's transformer (diffusers' WanVACETransformer3DModel names): the Wan 2.1
transformer (models.wan) with a control branch. The control latents (B, vace_in_channels, F,
H, W: the inactive and reactive video latents and the folded mask) are cut into the same
patches and embedded by `vace_patch_embedding`; VACE blocks, Wan blocks of their own, run over
them (the first adds the video's embedded patches through `proj_in`), and each one's `proj_out`
gives a hint added, times a conditioning scale, to the main stream after the main block its
`vace_layers` entry names."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, nn, zeros

from .layers import Place
from .transformer_ops import cast, gated_linear
from .wan import Hints, WanStream, WanTransformer3DModel, wan_patches
from .wan_blocks import WanTransformerBlock
from .wan_embeddings import PatchEmbedding

__all__ = ["WanVACETransformer3DModel", "WanVACETransformerBlock"]

_VACE_DEFAULTS: dict[str, Any] = {"vace_layers": [0, 5, 10, 15, 20, 25, 30, 35],
                                  "vace_in_channels": 96}


class WanVACETransformerBlock(WanTransformerBlock):
    """A Wan block over the control tokens (the first VACE block's input `proj_in`(control) +
    the video's embedded patches) and `proj_out`, its hint. diffusers:
    `WanVACETransformerBlock` (its conditioning_states are `proj_out(...)`)."""

    def __init__(self, cfg: dict[str, Any], place: Place, first: bool) -> None:
        super().__init__(cfg, place)
        dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        self.proj_in = nn.Linear(dim, dim, **place) if first else None
        self.proj_out = nn.Linear(dim, dim, **place)

    def start(self, control: Tensor, patches: Tensor) -> Tensor:
        """The first block's input: proj_in(control) + the video's patches."""
        assert self.proj_in is not None
        return self.proj_in(control) + patches


class WanVACETransformer3DModel(WanTransformer3DModel):
    """Latent video (B, in_channels, F, H, W), UMT5 states and control latents (B,
    vace_in_channels, F, H, W) -> the flow (B, out_channels, F, H, W).

    Config: `transformer/config.json` of a Wan VACE folder (WanTransformer3DModel's fields,
    `vace_layers` (must hold 0) and `vace_in_channels`). Parameter names are diffusers':
    WanTransformer3DModel's, `vace_patch_embedding.weight`, `vace_blocks.0.proj_in.weight`,
    `vace_blocks.N.attn1.to_q.weight`, `vace_blocks.N.proj_out.weight`, ... diffusers:
    `WanVACETransformer3DModel(hidden_states, timestep, encoder_hidden_states,
    control_hidden_states=..., control_hidden_states_scale=...).sample`.
    """

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_VACE_DEFAULTS, **config}
        layers = [int(i) for i in cfg["vace_layers"]]
        if (0 not in layers or len(set(layers)) != len(layers)
                or not all(0 <= i < cfg.get("num_layers", 40) for i in layers)):
            raise ValueError(f"VACE layers {layers} must be distinct main blocks (0 to "
                             "num_layers - 1) and include 0; fix the transformer's config")
        super().__init__(cfg, dtype=dtype, device=device)
        place: Place = {"dtype": dtype, "device": device}
        dim = cfg["num_attention_heads"] * cfg["attention_head_dim"]
        self.vace_patch_embedding = PatchEmbedding(cfg["vace_in_channels"], dim, self.patch,
                                                   place)
        self.vace_blocks = nn.ModuleList([WanVACETransformerBlock(self.config, place, i == 0)
                                          for i in range(len(layers))])
        # hint k follows the k-th main block in order that vace_layers names (diffusers pops
        # its hints in block order, whatever order the list has)
        self.hint_of = {layer: k for k, layer in enumerate(sorted(layers))}

    def encode_control(self, control_hidden_states: Tensor) -> Tensor:
        """Control latents (B, vace_in_channels, F, H, W) -> their embedded patches (B, L,
        dim); the same for every step (a pipeline computes it once per video)."""
        channels = self.config["vace_in_channels"]
        if control_hidden_states.ndim != 5 or control_hidden_states.shape[1] != channels:
            raise ValueError(f"control latents must be (batch, {channels}, frames, height, "
                             f"width), got shape {tuple(control_hidden_states.shape)}")
        patches, _ = wan_patches(cast(control_hidden_states, self.dtype), self.patch)
        return self.vace_patch_embedding(patches)

    def scales(self, scale: float | Sequence[float]) -> list[float]:
        """One conditioning scale per VACE block from one float or a list of them."""
        count = len(self.vace_blocks)
        values = [float(s) for s in np.asarray(scale, np.float64).reshape(-1)]
        if np.ndim(scale) == 0:
            values *= count
        if len(values) != count:
            raise ValueError(f"{len(values)} conditioning scales for {count} VACE layers; "
                             f"give one number or {count}")
        return values

    def forward(self, hidden_states: Tensor, timestep: Any, encoder_hidden_states: Tensor, *,
                control_hidden_states: Tensor | None = None,
                control_context: Tensor | None = None,
                control_hidden_states_scale: float | Sequence[float] = 1.0,
                **options: Any) -> Tensor:
        """WanTransformer3DModel.forward's inputs (its `options`: context, the I2V image,
        cache) and the control: `control_hidden_states` (B or 1, vace_in_channels, F' <= F,
        H, W; missing frames count as zero tokens, as diffusers pads them), or
        `control_context` = `encode_control(...)` given instead;
        `control_hidden_states_scale` one float or one per VACE layer (0: that hint left
        out; all 0: Wan's own flow)."""
        if control_context is None:
            if control_hidden_states is None:
                raise ValueError("a VACE transformer reads control latents: give "
                                 "control_hidden_states or control_context")
            if tuple(control_hidden_states.shape[3:]) != tuple(hidden_states.shape[3:]):
                raise ValueError(f"control latents of {tuple(control_hidden_states.shape)} "
                                 f"for a latent video of {tuple(hidden_states.shape)}: give "
                                 "them the video's height and width")
            control_context = self.encode_control(control_hidden_states)
        hints = self._hints(control_context, self.scales(control_hidden_states_scale))
        return super().forward(hidden_states, timestep, encoder_hidden_states, control=hints,
                               **options)

    def _hints(self, control: Tensor, scales: list[float]) -> Hints | None:
        """The control branch of one call: the VACE blocks run as their hints are needed (a
        step cache that skips the main blocks skips them too, and one hint at a time is
        held); none after the last hint of a nonzero scale."""
        if not any(scales):
            return None
        blocks = list(self.vace_blocks)

        def branch(stream: WanStream) -> Callable[[int, Tensor], Tensor]:
            last: Tensor | None = None  # the output of VACE block ran - 1
            ran = 0

            def after(index: int, x: Tensor) -> Tensor:
                nonlocal last, ran
                k = self.hint_of.get(index)
                if k is None or not scales[k]:
                    return x
                while ran <= k:
                    start = last if last is not None else blocks[0].start(
                        _fitted(control, stream.patches), stream.patches)
                    last = blocks[ran](start, stream.context, stream.segments, stream.rotary,
                                       stream.image)
                    ran += 1
                assert last is not None
                batch, _, dim = x.shape
                gate = asarray(np.full((batch, 1, dim), scales[k], np.float32), dtype=x.dtype,
                               device=x.device)
                return gated_linear(x, gate, blocks[k].proj_out, last)

            return after

        return branch


def _fitted(control: Tensor, patches: Tensor) -> Tensor:
    """The control tokens (1 or B, Lc, dim) made (B, L, dim) as the video's `patches`: the
    one control repeated over the batch, zero tokens after it (diffusers' padding)."""
    batch, length, dim = patches.shape
    if control.shape[0] != batch:
        if control.shape[0] != 1:
            raise ValueError(f"control latents for {control.shape[0]} videos and a batch of "
                             f"{batch}: give one control or one per video")
        control = concatenate([control] * batch, axis=0)
    if control.shape[1] > length:
        raise ValueError(f"the control latents have more frames ({control.shape[1]} tokens) "
                         f"than the latent video ({length}); give them the video's frames")
    if control.shape[1] < length:
        pad = zeros((batch, length - control.shape[1], dim), control.dtype,
                    device=control.device)
        control = concatenate([control, pad], axis=1)
    return control
