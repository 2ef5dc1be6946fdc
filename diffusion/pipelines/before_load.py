"""What a model's family does not take, refused before its weights load: the family's
`Capabilities` told from its files (`families.capabilities_of`: configs and headers) and the
same `refuse` the loaded pipeline calls, so a request it would refuse after a load of seconds
to minutes is refused at once with the same line (the command line before it loads --model,
the server before it queues a request, from the loaded pipeline's own Capabilities where the
model is loaded already: `refuse_with`).

The loaded models the request will carry (control units, a refiner, a Redux reference) stand
in as what names them: `refuse` asks only whether they are there, and whether a unit is a
control map (ControlMap). A refiner is then checked itself (`refuse_refiner`: what the loaded
pipeline's `sd.refiner.check_refiner` refuses), and a UNet-only GGUF's --base against the
UNet its header describes (`refuse_gguf_base`: what `gguf_pipeline_weights` refuses).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .contract import Capabilities
from .control_map import MAP_MODEL, ControlMap
from .control_spec import ControlSpec
from .reference import REFERENCE_MODULES
from .request import GenerationRequest

__all__ = ["refuse_before_load", "refuse_gguf_base", "refuse_refiner", "refuse_with"]

PathText = str | os.PathLike[str]


def refuse_with(capabilities: Capabilities, request: GenerationRequest,
                specs: Sequence[ControlSpec] = (), *, more_units: Sequence[Any] = (),
                guidance: Sequence[str] = ()) -> None:
    """`refuse_before_load`'s refusals with the family's `capabilities` given (a loaded
    pipeline's, or told from its files)."""
    # model "None" is the model's own control map, or with a reference module a reference
    # unit (ControlSpec.unit), no map
    units = [ControlMap(spec.image)
             if spec.model == MAP_MODEL and spec.module not in REFERENCE_MODULES else spec
             for spec in specs]
    capabilities.refuse(replace(request, control=(*units, *more_units)))
    for option in guidance:
        capabilities.refuse_distilled_guidance(option)


def refuse_before_load(path: PathText, request: GenerationRequest,
                       specs: Sequence[ControlSpec] = (), *, more_units: Sequence[Any] = (),
                       guidance: Sequence[str] = ()) -> Capabilities | None:
    """ValueError in one line, the loaded pipeline's `Capabilities.refuse`'s, for a setting of
    `request` that the family of the model at `path` does not take; nothing where its family
    takes it or only loading can tell. `specs`: the ControlNet units (a map's and a
    reference unit's model MAP_MODEL), `more_units` others (IP-Adapter's) by name;
    `request.refiner` and `request.redux` may be any stand-in (a name) for the models they
    will be; `guidance`: the distilled guidance options given explicitly (the CLI's),
    refused where the family takes none. Returns the Capabilities it refused with (None:
    only loading can tell)."""
    from .families import capabilities_of

    capabilities = capabilities_of(path)
    if capabilities is not None:
        refuse_with(capabilities, request, specs, more_units=more_units, guidance=guidance)
    return capabilities


def refuse_refiner(ours: Capabilities | None, refiner: PathText, request: GenerationRequest,
                   option: str, name: str) -> None:
    """ValueError in one line naming `option` and the refiner's `name` where the model at
    `refiner` cannot take over `request` from a model of `ours` (None: not told before the
    load), as `check_refiner` would refuse the loaded pair: its family takes no part in a
    hand-off, its latents are another space's, it is an inpainting model or `request`
    inpaints; nothing where it can, or only loading can tell."""
    from .families import capabilities_of

    if request.mode == "inpaint":
        raise ValueError(f"{option} {name!r}: the refiner takes over txt2img and img2img; "
                         "inpainting runs without one: leave it out")
    theirs = capabilities_of(refiner)
    if theirs is None:
        return
    if not theirs.refiner or (ours is not None and ours.latent_space != theirs.latent_space):
        mine = "" if ours is None else f" of a {ours.family} model"
        raise ValueError(f"{option} {name!r} is a {theirs.family} model and cannot continue "
                         f"the latents{mine}; an SDXL base hands over to the SDXL refiner (or "
                         "another SDXL model)")
    if theirs.inpainting_model:
        raise ValueError(f"{option} {name!r} is an inpainting model; the refiner takes over "
                         "txt2img and img2img: give a model that is not one")


def refuse_gguf_base(path: PathText, base: PathText) -> None:
    """ValueError in one line where the SD GGUF `path` cannot run with the base model `base`
    (the CLI's --base), told from the headers as `gguf_pipeline_weights` would find it at the
    load: a whole-model GGUF has its own parts; a UNet-only one runs with the base's UNet
    config, so a base whose text width, or SDXL's added embedding, is not the UNet's fails
    (the tensors' names or shapes) only once its weights load. The base's own WeightsError
    (no model of the SD line) as its load gives it; nothing for other files."""
    from ..loaders import load_pipeline_weights
    from ..loaders.formats.gguf_file import GGUFFile
    from ..loaders.sd.gguf_model import read_model_metadata
    from ..loaders.sd.gguf_pipeline import gguf_unet_facts, is_unet_gguf
    from .families import family_of

    if Path(path).suffix.lower() != ".gguf" or family_of(path)[1] != "unet":
        return  # not an SD GGUF (city96's FLUX.1 / SD 3.5: their loaders check a base)
    if read_model_metadata(GGUFFile(path)) is not None:
        raise ValueError(f"{path}: a whole-model GGUF, with its own text encoders and VAE; "
                         "a base model (--base) is for UNet-only GGUFs: leave it out")
    if not is_unet_gguf(path):
        return  # no SD UNet either: the load says what the file is
    family, unet, _ = gguf_unet_facts(path)
    theirs = load_pipeline_weights(base)
    config = theirs.unet.config
    if (unet.get("cross_attention_dim") != config.get("cross_attention_dim")
            or unet.get("addition_embed_type") != config.get("addition_embed_type")):
        raise ValueError(f"--base {base} is a {theirs.info.family} model "
                         f"({_text(config)}) and the UNet in {Path(path).name} a {family} one "
                         f"({_text(unet)}): its UNet config does not fit; give a base model of "
                         "the UNet's family")


def _text(config: dict[str, Any]) -> str:
    """What a UNet config says of the text a UNet attends to, for people."""
    sdxl = ", SDXL's added embedding" if config.get("addition_embed_type") else ""
    return f"{config.get('cross_attention_dim')}-wide text{sdxl}"
