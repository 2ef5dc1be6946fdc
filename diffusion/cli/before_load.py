"""The command line's refusals before --model loads (`pipelines.before_load`): its
--refiner, --redux and --ip-adapter stand in by name for the models they will load."""

from __future__ import annotations

import argparse
from dataclasses import replace

from ..pipelines.control_spec import ControlSpec
from ..pipelines.request import GenerationRequest

__all__ = ["refuse_before_load"]


def refuse_before_load(args: argparse.Namespace, request: GenerationRequest,
                       specs: list[ControlSpec], ip_adapters: bool, redux: bool) -> None:
    """ValueError in one line, the loaded pipeline's `Capabilities.refuse`'s, for a setting of
    `request` (with the units of `specs`, --ip-adapter's when `ip_adapters`, --refiner, and
    --redux when `redux`) that the family of --model does not take; nothing where its family
    takes it or only loading can tell."""
    from ..pipelines import before_load
    from ..pipelines.load import DEFAULT_MODEL

    before_load.refuse_before_load(
        DEFAULT_MODEL if args.model is None else args.model,
        replace(request, refiner=args.refiner or None, redux="--redux" if redux else None),
        specs, more_units=("--ip-adapter",) if ip_adapters else ())
