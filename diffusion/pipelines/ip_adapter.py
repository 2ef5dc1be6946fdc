"""Prompting with a picture: IP-Adapter units, as diffusers' `load_ip_adapter` pipelines and the
ControlNet extension's / Forge's ip-adapter modules apply them.

    adapter = load_ip_adapter("ip-adapter_sd15.safetensors", image_encoder="image_encoder/")
    pipe.txt2img("a cat", control=[IPAdapterUnit(adapter, picture, weight=0.6)])

An IPAdapterUnit travels in `GenerationRequest.control` beside ControlNet units. For a
generation `use_ip_adapters` installs the units' key/value projections in the UNet's
cross-attention layers (diffusion.models.ip_adapter.install) and `ImagePrompts` gives every
UNet call its image tokens (`ip_hidden_states`): the picture's on the conditional rows, the
unconditional ones' from a zero image embedding (plain adapters) or the encoder's states of a
zero picture (plus adapters), as diffusers' `prepare_ip_adapter_image_embeds` does. Outside
its guidance start/end a unit's tokens are zeros, which add nothing (its projections have no
bias), so the UNet's capture keeps one signature.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpustd import Tensor, asarray, concatenate, take_slice

from ..models.clip_vision import CLIPVisionModelWithProjection, clip_pixels
from ..models.ip_adapter import IPAdapter, install
from ..preprocessors.ip_adapter_modules import encoder_width

__all__ = ["IPAdapterUnit", "ImagePrompts", "use_ip_adapters"]


@dataclass
class IPAdapterUnit:
    """One IP-Adapter: the adapter, its picture, and its `weight` (diffusers'
    `set_ip_adapter_scale`). `image_encoder`: the CLIP image encoder (None: the one
    `load_ip_adapter` attached to the adapter). guidance_start / guidance_end and `schedule`
    as a ControlUnit's (diffusion.pipelines.control)."""

    model: IPAdapter
    image: Any
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    image_encoder: CLIPVisionModelWithProjection | None = None
    schedule: str = "webui"
    hr_option: str = "Both"  # the hires fix passes it guides (control.HR_OPTIONS)
    label: str | None = None  # its infotext text when made from a ControlSpec (the server's)

    def __post_init__(self) -> None:
        if not isinstance(self.model, IPAdapter):
            raise TypeError(f"an IP-Adapter unit's model is an IPAdapter "
                            f"(diffusion.loaders.control.ip_adapter_file.load_ip_adapter), got "
                            f"{type(self.model).__name__}")
        if self.encoder is None:
            raise ValueError(f"IP-Adapter {self.model.name} has no image encoder: give "
                             "image_encoder= (the CLIP vision model's folder or file, "
                             "--image-encoder on the command line)")
        gives = int(self.encoder.config["hidden_size" if self.model.plus else "projection_dim"])
        if gives != self.model.embed_dim:
            wanted = self.model.encoder_name or f"one giving {self.model.embed_dim}-wide output"
            raise ValueError(f"IP-Adapter {self.model.name} reads {self.model.embed_dim}-wide "
                             f"{'hidden states' if self.model.plus else 'image embeddings'}; "
                             f"this image encoder gives {gives}: use {wanted} (h94's "
                             "models/image_encoder is ViT-H/14, sdxl_models/image_encoder "
                             "ViT-bigG/14)")
        for name in ("weight", "guidance_start", "guidance_end"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"IP-Adapter unit {name} must be a finite number, got "
                                 f"{getattr(self, name)!r}")
        if not 0 <= self.guidance_start <= self.guidance_end <= 1:
            raise ValueError(f"guidance_start {self.guidance_start} and guidance_end "
                             f"{self.guidance_end} must satisfy 0 <= start <= end <= 1")
        if self.schedule not in ("webui", "diffusers"):
            raise ValueError(f"schedule {self.schedule!r}: expected 'webui' or 'diffusers'")

    @property
    def encoder(self) -> CLIPVisionModelWithProjection | None:
        return self.image_encoder or getattr(self.model, "image_encoder", None)

    def active(self, step: int, total: int) -> bool:
        """Whether the unit acts at step `step` (0-based) of `total` (ControlUnit.active)."""
        if self.schedule == "diffusers":
            return not (step / total < self.guidance_start
                        or (step + 1) / total > self.guidance_end)
        return self.guidance_start <= step / total <= self.guidance_end

    def infotext(self) -> str:
        """The unit as the ControlNet extension writes it into the infotext (after
        `ControlNet N: `, quoted): its IP-Adapter module by the encoder's width (clip_h:
        ViT-H, clip_g: ViT-bigG), the model's file name, the weight and the steps it acts on;
        the rest as the extension writes it for an IP-Adapter unit. A unit made from the
        extension's unit (ControlSpec.unit) writes that unit's module and model title."""
        if self.label is not None:
            return self.label
        encoder = self.encoder
        width = int(encoder.config["hidden_size"]) if encoder is not None else 1280
        module = "ip-adapter_clip_g" if width == encoder_width("ip-adapter_clip_g") else (
            "ip-adapter_clip_h")
        title = getattr(self.model, "title", None) or self.model.name  # "name [hash]" if known
        fields = {"Module": module, "Model": title, "Weight": str(float(self.weight)),
                  "Resize Mode": "Crop and Resize", "Processor Res": "512",
                  "Threshold A": "0.5", "Threshold B": "0.5",
                  "Guidance Start": str(float(self.guidance_start)),
                  "Guidance End": str(float(self.guidance_end)), "Pixel Perfect": "False",
                  "Control Mode": "Balanced"}
        return ", ".join(f"{key}: {value}" for key, value in fields.items())

    def tokens(self, dtype: Any) -> tuple[Tensor, Tensor]:
        """(unconditional, conditional) image tokens (1, n, D) in `dtype`."""
        encoder = self.encoder
        assert encoder is not None
        pixels = clip_pixels(self.image, encoder.image_size, device=encoder.device)
        both = np.concatenate([np.zeros_like(pixels), pixels])
        if self.model.plus:
            embeds = encoder.hidden_states(asarray(both, device=encoder.device), -2)
        else:
            embeds = encoder(asarray(pixels, device=encoder.device))
            embeds = concatenate([asarray(np.zeros(embeds.shape, embeds.dtype),
                                          device=embeds.device), embeds])
        proj_dtype = self.model.dtype
        if embeds.dtype != proj_dtype:
            embeds = embeds.astype(proj_dtype)
        tokens = self.model.image_proj(embeds)
        if tokens.dtype != np.dtype(dtype):
            tokens = tokens.astype(dtype)
        return take_slice(tokens, 0, 1), take_slice(tokens, 1, 2)


