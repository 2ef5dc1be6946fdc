"""What a Wan model does not take, in one line each, from what it is (a second expert,
timesteps per token, a transformer that reads the first frame): `WanPipeline.__call__`
refuses with these, and the command line and the server before the weights load
(`wan_refusals_of`: the folder's model_index.json and the transformer's config, a file's from
its header)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

from ...loaders import WeightsError
from ...loaders.formats.diffusers_folder import component_config
from ...loaders.wan.file import load_wan_file
from ...loaders.wan.files import WanFiles
from ...loaders.wan.folder import wan_layout

__all__ = ["image_conditioned", "refuse_wan", "wan_refusals_of"]


def image_conditioned(config: Mapping[str, Any]) -> bool:
    """Whether a Wan transformer of `config` reads more channels than it writes: an
    image-to-video model's mask and first frame's latents (Wan 2.1 I2V, Wan 2.2 A14B I2V)."""
    return config["in_channels"] != (config.get("out_channels") or config["in_channels"])


def refuse_wan(*, second_expert: bool, expand_timesteps: bool, conditioned: bool, image: bool,
               cache_kind: str | None, guidance_scale_2: float | None) -> None:
    """ValueError in one line for an image-to-video model (`conditioned`) without its first
    frame (`image`), a first frame for a model of text only (neither conditioned nor timesteps
    per token: Wan 2.2 TI2V 5B's), TeaCache on Wan 2.2 (its tables are Wan 2.1's) or a second
    guidance scale without Wan 2.2 A14B's second expert; nothing otherwise."""
    if conditioned and not image:
        raise ValueError("this Wan model is image-to-video: give the first frame "
                         "(`img2vid --image PIC`)")
    if image and not (expand_timesteps or conditioned):
        raise ValueError("this Wan model makes videos from text only; animating a picture "
                         "needs Wan 2.2 TI2V 5B (its folder sets expand_timesteps) or a "
                         "Wan 2.1 I2V folder")
    if cache_kind in ("teacache", "teacache-ret") and (expand_timesteps or second_expert):
        raise ValueError("TeaCache's Wan tables are Wan 2.1's; for Wan 2.2 use First Block "
                         "Cache (fbc:0.12)")
    if guidance_scale_2 is not None and not second_expert:
        raise ValueError("a second guidance scale is for Wan 2.2 A14B's low-noise expert; "
                         "this Wan model has one transformer")


def wan_refusals_of(folder: str | os.PathLike[str], files: WanFiles, *, image: bool,
                    cache_kind: str | None, guidance_scale_2: float | None) -> None:
    """`refuse_wan` for the Wan folder `folder` with `files` in place of its parts, before it
    loads: its second expert listed or given as a file, and its transformer's config as the
    load reads it (a file's from its header, `load_wan_file`, over the folder's config.json;
    a file the load would refuse is left for the load to name)."""
    listed, expand_timesteps = wan_layout(folder)
    given = files.given()
    config = component_config(folder, "transformer")
    if "transformer" in given:
        try:
            config = load_wan_file(given["transformer"], config=config).config
        except WeightsError:
            config = None
    refuse_wan(second_expert=listed or "transformer_2" in given,
               expand_timesteps=expand_timesteps, image=image,
               conditioned=config is not None and image_conditioned(config),
               cache_kind=cache_kind, guidance_scale_2=guidance_scale_2)
