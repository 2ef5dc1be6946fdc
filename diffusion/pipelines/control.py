"""Guidance by control images: ControlNet and T2I-Adapter units, as the WebUI's ControlNet
extension and diffusers' ControlNet / Adapter pipelines apply them to the UNet.

    units = [ControlUnit(controlnet, edges, weight=0.8, guidance_end=0.6),
             ControlUnit(adapter, sketch, control_mode="My prompt is more important")]
    control = Control(units, total_steps=steps)
    unet = GuidedUNet(unet_step, contexts, dtype=dtype, control=control)

For each UNet call `Control` runs the units active at that step (guidance start/end as
fractions of the steps), scales their residuals (weight, control mode) and sums them into the
UNet's extra inputs (`UNet2DConditionModel.forward`'s down/mid/intra-block residuals), which
travel into the captured UNet step as device tensors. A ControlNet runs once per UNet call
(captured: recorded on its first call, replayed after); a T2I-Adapter once per generation.

Control modes (the extension's `control_mode`):
- "Balanced": every residual times the weight, on the conditional and unconditional rows.
- "My prompt is more important": the soft weights weight * 0.825 ** (12 - i) (T2I-Adapter:
  weight * (0.25, 0.62, 0.825, 1)), on both.
- "ControlNet is more important": the soft weights on the conditional rows only (the
  unconditional rows run without control, so guidance pushes towards it).
diffusers' `guess_mode=True` is the last with diffusers' own scales (`guess_mode=True` here).

IP-Adapter units (diffusion.pipelines.ip_adapter.IPAdapterUnit) may be among the units: their
image tokens go to the UNet as `ip_hidden_states`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from gpustd import Tensor, asarray
from gpustd.capture import Captured, capture
from gpustd.shape import concatenate, take_slice

from ..models.controlnet import ControlNetModel, soft_injection_scales
from ..models.flux_controlnet import FluxControlNetModel
from ..models.qwen_image_controlnet import QwenImageControlNetModel
from ..models.sd3_controlnet import SD3ControlNetModel
from ..models.t2i_adapter import T2IAdapter
from ..models.z_image_controlnet import ZImageControlNetModel
from ..preprocessors.resize import fit_map, resize_mode
from .colorfix import ColorFix
from .ip_adapter import ImagePrompts, IPAdapterUnit

__all__ = ["CONTROL_MODES", "HR_OPTIONS", "Control", "ControlUnit", "check_base", "control_batch"]

CONTROL_MODES = ("Balanced", "My prompt is more important", "ControlNet is more important")
# which passes of a hires fix a unit guides (the extension's hr_option)
HR_OPTIONS = ("Both", "Low res only", "High res only")
_T2I_SOFT = (0.25, 0.62, 0.825, 1.0)


@dataclass
class ControlUnit:
    """One control: a ControlNet or T2I-Adapter, its control image, and how it is applied.

    image: the control map, uint8 (H, W, 3) or float (H, W, 3) / (B, 3, H, W) in [0, 1] (B:
    1, or one map per image of the batch, which every row of that image gets, an AND part's
    too); a uint8 map of another size than a pass's picture is fitted to it by `resize_mode`
    (the extension's, diffusion.preprocessors.resize.fit_map: each pass of a hires fix gets
    the map at its own size). guidance_start / guidance_end: the fractions of the steps
    between which it acts. `schedule`: whose rule decides which steps those are ("webui": the
    extension's step / steps in [start, end]; "diffusers": its pipelines' `controlnet_keep`).
    `hr_option`: the hires fix passes it guides. `label`: the unit as the infotext writes it
    ("Module: canny, Model: ..., ..."; diffusion.pipelines.control_spec), None for a unit built
    in Python. `union_mode`: a Union ControlNet's control type (FLUX's InstantX / Shakker
    Union: 0 canny, 1 tile, 2 depth, 3 blur, 4 pose, 5 gray, 6 low quality; SDXL's xinsir
    Union: 0 openpose, 1 depth, 2 soft edge, 3 canny / lineart, 4 normal, 5 segment, ProMax
    also 6 tile, 7 inpaint), None for the others. `colorfix`: tile_colorfix's sliders (its
    map is the picture, whose latents correct the UNet's noise prediction after every call:
    diffusion.pipelines.colorfix), None for the other modules."""

    model: ControlNetModel | T2IAdapter | FluxControlNetModel | SD3ControlNetModel
    image: Any
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    control_mode: str = "Balanced"
    guess_mode: bool = False
    schedule: str = "webui"
    resize_mode: str = "Crop and Resize"
    hr_option: str = "Both"
    label: str | None = None
    union_mode: int | None = None
    colorfix: ColorFix | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, (ControlNetModel, T2IAdapter, FluxControlNetModel,
                                       SD3ControlNetModel, ZImageControlNetModel,
                                       QwenImageControlNetModel)):
            raise TypeError(f"a control unit's model is a ControlNetModel or T2IAdapter (FLUX, "
                            f"SD3, Z-Image, Qwen-Image: a FluxControlNetModel, "
                            f"SD3ControlNetModel, ZImageControlNetModel, "
                            f"QwenImageControlNetModel), got {type(self.model).__name__}")
        if self.control_mode not in CONTROL_MODES:
            raise ValueError(f"control_mode {self.control_mode!r}: expected one of "
                             f"{', '.join(map(repr, CONTROL_MODES))}")
        self.resize_mode = resize_mode(self.resize_mode)
        if self.hr_option not in HR_OPTIONS:
            raise ValueError(f"hr_option {self.hr_option!r}: expected one of "
                             f"{', '.join(map(repr, HR_OPTIONS))}")
        if self.schedule not in ("webui", "diffusers"):
            raise ValueError(f"schedule {self.schedule!r}: expected 'webui' or 'diffusers'")
        for name in ("weight", "guidance_start", "guidance_end"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"control unit {name} must be a finite number, got "
                                 f"{getattr(self, name)!r}")
        if not 0 <= self.guidance_start <= self.guidance_end <= 1:
            raise ValueError(f"guidance_start {self.guidance_start} and guidance_end "
                             f"{self.guidance_end} must satisfy 0 <= start <= end <= 1")

    def active(self, step: int, total: int) -> bool:
        """Whether the unit acts at step `step` (0-based) of `total`."""
        if self.schedule == "diffusers":
            return not (step / total < self.guidance_start
                        or (step + 1) / total > self.guidance_end)
        return self.guidance_start <= step / total <= self.guidance_end

    @property
    def cond_only(self) -> bool:
        return self.guess_mode or self.control_mode == CONTROL_MODES[2]

    def scales(self, count: int) -> tuple[float, ...] | float:
        """The residuals' scales: one number, or one per residual."""
        if self.guess_mode:
            return float(self.weight)
        if self.control_mode == CONTROL_MODES[0]:
            return float(self.weight)
        if isinstance(self.model, T2IAdapter):
            return tuple(self.weight * s for s in _T2I_SOFT[:count])
        return tuple(soft_injection_scales(count, self.weight))


