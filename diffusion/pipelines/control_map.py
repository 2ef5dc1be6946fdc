"""The control map a model takes in its own input, without a ControlNet: FLUX.1 Canny / Depth
dev (Flux Tools), whose transformer reads the map's VAE latents concatenated to the latents'
channels. The CLI makes one from --control-image without --controlnet (or `--controlnet
None`), the server from a ControlNet unit whose model is "None"; it travels among the
request's control units.

    ControlMap(edges, resize_mode="Crop and Resize", label="Module: canny, Model: None, ...")
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["MAP_MODEL", "ControlMap", "split_maps"]

MAP_MODEL = "None"  # a unit's model name that asks for the model's own control map


@dataclass
class ControlMap:
    """A map (uint8 HxWx3, preprocessed) for the model's input, fitted to the picture by
    `resize_mode`; `label`: the unit as the infotext writes it, None for one built in Python.
    `hr_option` is here so that the hires fix reads it as a unit's ("Both")."""

    image: Any
    resize_mode: str = "Crop and Resize"
    label: str | None = None
    hr_option: str = "Both"


def split_maps(units: Sequence[Any]) -> tuple[ControlMap | None, tuple[Any, ...]]:
    """The request's control map (ValueError in one line for more than one) and its other
    units."""
    maps = [unit for unit in units if isinstance(unit, ControlMap)]
    if len(maps) > 1:
        raise ValueError(f"{len(maps)} control maps without a ControlNet model: the model "
                         "takes one; give one --control-image (one unit with model None)")
    return (maps[0] if maps else None), tuple(u for u in units if not isinstance(u, ControlMap))
