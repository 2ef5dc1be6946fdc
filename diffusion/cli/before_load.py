"""What the model's family does not take, refused before its weights load: the family's
`Capabilities` told from its files (`families.capabilities_of`: configs and headers) and the
same `refuse` the loaded pipeline calls, so a request it would refuse after a load of seconds
to minutes is refused at once with the same line.

The loaded models the request will carry (control units, a refiner, a Redux reference) stand
in as the options that name them: `refuse` asks only whether they are there, and whether a
unit is a control map (ControlMap).

A distilled guidance scale (--distilled-cfg-scale, --hr-distilled-cfg) is refused only where
given on the command line: those options are None when left out (the request gets the field's
default), and one that --from-infotext fills is ignored by the other families, as the server
and Forge ignore the one Forge's clients always send.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from ..pipelines.control_map import MAP_MODEL, ControlMap
from ..pipelines.control_spec import ControlSpec
from ..pipelines.request import GenerationRequest

__all__ = ["DISTILLED_GUIDANCE", "given_guidance", "refuse_before_load"]

# GenerationRequest's distilled guidance scales (FLUX.1 and FLUX.2 dev's): their options are
# None unless given
DISTILLED_GUIDANCE = ("distilled_cfg_scale", "hr_distilled_cfg")


def given_guidance(args: argparse.Namespace) -> list[str]:
    """The options of DISTILLED_GUIDANCE that `args` were given (asked before --from-infotext
    fills the others)."""
    return ["--" + name.replace("_", "-") for name in DISTILLED_GUIDANCE
            if getattr(args, name) is not None]


def refuse_before_load(args: argparse.Namespace, request: GenerationRequest,
                       specs: list[ControlSpec], ip_adapters: bool, redux: bool,
                       guidance: Sequence[str]) -> None:
    """ValueError in one line, the loaded pipeline's `Capabilities.refuse`'s, for a setting of
    `request` (with the units of `specs`, --ip-adapter's when `ip_adapters`, --refiner, and
    --redux when `redux`), or for one of the distilled `guidance` options given, that the
    family of --model does not take; nothing where its family takes it or only loading can
    tell (the loaded pipeline's capabilities then refuse the same)."""
    from ..pipelines.families import capabilities_of
    from ..pipelines.load import DEFAULT_MODEL

    capabilities = capabilities_of(DEFAULT_MODEL if args.model is None else args.model)
    if capabilities is None:
        return
    units: list[Any] = [ControlMap(spec.image) if spec.model == MAP_MODEL else spec
                        for spec in specs]
    if ip_adapters:
        units.append("--ip-adapter")
    capabilities.refuse(replace(request, control=tuple(units),
                                refiner=args.refiner or None,
                                redux="--redux" if redux else None))
    for option in guidance:
        capabilities.refuse_distilled_guidance(option)