def check_base(units: Sequence[Any], unet: Any) -> None:
    """ValueError naming the first ControlNet / T2I-Adapter unit made for another base model
    than `unet`'s (an SDXL one on SD 1.5, an SD 1.5 one on SDXL or SD 2): said before the
    first step, not as a shape error inside the first ControlNet or UNet call."""
    base = _base(unet.uses_added_cond, unet.config["cross_attention_dim"])
    for index, unit in enumerate(units):
        model = unit.model
        if isinstance(model, ControlNetModel):
            made = _base(model.uses_added_cond, model.config["cross_attention_dim"])
            fits = made == base
            types = model.config.get("num_control_type", 0)
            if fits and model.union and (unit.union_mode is None
                                           or not 0 <= unit.union_mode < types):
                name = getattr(model, "title", None) or type(model).__name__
                raise ValueError(f"control unit {index} ({name}) is a ControlNet Union: give "
                                 f"its control type, 0 .. {types - 1} (--control-union-mode, "
                                 f"the unit's union_mode); got {unit.union_mode}")
        elif isinstance(model, T2IAdapter):  # its features fit SDXL's UNet or the others'
            made = _base(str(model.config["adapter_type"]).endswith("xl"), None)
            fits = made == _base(unet.uses_added_cond, None)
        elif isinstance(model, _DIT_CONTROLNETS):
            made = _DIT_CONTROLNETS_FOR[type(model)]
            fits = False
        else:
            continue  # an IP-Adapter: checked where it is installed
        if not fits:
            kind = type(model).__name__
            name = getattr(model, "title", None) or kind
            raise ValueError(f"control unit {index} ({name}): the {kind} is made for {made}, "
                             f"but the model is {base}; give one made for this model")


_DIT_CONTROLNETS_FOR: dict[type, str] = {
    FluxControlNetModel: "FLUX.1", SD3ControlNetModel: "SD 3/3.5",
    ZImageControlNetModel: "Z-Image", QwenImageControlNetModel: "Qwen-Image"}
_DIT_CONTROLNETS = tuple(_DIT_CONTROLNETS_FOR)


