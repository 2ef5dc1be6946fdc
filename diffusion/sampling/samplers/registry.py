"""Every sampler by the names users pick it by: the WebUI 1.10 labels, ComfyUI's names, the
WebUI's aliases, and the WebUI's per-sampler options (its `samplers_k_diffusion` table in
`modules/sd_samplers_kdiffusion.py`, plus `sd_samplers_timesteps.py`, `sd_samplers_lcm.py`,
`sd_samplers_extra.py`).

    lookup("dpmpp_2m")           -> the SamplerInfo of "DPM++ 2M"
    resolve("DPM++ 2M Karras")   -> ("DPM++ 2M", "Karras")   (old combined names)

A sampler registers itself in its own module, with its names and WebUI options::

    @register("Euler", "euler", ("k_euler",), extra_params=CHURN_OPTIONS)
    def sample_euler(model, x, sigmas, *, noise=None, callback=None, ...): ...

so adding one is its module plus its import in `diffusion/samplers/__init__.py` (which imports
every sampler module, so `SAMPLERS` is complete once the package is imported).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, TypeVar, overload

from ._common import Sampler
from .schedules import SCHEDULE_LABELS
from .schedules import lookup as schedule_type

__all__ = ["CHURN_OPTIONS", "SAMPLERS", "WEBUI_SAMPLERS", "Registry", "SamplerInfo", "lookup",
           "register", "register_timestep", "resolve"]

WEBUI_SAMPLERS = (
    "DPM++ 2M", "DPM++ SDE", "DPM++ 2M SDE", "DPM++ 2M SDE Heun", "DPM++ 2S a", "DPM++ 3M SDE",
    "Euler a", "Euler", "LMS", "Heun", "DPM2", "DPM2 a", "DPM fast", "DPM adaptive", "Restart",
    "DDIM", "DDIM CFG++", "PLMS", "UniPC", "LCM",
)
"""The WebUI 1.10's sampler list, in its order (k-diffusion's, then the timestep samplers,
then LCM): `SAMPLERS` lists these first, in this order, then the rest as they registered."""

CHURN_OPTIONS = ("s_churn", "s_tmin", "s_tmax", "s_noise")
"""The extra options the WebUI forwards to samplers with Karras et al.'s churn."""


@dataclass(frozen=True)
class SamplerInfo:
    """One sampler: its names, its function (None for "timestep" samplers, which run through
    `diffusion.sampling.schedulers`), and the options the WebUI runs it with."""

    name: str
    """The WebUI's label (or, for samplers only ComfyUI has, a display name)."""
    function: Sampler | None
    comfy_name: str | None = None
    aliases: tuple[str, ...] = ()
    kind: Literal["k-diffusion", "timestep"] = "k-diffusion"
    default_schedule: str | None = "Uniform"
    """The schedule type "Automatic" resolves to (the WebUI's 'scheduler' option; none given
    means the model's own discrete sigmas, i.e. "Uniform")."""
    options: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """Keyword options the WebUI always passes (e.g. solver_type="heun", or eta=1 where the
    WebUI's eta setting overrides k-diffusion's default of 0)."""
    extra_params: tuple[str, ...] = ()
    """User-settable options the WebUI forwards (its `sampler_extra_params`)."""
    discard_next_to_last_sigma: bool = False
    second_order: bool = False
    brownian_noise: bool = False
    """The WebUI feeds it a Brownian-tree noise sampler seeded by the image seeds."""
    uses_ensd: bool = False
    """Its result depends on the eta noise seed delta (ENSD) setting."""
    stochastic: bool = False
    """Draws noise with its WebUI options: a `noise` source is required."""
    needs_uncond: bool = False
    """CFG++: the model object must expose `uncond`, the unconditional x0 of its last call."""
    model_sigma_range: bool = False
    """Steps between the model's sigma_min/sigma_max (pass them as options), not the schedule."""
    in_webui: bool = True

    @property
    def names(self) -> tuple[str, ...]:
        """Every name it answers to: label, ComfyUI name, aliases."""
        return (self.name, *((self.comfy_name,) if self.comfy_name else ()), *self.aliases)


