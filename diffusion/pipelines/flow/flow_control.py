"""ControlNet units on the flow-matching transformers, as diffusers' FluxControlNetPipeline
and StableDiffusion3ControlNetPipeline run them (several units: as their Multi ControlNet
models, the residuals summed); Z-Image's and Qwen-Image's as below.

    control = FlowControl(units, total_steps=steps, family="flux-dev")
    control.encode(vae, batch=1, width=512, height=512, generator=generator, pack=pack_latents)
    residuals = control.residuals(x, states, pooled, timestep, img_ids=ids, guidance_scale=3.5)
    out = transformer(x, ..., control=residuals)     # SD3: control.sd3_residuals(...)

Each unit's map is fitted to the picture (its resize mode), put in [-1, 1] and encoded by
the pipeline's VAE into the transformer's latent space (a posterior draw from the run's
generator, before its noise, as diffusers' FLUX pipeline draws it; the posterior's mean where
no generator is given: the WebUI samplers, and SD3, whose diffusers pipeline draws it from
torch's global generator, not the seed's), packed as the latents are (FLUX). At every
transformer call the units active at the current step run on the call's latents and text,
and their residuals, each times its weight, are summed. The step is the count of timesteps
seen before the call's (the flow samplers call the model once a step; a second call at the
same timestep, another guidance branch, is the same step).

Z-Image's ControlNets (alibaba-pai's Fun Union) take the map's latents, zero-padded to their
input channels, and give residuals for each picture's streams inside the transformer's call
(`block_hints`), as diffusers' ZImageControlNetPipeline runs them (the map at the posterior's
mean; with CFG the negative rows take the same map).

Qwen-Image's (InstantX's Union) take the map's latents through the Qwen-Image VAE (the
pipeline's `latents_of`: a draw from the run's generator before its noise, as diffusers'
QwenImageControlNetPipeline draws it), packed as the latents are; their residuals, computed
once a step from the prompt's pass, serve the negative prompt's pass too, as there
(`qwen_residuals`).

XLabs' FLUX ControlNets (an input hint block: `FluxControlNetModel.takes_pixels`) take the
map itself, fitted to 16 pixels per image token (the picture's size with FLUX's VAE) and put
in [-1, 1], as x-flux gives it; their residuals repeat over the transformer's double blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from gpustd import Tensor, asarray, concatenate, take_slice

from ...models.flux_controlnet import FluxControlNetModel
from ...models.qwen_image_controlnet import QwenImageControlNetModel
from ...models.sd3_controlnet import SD3ControlNetModel
from ...models.tiled_vae import vae_encode
from ...models.vae import AutoencoderKL
from ...models.z_image import ZImageStream
from ...models.z_image_controlnet import ZImageControlNetModel
from ...preprocessors.resize import fit_map
from ..control import CONTROL_MODES, ControlUnit, control_batch
from ..finite import check_encoded
from ..reference import ReferenceUnit

__all__ = ["DIT_CONTROLNETS", "FlowControl", "encode_map"]

# the control model class each family's transformer takes
_MODELS: dict[str, tuple[type, str]] = {
    "flux-dev": (FluxControlNetModel, "FLUX.1"), "flux-schnell": (FluxControlNetModel, "FLUX.1"),
    "sd3": (SD3ControlNetModel, "SD 3/3.5"), "z-image": (ZImageControlNetModel, "Z-Image"),
    "qwen-image": (QwenImageControlNetModel, "Qwen-Image"),
}
DIT_CONTROLNETS = tuple(dict.fromkeys(kind for kind, _ in _MODELS.values()))
"""The ControlNet classes of the flow families."""


def encode_map(vae: Any, image: Any, *, batch: int, width: int, height: int,
               resize_mode: str = "Crop and Resize", generator: Any = None,
               shifted: bool = True,
               latents_of: Callable[[np.ndarray, Any], np.ndarray] | None = None
               ) -> np.ndarray:
    """A control map as float32 latents (batch, C, height/8, width/8) in the transformer's
    space: a uint8 picture fitted to width x height by `resize_mode`, put in [-1, 1], encoded
    by `vae` (a posterior draw from `generator`, its mean where None), shifted (unless not
    `shifted`) and scaled. diffusers: `retrieve_latents(vae.encode(image), generator)`, then
    `(latents - shift_factor) * scaling_factor`. `latents_of(pixels, generator)`: the
    pipeline's own encoding in place of `vae`'s (Qwen-Image's VAE and normalization)."""
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3:
        image = fit_map(image, width, height, resize_mode)
    pixels = control_batch(image, np.arange(batch)) * 2 - 1
    if pixels.shape[2:] != (height, width):
        raise ValueError(f"a control image of {pixels.shape[3]}x{pixels.shape[2]} for "
                         f"a {width}x{height} picture: give a uint8 picture (fitted by "
                         "its resize mode) or one of the picture's size")
    if latents_of is not None:
        return latents_of(pixels.astype(np.float32), generator).astype(np.float32)
    mean, logvar = vae_encode(vae, pixels)
    check_encoded(mean, vae)
    latent = mean.astype(np.float64) if generator is None else AutoencoderKL.sample(
        mean.astype(np.float64), logvar.astype(np.float64),
        generator.standard_normal(mean.shape))
    shift = vae.shift_factor if shifted else 0.0
    return ((latent - shift) * vae.scaling_factor).astype(np.float32)


class FlowControl:
    """The ControlNet residuals of `units` (ControlUnits of a FLUX / SD3 / Z-Image / Qwen-Image
    ControlNet) for each transformer call. `total_steps`: the steps the start/end fractions
    count; `rule`: whose rule decides which steps those are ("diffusers": its pipelines'
    `controlnet_keep`, for the "diffusers" sampler; "unit": each unit's `schedule`, the WebUI
    extension's by default). ValueError in one line for a unit this family cannot run."""

    def __init__(self, units: Sequence[Any], *, total_steps: int, family: str,
                 rule: str = "unit") -> None:
        if family not in _MODELS:
            raise ValueError(f"ControlNet units: not supported for {family} models yet; leave "
                             "them out")
        kind, name = _MODELS[family]
        for index, unit in enumerate(units):
            if isinstance(unit, ReferenceUnit):
                raise ValueError(f"control unit {index}: {unit.module} runs on the UNet models "
                                 f"(SD 1.x/2.x, SDXL), not on {name}; leave it out")
            title = getattr(getattr(unit, "model", None), "title", None)
            what = f"control unit {index}" + (f" ({title})" if title else "")
            if not isinstance(unit, ControlUnit) or not isinstance(unit.model, kind):
                got = type(getattr(unit, "model", unit)).__name__
                raise ValueError(f"{what}: {name} models take a {kind.__name__}, not a {got}; "
                                 f"give a ControlNet made for {name}")
            if unit.control_mode != CONTROL_MODES[0] or unit.guess_mode:
                raise ValueError(f"{what}: control mode {unit.control_mode!r} is for UNet "
                                 f"models; {name} ControlNets run 'Balanced' (their weight)")
            if isinstance(unit.model, QwenImageControlNetModel) and unit.model.config[
                    "extra_condition_channels"]:
                raise ValueError(f"{what}: an inpainting Qwen-Image ControlNet (extra condition "
                                 "channels) is not supported yet; give a Union or single one")
            if unit.colorfix is not None:
                raise ValueError(f"{what}: tile_colorfix runs on the UNet models (SD 1.x/2.x, "
                                 f"SDXL), not on {name}; send module 'none' or tile_resample")
        self.units = list(units)
        self.total_steps = max(1, int(total_steps))
        self.rule = rule
        self.step = -1  # the current step; none yet
        self._timestep: float | None = None
        self._latents: list[Tensor] | None = None
        self._tables: dict[tuple[int, int, tuple[int, ...]], tuple[Tensor, Tensor]] = {}

    @property
    def encoded(self) -> bool:
        return self._latents is not None

    def encode(self, vae: Any, *, batch: int, width: int, height: int, generator: Any,
               pack: Callable[[np.ndarray], np.ndarray], dtype: Any, device: Any,
               latents_of: Callable[[np.ndarray, Any], np.ndarray] | None = None) -> None:
        """Each unit's map as latents of the picture's `batch` rows: fitted to width x height,
        through `vae` (a draw from `generator`, or the mean where it is None), `pack`ed as
        the transformer's input, on `device` in `dtype` (InstantX's SD3 ControlNets,
        `force_zeros_for_pooled_projection`, take them unshifted); `latents_of`: the
        pipeline's encoding of pixels in place of the VAE's (`encode_map`). diffusers:
        `FluxControlNetPipeline.prepare_image` and `retrieve_latents(vae.encode(...))`."""
        self._latents = []
        for unit in self.units:
            if isinstance(unit.model, FluxControlNetModel) and unit.model.takes_pixels:
                self._latents.append(asarray(_pixels(unit, vae, batch, width, height),
                                             dtype=dtype, device=device))
                continue
            latent = encode_map(vae, unit.image, batch=batch, width=width, height=height,
                                resize_mode=unit.resize_mode, generator=generator,
                                shifted=not unit.model.config.get(
                                    "force_zeros_for_pooled_projection"),
                                latents_of=latents_of)
            if isinstance(unit.model, ZImageControlNetModel):  # zeros up to its input
                latent = _zero_padded(latent, unit.model.in_channels)
            self._latents.append(asarray(pack(latent), dtype=dtype, device=device))

    def residuals(self, x: Tensor, states: Tensor, pooled: Tensor, timestep: np.ndarray, *,
                  img_ids: np.ndarray, guidance_scale: float, blocks: int | None = None
                  ) -> tuple[list[Tensor], list[Tensor]] | None:
        """The summed (double, single) residuals of the units active at `step` for a
        transformer call on x (B, Li, C) with text `states`, `pooled` and `timestep` (B,) in
        [0, 1]; None when none acts. `img_ids`: the image patches' positions. A unit's union
        mode reaches Union models only (one mode may be given for several units), as diffusers'
        FluxMultiControlNetModel passes its modes. `blocks`: the transformer's double blocks,
        needed by XLabs' models, whose residuals are then given one per block (as are all
        where the units' residual counts differ)."""
        total: tuple[list[Tensor], list[Tensor]] | None = None
        for unit, latents in self._active_units(timestep):
            model = unit.model
            if latents.shape[0] != x.shape[0]:
                raise ValueError(f"control latents for {latents.shape[0]} rows, the call has "
                                 f"{x.shape[0]}")
            guidance = (np.full(x.shape[0], guidance_scale, np.float32)
                        if model.config["guidance_embeds"] else None)
            double, single = model(x, latents, states, pooled, timestep, guidance,
                                   rotary=self._rotary(model, states.shape[1], img_ids),
                                   mode=unit.union_mode if model.union else None,
                                   conditioning_scale=unit.weight)
            if model.blocks_repeat:
                if blocks is None:
                    raise ValueError("an XLabs FLUX ControlNet's residuals need the "
                                     "transformer's double block count (blocks=)")
                double = [double[i % len(double)] for i in range(blocks)]
            if total is not None and len(total[0]) != len(double) and blocks is not None:
                total = (_spread(total[0], blocks), total[1])
                double = _spread(double, blocks)
            if total is None:
                total = (double, single)
                continue
            if not total[1] or not single:  # XLabs' models have no single-block residuals
                total = (total[0], total[1] or single)
                single = []
            if (len(total[0]), len(total[1] if single else [])) != (len(double), len(single)):
                raise ValueError("these FLUX ControlNets give different numbers of residuals: "
                                 "run them one at a time")
            total = ([a + b for a, b in zip(total[0], double)],
                     [a + b for a, b in zip(total[1], single)] if single else total[1])
        return total

    def sd3_residuals(self, x: Tensor, states: Tensor, pooled: Tensor, timestep: np.ndarray,
                      *, pos_embed: Any) -> list[Tensor] | None:
        """The summed residuals of the units active at `step` for an SD3 transformer call on
        x (B, C, h, w) (with CFG: the unconditional rows, then as many conditional ones, the
        maps the same for both) with text `states`, `pooled` and `timestep` (B,) in
        0..1000; None when none acts. `pos_embed`: the transformer's (Stability's SD 3.5
        ControlNets use it). diffusers: StableDiffusion3ControlNetPipeline's loop."""
        total: list[Tensor] | None = None
        for unit, latents in self._active_units(timestep):
            model = unit.model
            cond = _rows(latents, x.shape[0])
            zeros = model.config["force_zeros_for_pooled_projection"]
            samples = model(x, cond, states if model.joint else None,
                            pooled * np.float32(0) if zeros else pooled, timestep,
                            conditioning_scale=unit.weight, pos_embed=pos_embed)
            total = samples if total is None else [a + b for a, b in zip(total, samples)]
        return total

    def qwen_residuals(self, x: Tensor, states: Tensor, mask: Any, timestep: np.ndarray, *,
                       rotary: tuple[Tensor, Tensor], blocks: int) -> list[Tensor] | None:
        """Qwen-Image: the summed residuals of the units active at `step` for a transformer
        call on packed latents x (B, Li, C) with the prompt's `states` and `mask`, timestep
        (B,) in [0, 1] and the transformer's `rotary` tables; None when none acts. Units
        giving different numbers of residuals are summed one per block of the
        transformer's `blocks` (its spreading rule). diffusers: QwenImageControlNetPipeline's
        `controlnet(...)` (QwenImageMultiControlNetModel's sum for several maps)."""
        total: list[Tensor] | None = None
        for unit, latents in self._active_units(timestep):
            cond = _rows(latents, x.shape[0])
            samples = unit.model(x, cond, states, timestep, rotary, mask,
                                 conditioning_scale=unit.weight)
            if total is not None and len(total) != len(samples):
                total, samples = _spread(total, blocks), _spread(samples, blocks)
            total = samples if total is None else [a + b for a, b in zip(total, samples)]
        return total

    def block_hints(self, timestep: np.ndarray, transformer: Any
                    ) -> Callable[[ZImageStream], dict[int, Tensor]] | None:
        """Z-Image: for a transformer call at `timestep` (B,), what gives each picture's
        streams the summed residuals of the units active at `step` (by joint block); None
        when none acts. Picture i takes map row i modulo the maps' rows (CFG's negative
        rows the positive ones' maps, as ZImageControlNetPipeline repeats them)."""
        active = self._active_units(timestep)
        if not active:
            return None

        def hints(stream: ZImageStream) -> dict[int, Tensor]:
            total: dict[int, Tensor] = {}
            for unit, latents in active:
                row = stream.index % latents.shape[0]
                residuals = unit.model(take_slice(latents, row, row + 1, axis=0), stream,
                                       transformer, conditioning_scale=unit.weight)
                for block, residual in residuals.items():
                    total[block] = total[block] + residual if block in total else residual
            return total

        return hints

    def _active_units(self, timestep: np.ndarray) -> list[tuple[Any, Tensor]]:
        """The units active at the step a call at `timestep` is in (`_advance`), each with
        its encoded map; RuntimeError before `encode`."""
        if self._latents is None:
            raise RuntimeError("FlowControl.encode must run before the first step")
        self._advance(timestep)
        return [(unit, latents) for unit, latents in zip(self.units, self._latents)
                if self._active(unit)]

    def _advance(self, timestep: np.ndarray) -> None:
        """A call at a new timestep starts the next step."""
        t = float(np.asarray(timestep).reshape(-1)[0])
        if t != self._timestep:
            self._timestep, self.step = t, self.step + 1

    def _active(self, unit: ControlUnit) -> bool:
        step, steps = self.step, self.total_steps
        if self.rule == "diffusers":
            return not (step / steps < unit.guidance_start
                        or (step + 1) / steps > unit.guidance_end)
        return unit.active(step, steps)

    def _rotary(self, model: Any, text_length: int, img_ids: np.ndarray) -> tuple[Tensor, Tensor]:
        key = (id(model), text_length, img_ids.shape)
        if key not in self._tables:
            self._tables[key] = model.rotary(text_length, img_ids)
        return self._tables[key]


def _zero_padded(latent: np.ndarray, channels: int) -> np.ndarray:
    """(B, C, h, w) latents with zero channels after them up to `channels` (Z-Image's 2.x
    ControlNets read 33: the inpainting variant's mask and masked picture left empty, as
    ZImageControlNetPipeline leaves them)."""
    extra = channels - latent.shape[1]
    if extra < 0:
        raise ValueError(f"this ControlNet reads {channels} channels, fewer than the VAE's "
                         f"{latent.shape[1]}: it is not made for this model")
    return np.concatenate([latent, np.zeros((latent.shape[0], extra, *latent.shape[2:]),
                                            latent.dtype)], axis=1)


def _rows(latents: Tensor, rows: int) -> Tensor:
    """A map's latents repeated to `rows` rows (CFG's: the negative rows take the positive
    ones' maps)."""
    return latents if latents.shape[0] == rows else concatenate(
        [latents] * (rows // latents.shape[0]))


def _spread(samples: list[Tensor], blocks: int) -> list[Tensor]:
    """One residual per block: block i's of FluxTransformer2DModel's spreading rule
    (samples[i // ceil(blocks / len(samples))]); a list as long already is one."""
    if len(samples) == blocks:
        return samples
    interval = -(-blocks // len(samples))
    return [samples[i // interval] for i in range(blocks)]


def _pixels(unit: ControlUnit, vae: Any, batch: int, width: int, height: int) -> np.ndarray:
    """The unit's map for a model with an input hint block: (batch, 3, 16 h, 16 w) in
    [-1, 1] for the h x w image tokens of a width x height picture (the picture's own size
    with FLUX's 8x VAE), fitted by the unit's resize mode. x-flux: the map resized to the
    picture, `np.array(image) / 127.5 - 1`."""
    factor = 2 ** (len(vae.config["block_out_channels"]) - 1) * 2
    size = (width // factor * 16, height // factor * 16)
    image = unit.image
    if isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3:
        image = fit_map(image, *size, unit.resize_mode)
    pixels = control_batch(image, np.arange(batch)) * 2 - 1
    if pixels.shape[2:] != size[::-1]:
        raise ValueError(f"a control image of {pixels.shape[3]}x{pixels.shape[2]} for an "
                         f"XLabs ControlNet on a {width}x{height} picture: give a uint8 "
                         f"picture (fitted by its resize mode) or one of {size[0]}x{size[1]}")
    return pixels.astype(np.float32)
