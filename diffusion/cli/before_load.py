"""The command line's refusals before --model loads (`pipelines.before_load`): its
--refiner, --redux and --ip-adapter stand in by name for the models they will load, then
--refiner is checked against --model, and --base against a GGUF --model, from their files."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import replace

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
    tell (the loaded pipeline's capabilities then refuse the same). A distilled guidance
    scale is refused only where given on the command line: those options are None when left
    out, and one that --from-infotext fills is ignored by the other families, as the server
    and Forge ignore the one Forge's clients always send. Then a --base a GGUF --model
    cannot run with, and a --refiner that cannot take over from --model
    (`before_load.refuse_gguf_base`, `refuse_refiner`)."""
    from ..pipelines import before_load
    from ..pipelines.load import DEFAULT_MODEL

    model = DEFAULT_MODEL if args.model is None else args.model
    if args.base:
        before_load.refuse_gguf_base(model, args.base)
    ours = before_load.refuse_before_load(
        model,
        replace(request, refiner=args.refiner or None, redux="--redux" if redux else None),
        specs, more_units=("--ip-adapter",) if ip_adapters else (), guidance=guidance)
    if args.refiner:  # _check_paths made sure it is there
        before_load.refuse_refiner(ours, args.refiner, request, "--refiner", args.refiner)
