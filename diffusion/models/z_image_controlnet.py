"""Z-Image's ControlNet (diffusers' ZImageControlNetModel names): alibaba-pai's
Z-Image-Turbo-Fun-Controlnet-Union, its 2.0 and 2.1. Control blocks are Z-Image transformer
blocks with two extra linears: the first (`before_proj`) adds the transformer's tokens to the
control tokens, each block's `after_proj` gives a residual for the transformer block it
names (`control_layers_places`).

The control map's latents (zero-padded to `control_in_dim` channels) are patchified and
embedded (`control_all_x_embedder`), padded with the transformer's pad token, then:

- 1.0 (`add_control_noise_refiner` None): they pass `control_noise_refiner` (plain
  transformer blocks) beside the transformer's refined image tokens;
- 2.0 ("control_layers") and 2.1 ("control_noise_refiner"): `control_layers` (2.0) or
  `control_noise_refiner` (2.1, control blocks of their own) run on them beside the image
  tokens before the noise refiner, and their residuals are added after the noise refiner
  blocks named by `control_refiner_layers_places`, on the ControlNet's own copy of the image
  tokens (the transformer's stream is left as it is).

Then the control tokens with the caption's join the image and caption tokens through
`control_layers`, whose residuals, times the unit's weight, are the transformer's.
The transformer's modules (pad token, noise refiner) are shared, not copied: a call takes
the transformer (diffusers: `ZImageControlNetModel.from_transformer`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, concatenate, nn

from .layers import Place
from .z_image import ZImageStream, patchify
from .z_image_blocks import ZImageTransformerBlock

__all__ = ["REFINER_MODES", "ZImageControlNetModel"]

_DEFAULTS: dict[str, Any] = {
    "control_layers_places": None, "control_refiner_layers_places": None,
    "control_in_dim": None, "add_control_noise_refiner": None, "all_patch_size": (2,),
    "all_f_patch_size": (1,), "dim": 3840, "n_refiner_layers": 2, "n_heads": 30,
    "n_kv_heads": 30, "norm_eps": 1e-5, "qk_norm": True,
}
# add_control_noise_refiner: 1.0's None, 2.0's and 2.1's
REFINER_MODES = (None, "control_layers", "control_noise_refiner")


class ZImageControlBlock(ZImageTransformerBlock):
    """A modulated transformer block over the control tokens; the first of a run
    (`first`: diffusers' block_id 0) adds the transformer's tokens through `before_proj`.
    diffusers: ZImageControlTransformerBlock."""

    def __init__(self, cfg: dict[str, Any], place: Place, *, first: bool) -> None:
        super().__init__(cfg, place, modulation=True)
        dim = cfg["dim"]
        if first:
            self.before_proj = nn.Linear(dim, dim, **place)
        self.after_proj = nn.Linear(dim, dim, **place)

    @property
    def first(self) -> bool:
        return hasattr(self, "before_proj")

    def step(self, c: Tensor, x: Tensor, rotary: tuple[Tensor, Tensor], temb: Tensor
             ) -> tuple[Tensor, Tensor]:
        """The control tokens c (1, L, dim) beside the transformer's x -> (c, its residual)."""
        if self.first:
            c = self.before_proj(c) + x
        c = self(c, rotary, temb)
        return c, self.after_proj(c)


def _run(blocks: Any, c: Tensor, x: Tensor, rotary: tuple[Tensor, Tensor], temb: Tensor
         ) -> tuple[Tensor, list[Tensor]]:
    """Control blocks over c beside x: the last tokens and the residuals since the last
    first block (diffusers stacks them and starts over at block_id 0)."""
    residuals: list[Tensor] = []
    for block in blocks:
        if block.first:
            residuals = []
        c, residual = block.step(c, x, rotary, temb)
        residuals.append(residual)
    return c, residuals


class ZImageControlNetModel(nn.Module):
    """A control map's latents and one picture's streams -> residuals by transformer block.

    Config: a ZImageControlNetModel `config.json` (diffusers' fields). Parameter names are
    diffusers' (`control_all_x_embedder.2-1.weight`, `control_layers.0.before_proj.weight`,
    `control_noise_refiner.0.attention.to_q.weight`, ...)."""

    def __init__(self, config: dict[str, Any], *, dtype: Any = np.float32,
                 device: Device | None = None) -> None:
        cfg = {**_DEFAULTS, **config}
        places = list(cfg["control_layers_places"] or ())
        if 0 not in places:
            raise ValueError(f"control_layers_places {places} must hold 0 (the block that "
                             "reads the transformer's tokens)")
        mode = cfg["add_control_noise_refiner"]
        if mode not in REFINER_MODES:
            raise ValueError(f"add_control_noise_refiner {mode!r} is none of "
                             f"{', '.join(map(repr, REFINER_MODES))}")
        if not cfg["control_in_dim"]:
            raise ValueError("control_in_dim is not set: give the ControlNet's config.json")
        self.config = cfg
        place: Place = {"dtype": dtype, "device": device}
        self.control_layers = nn.ModuleList(
            [ZImageControlBlock(cfg, place, first=p == 0) for p in places])
        self.control_all_x_embedder = nn.Namespace()
        for patch, frames in zip(cfg["all_patch_size"], cfg["all_f_patch_size"]):
            width = frames * patch * patch * cfg["control_in_dim"]
            setattr(self.control_all_x_embedder, f"{patch}-{frames}",
                    nn.Linear(width, cfg["dim"], **place))
        refiners = range(cfg["n_refiner_layers"])
        self.control_noise_refiner: nn.ModuleList[Any]
        if mode == "control_noise_refiner":
            self.control_noise_refiner = nn.ModuleList(
                [ZImageControlBlock(cfg, place, first=i == 0) for i in refiners])
        elif mode is None:
            self.control_noise_refiner = nn.ModuleList(
                [ZImageTransformerBlock(cfg, place, modulation=True) for _ in refiners])

    @property
    def in_channels(self) -> int:
        """The channels the map's latents are zero-padded to."""
        return int(self.config["control_in_dim"])

    def forward(self, control: Tensor, stream: ZImageStream, transformer: Any, *,
                conditioning_scale: float = 1.0, patch_size: int = 2) -> dict[int, Tensor]:
        """control (1, control_in_dim, H, W): the map's latents for the picture whose
        `stream` the transformer gives; `transformer`: its ZImageTransformer2DModel (pad
        token, noise refiner). Returns the residuals times `conditioning_scale`, by the
        joint block after which they are added. diffusers: `ZImageControlNetModel(x, t,
        captions, control_context, conditioning_scale)` for one picture."""
        embedder = getattr(self.control_all_x_embedder, f"{patch_size}-1", None)
        if embedder is None:
            raise ValueError(f"this ControlNet has no patch size {patch_size}")
        cfg, scale = self.config, np.float32(conditioning_scale)
        # 1. the map's tokens, padded to the image's with the transformer's pad token
        c = embedder(patchify(control, patch_size))
        pad = stream.image.shape[1] - c.shape[1]
        if pad:
            c = concatenate([c, *[transformer.x_pad_token.reshape(1, 1, -1)] * pad], axis=1)
        temb, rotary = stream.temb, stream.image_rotary
        # 2. the refiner stage: beside the image tokens before (2.x) or after (1.0) the
        # transformer's noise refiner
        x = stream.refined
        mode = cfg["add_control_noise_refiner"]
        if mode is None:
            for block in self.control_noise_refiner:
                c = block(c, rotary, temb)
        else:
            blocks = self.control_layers if mode == "control_layers" else (
                self.control_noise_refiner)
            c, residuals = _run(blocks, c, stream.image, rotary, temb)
            refiner = dict(zip(cfg["control_refiner_layers_places"] or (), residuals))
            x = stream.image
            for index, block in enumerate(transformer.noise_refiner):
                x = block(x, rotary, temb)
                if index in refiner:
                    x = x + refiner[index] * scale
        # 3. the joint stage: control and caption tokens beside image and caption tokens
        joint = concatenate([x, stream.caption], axis=1)
        c = concatenate([c, stream.caption], axis=1)
        _, residuals = _run(self.control_layers, c, joint, stream.joint_rotary, temb)
        return {int(p): r * scale for p, r in zip(cfg["control_layers_places"], residuals)}