class ImagePrompts:
    """The `ip_hidden_states` of each UNet call for `units` (one (B, n, D) Tensor a unit)."""

    def __init__(self, units: Sequence[IPAdapterUnit], *, total_steps: int) -> None:
        self.units = list(units)
        self.total_steps = max(1, int(total_steps))
        self._tokens: dict[int, tuple[Tensor, Tensor]] = {}
        self._rows: dict[tuple[int, int, int, bool], Tensor] = {}

    def __bool__(self) -> bool:
        return bool(self.units)

    def states(self, like: Tensor, step: int, *, uncond_rows: int = 0) -> list[Tensor]:
        """The tokens for a UNet call on `like` (B, C, h, w) whose first `uncond_rows` rows
        are unconditional, at `step`."""
        batch = like.shape[0]
        out = []
        for index, unit in enumerate(self.units):
            active = unit.active(step, self.total_steps)
            key = (index, batch, uncond_rows, active)
            if key not in self._rows:
                if index not in self._tokens:
                    self._tokens[index] = unit.tokens(like.dtype)
                uncond, cond = self._tokens[index]
                if active:
                    rows = [uncond] * uncond_rows + [cond] * (batch - uncond_rows)
                    self._rows[key] = concatenate(rows) if len(rows) > 1 else rows[0]
                else:
                    self._rows[key] = asarray(np.zeros((batch, *cond.shape[1:]), cond.dtype),
                                              device=cond.device)
            out.append(self._rows[key])
        return out


def use_ip_adapters(unet: Any, units: Sequence[Any]) -> None:
    """Install the IP-Adapters of `units` (the request's control units; others are left to
    diffusion.pipelines.control) in `unet`, removing any others: call before the UNet's
    capture is checked (diffusion.pipelines.sd.capture.ModelCapture.of)."""
    install(unet, [(u.model, u.weight) for u in units if isinstance(u, IPAdapterUnit)])
