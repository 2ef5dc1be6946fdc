"""The sampler a txt2img/img2img request runs when its `sampler_name` is unset or empty.

The WebUI's API falls back to `sampler_index`, "Euler". A family that runs only its own
sampler (Sana Sprint's SCM steps, the HunyuanImage 2.1 refiner's: `Capabilities.samplers`
without Euler) would refuse every such request, so there the request runs the family's
default sampler instead (`SamplingDefaults.sampler`, "diffusers" where it names none or
names one the family refuses), as the command line does without --sampler. Every other
family keeps the WebUI's Euler, as the other settings a request leaves out keep the
WebUI's defaults. A sampler the request names is never replaced: one the family lacks is
refused in one line naming those it runs (Capabilities.refuse).
"""

from __future__ import annotations

from typing import Any

from ...pipelines.contract import Capabilities, SamplingDefaults
from ...sampling.kdiffusion import DIFFUSERS
from ...sampling.samplers import resolve
from ..catalog.models_dir import ModelEntry
from .schemas import Txt2ImgRequest

__all__ = ["WEBUI_FALLBACK", "family_sampler", "sampler_unset", "with_family_sampler"]

WEBUI_FALLBACK = Txt2ImgRequest.model_fields["sampler_index"].default  # "Euler"


def sampler_unset(body: Txt2ImgRequest) -> bool:
    """Whether `body` leaves the sampler to the server: no sampler_name (or an empty one) and
    no sampler_index sent (the WebUI's older field names one too)."""
    return (not (body.sampler_name or "").strip()
            and "sampler_index" not in body.model_fields_set)


def family_sampler(capabilities: Capabilities | None,
                   defaults: SamplingDefaults | None) -> str | None:
    """The sampler a request that names none runs on a family of `capabilities` with
    `defaults`: None (the WebUI's Euler) where the family runs Euler or is not known before
    it loads; else its default sampler where it runs that one, else "diffusers" (the model
    folder's own scheduler, which every family runs)."""
    runs = None if capabilities is None else capabilities.samplers
    if runs is None or WEBUI_FALLBACK in runs:
        return None
    named = None if defaults is None else defaults.sampler
    if named is None or named == DIFFUSERS:
        return DIFFUSERS
    return named if resolve(named)[0] in runs else DIFFUSERS


def with_family_sampler(worker: Any, wanted: ModelEntry | None,
                        body: Txt2ImgRequest) -> Txt2ImgRequest:
    """`body`, its sampler_name set to `family_sampler`'s where it leaves the sampler unset
    and the family of `wanted` (the model it runs on) refuses Euler. The loaded pipeline's
    Capabilities and defaults where `wanted` is loaded once the queued switches have run,
    else told from its files (configs, headers, defaults.json: reads a GGUF's header, so
    call it off the event loop)."""
    if wanted is None or not sampler_unset(body):
        return body
    facts = worker.facts
    if facts is not None and all(model is not None and model.path == wanted.path
                                 for model in (worker.model, worker.planned)):
        chosen = family_sampler(facts.capabilities, facts.defaults)
    else:
        chosen = _before_load(wanted)
    return body if chosen is None else body.model_copy(update={"sampler_name": chosen})


def _before_load(wanted: ModelEntry) -> str | None:
    """`family_sampler` for the model of `wanted`, read from its files; None where only
    loading can tell (loading then names what is wrong with them)."""
    from ...pipelines.families import capabilities_of
    from ...pipelines.load import model_defaults

    capabilities = capabilities_of(wanted.path)
    if family_sampler(capabilities, None) is None:  # Euler: no defaults to read
        return None
    try:
        defaults = model_defaults(wanted.path)[0]
    except ValueError:  # a bad defaults.json (WeightsError): the family's own scheduler
        defaults = None
    return family_sampler(capabilities, defaults)
