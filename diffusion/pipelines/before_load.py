"""What a model's family does not take, refused before its weights load: the family's
`Capabilities` told from its files (`families.capabilities_of`: configs and headers) and the
same `refuse` the loaded pipeline calls, so a request it would refuse after a load of seconds
to minutes is refused at once with the same line (the command line before it loads --model,
the server before it queues a switch to another checkpoint).

The loaded models the request will carry (control units, a refiner, a Redux reference) stand
in as what names them: `refuse` asks only whether they are there, and whether a unit is a
control map (ControlMap).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from .control_map import MAP_MODEL, ControlMap
from .control_spec import ControlSpec
from .request import GenerationRequest

__all__ = ["refuse_before_load"]


def refuse_before_load(path: str | os.PathLike[str], request: GenerationRequest,
                       specs: Sequence[ControlSpec] = (), *, more_units: Sequence[Any] = (),
                       guidance: Sequence[str] = ()) -> None:
    """ValueError in one line, the loaded pipeline's `Capabilities.refuse`'s, for a setting of
    `request` that the family of the model at `path` does not take; nothing where its family
    takes it or only loading can tell. `specs`: the ControlNet units (a map's model
    MAP_MODEL), `more_units` others (IP-Adapter's) by name; `request.refiner` and
    `request.redux` may be any stand-in (a name) for the models they will be; `guidance`:
    the distilled guidance options given explicitly (the CLI's), refused where the family
    takes none."""
    from .families import capabilities_of

    capabilities = capabilities_of(path)
    if capabilities is None:
        return
    units = [ControlMap(spec.image) if spec.model == MAP_MODEL else spec for spec in specs]
    capabilities.refuse(replace(request, control=(*units, *more_units)))
    for option in guidance:
        capabilities.refuse_distilled_guidance(option)
