"""The hires fix's second pass as a request states it: its prompts and sampler (the first
pass's unless the HiresFix names its own: the WebUI's hr_prompt, hr_negative_prompt,
hr_sampler_name and hr_scheduler), their checks, the infotext fields the fix adds, and
which of its passes a refiner takes over in (the WebUI's hires_fix_refiner_pass).

    prompt, negative = hires_prompts(request.hires, request.prompt, request.negative_prompt)
    label, schedule = hires_sampler(request.hires, request.sampler_label)
"""

from __future__ import annotations

from typing import Any

from ..sampling.kdiffusion import DIFFUSERS
from ..sampling.samplers import lookup, resolve
from ..upscalers.interpolation import HiresFix

__all__ = ["HIRES_REFINER_PASSES", "check_hires_pass", "check_hires_refiner_pass", "hires_fix",
           "hires_prompts", "hires_sampler", "own_settings", "refiner_in_pass"]

# the WebUI's "Hires fix: which pass to enable refiner for" (its default the second)
HIRES_REFINER_PASSES = ("first pass", "second pass", "both passes")


def check_hires_refiner_pass(value: Any) -> str:
    """`value` if it is one of HIRES_REFINER_PASSES, else ValueError naming them."""
    if value not in HIRES_REFINER_PASSES:
        raise ValueError(f"hires_fix_refiner_pass must be one of {list(HIRES_REFINER_PASSES)} "
                         f"(which pass of the hires fix the refiner takes over in), got "
                         f"{value!r}")
    return str(value)


def refiner_in_pass(hires_stage: str | None, which: str) -> bool:
    """Whether a refiner takes over in a pass of `hires_stage` ("first" / "second" of a
    hires fix, None: no hires fix, so always) under the WebUI's hires_fix_refiner_pass
    `which`. Each pass starts on the base model, as the WebUI's hires pass reloads it (Forge
    goes on with the refiner its first pass loaded)."""
    return hires_stage is None or which == "both passes" or which == f"{hires_stage} pass"


def hires_prompts(hires: HiresFix, prompt: str, negative_prompt: str) -> tuple[str, str]:
    """The second pass's (prompt, negative prompt): the hires fix's, where not empty (the
    WebUI's "" for "the first pass's"), else `prompt` and `negative_prompt`."""
    return hires.prompt or prompt, hires.negative_prompt or negative_prompt


def hires_sampler(hires: HiresFix, first: tuple[str, str | None]) -> tuple[str, str | None]:
    """The second pass's (sampler label, schedule type label): the hires fix's sampler and
    schedule type where it names them, each else the first pass's (`first`); a combined old
    name ("DPM++ 2M Karras") carries its schedule type. ValueError for an unknown one."""
    if hires.sampler is None and hires.scheduler is None:
        return first
    label, schedule = first
    return resolve(hires.sampler or label, hires.scheduler or schedule or "Automatic")


def check_hires_pass(hires: HiresFix, first: tuple[str, str | None], *, max_chars: int) -> None:
    """ValueError in one line for the second pass's own settings that cannot run after a first
    pass with sampler and schedule type `first`: prompts over `max_chars` characters, an
    unknown sampler or schedule type, or one that differs from the first pass's where a pass
    is not a WebUI k-diffusion sampler (the timestep samplers and "diffusers" run the second
    pass as the first)."""
    for name in ("prompt", "negative_prompt"):
        text = getattr(hires, name) or ""
        if len(text) > max_chars:
            raise ValueError(f"hires {name.replace('_', ' ')} is {len(text):,} characters, over "
                             f"the limit of {max_chars:,}; shorten it")
    if first[0] == DIFFUSERS and (hires.sampler is not None or hires.scheduler is not None):
        second: tuple[str, str | None] = (hires.sampler or DIFFUSERS, hires.scheduler)
    else:
        try:
            second = hires_sampler(hires, first)
        except ValueError as exc:
            raise ValueError(f"hires sampler: {exc}") from None
    if second != first and not all(name != DIFFUSERS and lookup(name).kind == "k-diffusion"
                                   for name in (first[0], second[0])):
        raise ValueError(f"a hires sampler of its own ({second[0]}, {second[1]}) after "
                         f"{first[0]} needs WebUI k-diffusion samplers on both passes (Euler, "
                         "DPM++ 2M, ...), not DDIM, PLMS, UniPC or diffusers; leave the hires "
                         "sampler out or choose such samplers")


def hires_fix(hires: HiresFix, modules: Any = None, *, prompts: tuple[str, str] = ("", ""),
              sampler: tuple[str, str | None] = ("Euler a", "Automatic")) -> dict[str, Any]:
    """The settings a hires pass adds (the infotext's Hires fields; with `modules`, a
    module_load.HiresModules, Forge's "Hires Module N"). The second pass's prompts and sampler
    are written where they differ from the first pass's `prompts` (prompt, negative prompt)
    and `sampler` (label, schedule type), as the WebUI writes them."""
    fields: dict[str, Any] = {"hires_upscaler": hires.upscaler, "hires_denoise": hires.denoise}
    if modules is not None and modules.labels:
        fields["hires_modules"] = list(modules.labels)
    if hires.resize is not None:
        fields["hires_resize"] = hires.resize
    else:
        fields["hires_scale"] = hires.scale
    if hires.steps:
        fields["hires_steps"] = hires.steps
    return {**fields, **own_settings(hires, prompts, sampler)}


def own_settings(hires: HiresFix, prompts: tuple[str, str],
                 sampler: tuple[str, str | None]) -> dict[str, Any]:
    """The second pass's settings that differ from the first pass's `prompts` (prompt,
    negative prompt) and `sampler` (label, schedule type), by their infotext settings' names
    (hires_sampler, hires_scheduler, hires_prompt, hires_negative_prompt); {} for none."""
    if not hires.own_settings:
        return {}
    second = hires_sampler(hires, sampler)
    pairs = (("hires_sampler", second[0], sampler[0]),
             ("hires_scheduler", second[1], sampler[1]),
             *zip(("hires_prompt", "hires_negative_prompt"), hires_prompts(hires, *prompts),
                  prompts, strict=True))
    return {name: ours for name, ours, theirs in pairs if ours != theirs}
