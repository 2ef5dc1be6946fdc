"""The ControlNet extension's reference units on the UNet models (SD 1.x / 2.x, SDXL): no
control model; the unit's picture steers the UNet, as the extension's scripts/hook.py does it:
reference_only its self-attention (diffusion.models.reference_attention), reference_adain
its blocks' output statistics (diffusion.models.reference_adain), reference_adain+attn both.

    unit = ReferenceUnit(picture, weight=1.0, style_fidelity=0.5)
    injection = ReferenceInjection([unit], unet, total_steps=20, size=(512, 512),
                                   encode=latents_of, alphas_cumprod=abar)
    out = injection.run(call, x, t, step=3, uncond_rows=1)   # call(sample, control) -> Tensor

At every UNet call of a step where a unit acts, the picture's latents (fitted to the pass's
size by the unit's resize mode, through the VAE: its posterior mean, scaled) noised to the
call's timestep run through the UNet first (without ControlNet residuals) and leave their
self-attention inputs, or their blocks' means and variances, in the banks; then the call
itself attends to them, or is renormalized to them. As in hook.py, a unit's pass saves
only what its module takes and reads the rest: with units of different modules, a later
unit's pass consumes what an earlier one saved for the other machine. The noise is a
fixed draw per step (the extension's is unseeded: `torch.randn_like`), so a seed gives one
picture. The style fidelity is the unit's for "Balanced" (cubed on SDXL, whose attention
hook.py finds unstable), 1 for "ControlNet is more important", 0 for "My prompt is more
important", as the extension sets it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np

from gpustd import Tensor, asarray

from ..models.reference_adain import ReferenceAdaIN
from ..models.reference_attention import ReferenceAttention, noised_reference
from ..preprocessors.resize import fit_map
from ..sampling.model_sampling import make_betas
from .control import CONTROL_MODES, HR_OPTIONS

__all__ = ["POSTERIOR_MEAN", "REFERENCE_MODULES", "ReferenceInjection", "ReferenceUnit",
           "split_references"]

REFERENCE_MODULES = ("reference_only", "reference_adain", "reference_adain+attn")
_ATTENTION = ("reference_only", "reference_adain+attn")  # the modules hook.py gives each machine
_ADAIN = ("reference_adain", "reference_adain+attn")


@dataclass
class ReferenceUnit:
    """A reference unit: `image` the reference picture (uint8 HxWx3); `module` one of
    REFERENCE_MODULES; `weight` how many self-attention layers (and reference_adain's
    blocks) take it (those ranked below it: 1 all attention layers, 0.5 the wider half);
    guidance_start / guidance_end the fractions of the steps between which it acts (the
    extension's rule); `style_fidelity` (0..1, the unit's threshold_a) how much of the plain
    self-attention (or block output) the unconditional rows keep; `label` the infotext
    text."""

    image: Any
    weight: float = 1.0
    guidance_start: float = 0.0
    guidance_end: float = 1.0
    style_fidelity: float = 0.5
    control_mode: str = "Balanced"
    resize_mode: str = "Crop and Resize"
    hr_option: str = "Both"
    label: str | None = None
    module: str = "reference_only"

    def __post_init__(self) -> None:
        if self.module not in REFERENCE_MODULES:
            raise ValueError(f"module {self.module!r}: a reference unit's is one of "
                             f"{', '.join(REFERENCE_MODULES)}")
        image = np.asarray(self.image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"a {self.module} unit's picture must be uint8 HxWx3, got "
                             f"{image.dtype} {image.shape}")
        if self.control_mode not in CONTROL_MODES:
            raise ValueError(f"control_mode {self.control_mode!r}: expected one of "
                             f"{', '.join(map(repr, CONTROL_MODES))}")
        if self.hr_option not in HR_OPTIONS:
            raise ValueError(f"hr_option {self.hr_option!r}: expected one of "
                             f"{', '.join(map(repr, HR_OPTIONS))}")

    def active(self, step: int, total: int) -> bool:
        """Whether the unit acts at step `step` (0-based) of `total`."""
        return self.guidance_start <= step / total <= self.guidance_end

    @property
    def fidelity(self) -> float:
        if self.control_mode == CONTROL_MODES[2]:  # ControlNet is more important
            return 1.0
        if self.control_mode == CONTROL_MODES[1]:  # My prompt is more important
            return 0.0
        return min(1.0, max(0.0, float(self.style_fidelity)))


class ReferenceInjection:
    """The reference units of a pass on `unet`. `encode`: pixels (1, 3, H, W) in
    [-1, 1] -> the UNet's latents (the VAE's posterior mean, scaled); `alphas_cumprod`: the
    model's; `size`: the pass's (width, height); `sdxl`: the UNet is SDXL's (base or
    refiner)."""

    def __init__(self, units: Sequence[ReferenceUnit], unet: Any, *, total_steps: int,
                 size: tuple[int, int], encode: Callable[[np.ndarray], np.ndarray],
                 alphas_cumprod: np.ndarray, sdxl: bool = False) -> None:
        self.sdxl = sdxl
        self.units = list(units)
        self.total_steps = max(1, int(total_steps))
        self.size = size
        self.encode = encode
        self.alphas_cumprod = np.asarray(alphas_cumprod, np.float64)
        self.unet = unet
        modules = {unit.module for unit in self.units}
        self.attention = ReferenceAttention(unet) if modules & set(_ATTENTION) else None
        self.adain = ReferenceAdaIN(unet) if modules & set(_ADAIN) else None
        self._latents: dict[int, np.ndarray] = {}

    def fidelity(self, unit: ReferenceUnit) -> float:
        """The style fidelity `unit` acts with: hook.py cubes it on SDXL (0.5 -> 0.125)."""
        return unit.fidelity ** 3 if self.sdxl else unit.fidelity

    def acts(self, step: int) -> bool:
        return any(unit.active(step, self.total_steps) for unit in self.units)

    def run(self, call: Callable[[Tensor, bool], Tensor], x: Tensor, t: float, *,
            step: int, uncond_rows: int) -> Tensor:
        """The UNet's output for x (B, C, h, w) at timestep t with the units active at
        `step` injected: `call(sample, control)` runs the UNet on `sample` (with the pass's
        ControlNet residuals where `control`)."""
        active = [(index, unit) for index, unit in enumerate(self.units)
                  if unit.active(step, self.total_steps)]
        if not active:
            return call(x, True)
        noise = np.random.default_rng(step).standard_normal((x.shape[0], *x.shape[1:]))
        machines = [machine for machine in (self.attention, self.adain) if machine is not None]
        with ExitStack() as stack:
            for machine in machines:
                stack.enter_context(machine.installed())
                machine.uncond_rows = uncond_rows  # a pass that reads, reads the call's rows
            for index, unit in active:
                latents = np.broadcast_to(self._latent(index, unit), tuple(x.shape))
                sample = asarray(noised_reference(latents, t, self.alphas_cumprod, noise)
                                 .astype(x.dtype), device=x.device)
                run: Callable[[], Tensor] = partial(call, sample, False)
                writers = ((self.adain, _ADAIN), (self.attention, _ATTENTION))
                for writer, modules in writers:
                    if writer is not None and unit.module in modules:
                        run = partial(writer.write, run, weight=unit.weight,
                                      style_fidelity=self.fidelity(unit))
                run()
            run = partial(call, x, True)
            for machine in machines:
                run = partial(machine.read, run, uncond_rows=uncond_rows)
            return run()

    def _latent(self, index: int, unit: ReferenceUnit) -> np.ndarray:
        if index not in self._latents:
            width, height = self.size
            picture = fit_map(np.asarray(unit.image), width, height, unit.resize_mode)
            pixels = picture.astype(np.float32).transpose(2, 0, 1)[None] / 255.0 * 2 - 1
            self._latents[index] = np.asarray(self.encode(pixels), np.float32)
        return self._latents[index]


class _PosteriorMean:
    """A generator whose draws are zeros: a VAE posterior 'sample' that is its mean."""

    @staticmethod
    def standard_normal(shape: Any) -> np.ndarray:
        return np.zeros(shape)


POSTERIOR_MEAN: Any = _PosteriorMean()  # where a pipeline's encoder takes a generator


def split_references(units: Sequence[Any], unet: Any, *, total_steps: int,
                     size: tuple[int, int], encode: Callable[[np.ndarray], np.ndarray],
                     scheduler_config: Mapping[str, Any], low_vram: bool = False,
                     hires_stage: str | None = None, sdxl: bool = False
                     ) -> tuple[ReferenceInjection | None, tuple[Any, ...]]:
    """(the injection of the reference units among `units`, None when there are none;
    the other units). `low_vram`: the pass runs in a memory mode, which they do not support
    (ValueError in one line). `hires_stage`: "first" or "second" pass of a hires fix, whose
    units pick theirs by hr_option; in the second the style fidelity is 0, as the
    extension's hook.py has it there."""
    skip = {"first": HR_OPTIONS[2], "second": HR_OPTIONS[1]}.get(hires_stage or "")
    references = [replace(unit, control_mode=CONTROL_MODES[1])
                  if hires_stage == "second" else unit
                  for unit in units if isinstance(unit, ReferenceUnit) and unit.hr_option != skip]
    others = tuple(unit for unit in units if not isinstance(unit, ReferenceUnit))
    if not references:
        return None, others
    if low_vram:
        raise ValueError(f"{references[0].module} units do not run in the --medvram / "
                         "--lowvram modes yet; leave them out or run without the memory mode")
    abar = np.cumprod(1.0 - make_betas(scheduler_config).astype(np.float32), dtype=np.float32)
    return ReferenceInjection(references, unet, total_steps=total_steps, size=size,
                              encode=encode, alphas_cumprod=abar, sdxl=sdxl), others
