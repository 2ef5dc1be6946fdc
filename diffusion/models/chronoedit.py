"""NVIDIA's ChronoEdit transformer: Wan 2.1 I2V's (models.wan) with one change, where the
edit's latent video is two frames (the input picture and the edited picture) their rotary
frame positions are 0 and `rope_temporal_skip_len - 1` rather than 0 and 1, as though the
temporal reasoning frames between them were there. diffusers: ChronoEditTransformer3DModel
(`ChronoEditRotaryPosEmbed` is its only difference from WanTransformer3DModel)."""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor

from .transformer_ops import rope_tables
from .wan import _ROPE_THETA, WanTransformer3DModel, rope_axes, wan_positions

__all__ = ["ChronoEditTransformer3DModel"]

_SKIP = 8  # diffusers' rope_temporal_skip_len default, ChronoEdit-14B's


class ChronoEditTransformer3DModel(WanTransformer3DModel):
    """Latent video (B, in_channels, F, H, W), UMT5 states and CLIP image states -> the flow,
    as WanTransformer3DModel; config: a ChronoEdit folder's `transformer/config.json`
    (`rope_temporal_skip_len` besides Wan's fields). diffusers:
    `ChronoEditTransformer3DModel(hidden_states, timestep, encoder_hidden_states,
    encoder_hidden_states_image).sample`."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        skip = int(config.get("rope_temporal_skip_len", _SKIP))
        if skip < 1:
            raise ValueError(f"ChronoEdit's rope_temporal_skip_len must be at least 1, got {skip}")
        head = int(config.get("attention_head_dim", 128))
        # diffusers builds the tables with 2 (head // 6) row and column features but cuts
        # them at head // 3: the same split only where those agree (128, ChronoEdit-14B's)
        if 2 * (head // 6) != head // 3:
            raise ValueError(f"ChronoEdit with attention_head_dim {head} is not supported: "
                             "its rotary split needs head // 3 == 2 (head // 6) (e.g. 128)")
        if int(config.get("patch_size", (1, 2, 2))[0]) != 1:
            raise ValueError("ChronoEdit's transformer patches one frame at a time "
                             "(patch_size (1, 2, 2)); this config's frame patch is not 1")
        super().__init__(config, dtype=dtype, device=device)
        self.temporal_skip = skip

    def rotary(self, frames: int, rows: int, columns: int) -> tuple[Tensor, Tensor]:
        """Wan's cos/sin tables; two frames (the picture, its edit) at frame positions 0 and
        min(skip, rope_max_seq_len) - 1."""
        if frames != 2:
            return super().rotary(frames, rows, columns)
        limit = int(self.config["rope_max_seq_len"])
        if max(rows, columns) > limit:
            raise ValueError(f"{rows} x {columns} patches pass Wan's {limit} rotary positions "
                             "per axis; make the picture smaller")
        positions = wan_positions(2, rows, columns)
        last = min(self.temporal_skip, limit) - 1
        positions[:, 0] *= last
        return rope_tables(positions, rope_axes(self.config["attention_head_dim"]),
                           _ROPE_THETA, device=self.device)