def _base(sdxl: bool, context: int | None) -> str:
    name = "SDXL" if sdxl else "SD 1.x/2.x"
    return name if context is None else f"{name} (text context {context})"


def _controlnet_call(model: ControlNetModel, x: Tensor, timesteps: Tensor, hidden: Tensor,
                     image: Tensor, text_embeds: Tensor | None, time_ids: Any,
                     scale: Any, guess_mode: bool,
                     union_mode: int | None = None) -> tuple[list[Tensor], Tensor]:
    added = None if text_embeds is None else {
        "text_embeds": text_embeds, "time_ids": np.asarray(time_ids, np.float32)}
    return model(x, timesteps, hidden, image, added, conditioning_scale=scale,
                 guess_mode=guess_mode, union_mode=union_mode)


class Control:
    """The summed residuals of `units` for each UNet call (see the module docstring).
    `total_steps`: the steps the start/end fractions count (the sampler's model calls).
    `size`: the pass's picture (width, height), which the control maps are fitted to;
    `hires_stage`: "first" or "second" pass of a hires fix, whose units pick theirs by
    hr_option (None: no hires fix, every unit acts, as in the extension)."""

    def __init__(self, units: Sequence[ControlUnit | IPAdapterUnit], *, total_steps: int,
                 size: tuple[int, int] | None = None, hires_stage: str | None = None) -> None:
        skip = {"first": HR_OPTIONS[2], "second": HR_OPTIONS[1]}.get(hires_stage or "")
        units = [unit for unit in units if unit.hr_option != skip]
        self.units = [u for u in units if not isinstance(u, IPAdapterUnit)]
        self.size = size
        self.total_steps = max(1, int(total_steps))
        self.image_prompts = ImagePrompts([u for u in units if isinstance(u, IPAdapterUnit)],
                                          total_steps=self.total_steps)
        self._captures: dict[int, Captured] = {}
        self._images: dict[tuple[int, bytes], Tensor] = {}
        self._features: dict[tuple[int, bytes, tuple[int, int]], list[Tensor]] = {}
        self._zeros: dict[tuple[Any, ...], Tensor] = {}

    def residuals(self, x: Tensor, timesteps: Tensor, hidden: Tensor, step: int, *,
                  uncond_rows: int = 0, images: np.ndarray | None = None,
                  text_embeds: Tensor | None = None,
                  time_ids: Any = None) -> dict[str, list[Tensor] | Tensor] | None:
        """The UNet's extra keyword inputs for a call on x (B, C, h, w) whose first
        `uncond_rows` rows are unconditional; None when no unit acts at `step`. `images`:
        the image of the batch each row is (a unit with one map per image gives each row
        its image's); None: 0, 1, ... in the uncond rows and again in the others."""
        down: list[Tensor] | None = None
        mid: Tensor | None = None
        intra: list[Tensor] | None = None
        batch = x.shape[0]
        if images is None:
            images = np.concatenate([np.arange(uncond_rows), np.arange(batch - uncond_rows)])
        for index, unit in enumerate(self.units):
            if not unit.active(step, self.total_steps):
                continue
            rows = (uncond_rows, batch) if unit.cond_only else (0, batch)
            if rows[0] >= rows[1]:
                continue
            if isinstance(unit.model, T2IAdapter):
                feats = self._adapter_residuals(index, unit, images, rows)
                intra = feats if intra is None else [a + b for a, b in zip(intra, feats)]
                continue
            model = unit.model
            assert isinstance(model, ControlNetModel)  # check_base refused the DiTs' ones
            part = _rows(x, rows)
            run = self._captures.setdefault(
                index, capture(functools.partial(_controlnet_call, model),
                               copy_outputs=True, max_signatures=2))
            image = self._image(index, unit, images[rows[0]:rows[1]], x)
            count = len(model.controlnet_down_blocks) + 1
            got_down, got_mid = run(part, _rows(timesteps, rows), _rows(hidden, rows), image,
                                    None if text_embeds is None else _rows(text_embeds, rows),
                                    None if time_ids is None else tuple(time_ids[rows[0]:]),
                                    unit.scales(count), unit.guess_mode,
                                    unit.union_mode if model.union else None)
            got_down = [self._only_rows(d, rows, batch) for d in got_down]
            got_mid = self._only_rows(got_mid, rows, batch)
            down = got_down if down is None else [a + b for a, b in zip(down, got_down)]
            mid = got_mid if mid is None else mid + got_mid
        out: dict[str, list[Tensor] | Tensor] = {}
        if down is not None and mid is not None:
            out["down_block_additional_residuals"] = down
            out["mid_block_additional_residual"] = mid
        if intra is not None:
            out["down_intrablock_additional_residuals"] = intra
        if self.image_prompts:
            out["ip_hidden_states"] = self.image_prompts.states(x, step,
                                                                uncond_rows=uncond_rows)
        return out or None

    def _image(self, index: int, unit: ControlUnit, images: np.ndarray, like: Tensor) -> Tensor:
        key = (index, images.tobytes())
        if key not in self._images:
            self._images[key] = asarray(control_batch(self._fitted(unit), images),
                                        device=like.device)
        return self._images[key]

    def _fitted(self, unit: ControlUnit) -> Any:
        """The unit's map at this pass's size (a uint8 picture of another size fitted by its
        resize mode)."""
        image = unit.image
        if self.size is None or not (isinstance(image, np.ndarray) and image.dtype == np.uint8
                                     and image.ndim == 3):
            return image
        width, height = self.size
        return fit_map(image, width, height, unit.resize_mode)

    def _adapter_residuals(self, index: int, unit: ControlUnit, images: np.ndarray,
                           rows: tuple[int, int]) -> list[Tensor]:
        """The adapter's scaled features for rows of `images`: the same at every step, so run
        once a generation."""
        key = (index, images.tobytes(), rows)
        if key not in self._features:
            model = unit.model
            assert isinstance(model, T2IAdapter)  # residuals() sends only adapter units here
            device = model.adapter.body[0].resnets[0].block1.weight.device
            image = control_batch(self._fitted(unit), images)
            if model.config["in_channels"] == 1:  # canny / sketch adapters: the map's first
                image = np.ascontiguousarray(image[:, :1])  # channel, as the extension gives
            feats = model(asarray(image, device=device))
            scales = unit.scales(len(feats))
            each = scales if isinstance(scales, tuple) else (scales,) * len(feats)
            self._features[key] = [self._only_rows(f * s, rows) for f, s in zip(feats, each)]
        return self._features[key]

    def _only_rows(self, t: Tensor, rows: tuple[int, int], batch: int | None = None) -> Tensor:
        """t's rows outside `rows` set to 0 (t covers the whole batch, or with `batch` only
        `rows`, zeros joined in front)."""
        start, stop = rows
        if batch is not None:
            if start == 0:
                return t
            key = (start, *t.shape[1:], t.dtype.str)
            if key not in self._zeros:  # uploaded once, not every step
                self._zeros[key] = asarray(np.zeros((start, *t.shape[1:]), t.dtype),
                                           device=t.device)
            return concatenate([self._zeros[key], t])
        if start == 0 and stop == t.shape[0]:
            return t
        mask = np.zeros((t.shape[0],) + (1,) * (t.ndim - 1), t.dtype)
        mask[start:stop] = 1
        return t * asarray(mask, device=t.device)