class Registry(Sequence[SamplerInfo]):
    """Samplers in display order (those named in `order` first, in that order, then the rest
    in the order they registered), found by any of their names, case-insensitively."""

    def __init__(self, order: Sequence[str] = ()) -> None:
        self._order = {name: i for i, name in enumerate(order)}
        self._added: list[SamplerInfo] = []
        self._by_name: dict[str, SamplerInfo] = {}
        self._listed: tuple[SamplerInfo, ...] | None = None

    def add(self, info: SamplerInfo) -> SamplerInfo:
        """List `info`; one registered again under the same label replaces the old entry (a
        reloaded module). ValueError when one of its names belongs to another sampler."""
        for key in (n.lower() for n in info.names):
            taken = self._by_name.get(key)
            if taken is not None and taken.name != info.name:
                raise ValueError(f"sampler {info.name!r}: the name {key!r} belongs to "
                                 f"{taken.name!r} already; choose another name or alias")
        old = next((i for i, known in enumerate(self._added) if known.name == info.name), None)
        if old is None:
            self._added.append(info)
        else:
            for key in (n.lower() for n in self._added[old].names):
                self._by_name.pop(key, None)
            self._added[old] = info
        self._by_name.update((n.lower(), info) for n in info.names)
        self._listed = None
        return info

    def find(self, name: str) -> SamplerInfo | None:
        """The sampler called `name` (any name, any case, surrounding spaces ignored)."""
        return self._by_name.get(name.strip().lower()) if isinstance(name, str) else None

    def closest(self, name: str) -> SamplerInfo | None:
        """The sampler whose name (any of them) `name` most looks like a misspelling of, if
        any is close (difflib's ratio 0.6 or more)."""
        found = difflib.get_close_matches(name.strip().lower(), self._by_name, n=1)
        return self._by_name[found[0]] if found else None

    def _list(self) -> tuple[SamplerInfo, ...]:
        if self._listed is None:
            last = len(self._order)
            self._listed = tuple(sorted(self._added, key=lambda i: self._order.get(i.name, last)))
        return self._listed

    @overload
    def __getitem__(self, index: int) -> SamplerInfo: ...

    @overload
    def __getitem__(self, index: slice) -> tuple[SamplerInfo, ...]: ...

    def __getitem__(self, index: int | slice) -> SamplerInfo | tuple[SamplerInfo, ...]:
        return self._list()[index]

    def __iter__(self) -> Iterator[SamplerInfo]:
        return iter(self._list())

    def __len__(self) -> int:
        return len(self._added)

    def __repr__(self) -> str:
        return f"<Registry of {len(self)} samplers: {', '.join(i.name for i in self)}>"


SAMPLERS = Registry(WEBUI_SAMPLERS)
"""Every sampler: the WebUI's first (in its order), then those only ComfyUI has."""

F = TypeVar("F", bound=Callable[..., Any])


def _info(name: str, function: Sampler | None, comfy_name: str | None,
          aliases: tuple[str, ...], fields: dict[str, Any]) -> SamplerInfo:
    if "options" in fields:
        fields["options"] = MappingProxyType(dict(fields["options"]))
    return SamplerInfo(name, function, comfy_name, tuple(aliases),
                       in_webui=name in WEBUI_SAMPLERS, **fields)


def register(name: str, comfy_name: str | None = None, aliases: tuple[str, ...] = (),
             **fields: Any) -> Callable[[F], F]:
    """Decorator: list the decorated sampler function in `SAMPLERS` as `name` (the WebUI's
    label, or a display name), with ComfyUI's name, aliases and any other `SamplerInfo`
    field (the WebUI's options, default schedule, ...). Returns the function unchanged; stack
    it to list one function under several names with different options."""

    def decorate(function: F) -> F:
        SAMPLERS.add(_info(name, function, comfy_name, aliases, fields))
        return function

    return decorate


def register_timestep(name: str, comfy_name: str | None = None, aliases: tuple[str, ...] = (),
                      **fields: Any) -> SamplerInfo:
    """List a WebUI timestep sampler (DDIM, PLMS, UniPC...): `diffusion.sampling.schedulers`
    runs it, so it has no function here and no schedule type of its own."""
    fields = {"kind": "timestep", "default_schedule": None, **fields}
    return SAMPLERS.add(_info(name, None, comfy_name, aliases, fields))


def lookup(name: str) -> SamplerInfo:
    """The sampler called `name` (WebUI label, ComfyUI name or alias; case and surrounding
    spaces do not matter). ValueError listing the valid names when there is none."""
    info = SAMPLERS.find(name)
    if info is None:
        listing = ", ".join(f"{i.name!r}" + (f" ({i.comfy_name})" if i.comfy_name else "")
                            for i in SAMPLERS)
        close = SAMPLERS.closest(name) if isinstance(name, str) else None
        guess = f" (did you mean {close.name!r}?)" if close is not None else ""
        raise ValueError(f"unknown sampler {name!r}{guess}; valid names (ComfyUI's in "
                         "parentheses): "
                         f"{listing}; an old combined name such as 'DPM++ 2M Karras' also names "
                         "its schedule type")
    return info


def resolve(name: str, schedule: str = "Automatic") -> tuple[str, str]:
    """(WebUI sampler label, schedule type label) for a sampler name that may carry an old-style
    schedule suffix ("DPM++ 2M Karras" -> ("DPM++ 2M", "Karras")); a name without one gets
    `schedule`. ValueError listing the valid names for an unknown sampler or schedule type."""
    text = name.strip() if isinstance(name, str) else name
    if isinstance(text, str) and SAMPLERS.find(text) is None:
        for label in sorted(SCHEDULE_LABELS, key=len, reverse=True):
            stem = text[: -len(label)].rstrip()
            if text.lower().endswith(" " + label.lower()) and SAMPLERS.find(stem) is not None:
                return lookup(stem).name, label
    schedule = schedule.strip() if isinstance(schedule, str) else schedule
    schedule_label = schedule_type(schedule).label
    return lookup(text).name, schedule_label