def _rows(t: Tensor, rows: tuple[int, int]) -> Tensor:
    start, stop = rows
    return t if (start, stop) == (0, t.shape[0]) else take_slice(t, start, stop, axis=0)


def control_batch(image: Any, images: np.ndarray) -> np.ndarray:
    """The control image as float32 (rows, 3, H, W) in [0, 1], row k the map of the batch's
    image images[k] (one map: every row's); an inpaint map (H, W, 4), its mask in alpha, as
    the extension's inpaint protocol gives it to the ControlNet: the picture where the mask
    is below one half, -1 where it is above."""
    array = np.asarray(image)
    if array.dtype == np.uint8:
        array = array.astype(np.float32) / 255.0
    if array.ndim == 3 and array.shape[2] == 4:
        masked = (array[:, :, 3:] > 0.5).astype(np.float32)
        array = array[:, :, :3] * (1 - masked) - masked
    if array.ndim == 3:
        array = array.transpose(2, 0, 1)[None]
    if array.ndim != 4 or array.shape[1] != 3 or not np.isfinite(array).all():
        raise ValueError(f"a control image is (H, W, 3) uint8 or float in [0, 1], (H, W, 4) "
                         f"with the inpaint mask in alpha, or (B, 3, H, W); got {array.dtype} "
                         f"{array.shape}")
    count = int(images.max()) + 1
    if array.shape[0] not in (1, count):
        raise ValueError(f"the control image batch holds {array.shape[0]} maps for a batch of "
                         f"{count} images; give one map (every image's) or {count}, one per "
                         "image")
    return np.ascontiguousarray(array[images if len(array) > 1 else np.zeros_like(images)],
                                np.float32)
