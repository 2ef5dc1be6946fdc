"""The body's `redux` field (FLUX Redux, diffusion.pipelines.flow.redux): read and checked when
the request arrives, its Redux folder loaded on the worker beside the model.

    "redux": {"model": "FLUX.1-Redux-dev", "image": "<base64 PNG>",
              "prompt_embeds_scale": 1.0, "pooled_prompt_embeds_scale": 1.0}

`model` is a FluxPriorReduxPipeline folder in the server's models folder (`serve --models-dir`),
by its name; the scales are diffusers' (1 by default).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..images import decode_image
from .generation import RequestError

__all__ = ["ReduxField", "parse_redux"]

_KEYS = ("model", "image", "prompt_embeds_scale", "pooled_prompt_embeds_scale")


@dataclass(frozen=True)
class ReduxField:
    """A checked `redux` field: the Redux folder, the picture and the two scales."""

    folder: Path
    image: Any
    prompt_embeds_scale: float
    pooled_prompt_embeds_scale: float

    def reference(self, pipe: Any) -> Any:
        """The request's ReduxReference for the loaded `pipe` (its device and dtype);
        RequestError for a model that takes none."""
        from ...pipelines.flow.redux import FluxRedux, ReduxReference

        capabilities = pipe.capabilities
        if not capabilities.redux:
            raise RequestError(f"redux: FLUX Redux works with FLUX.1 models; the loaded model "
                               f"is a {capabilities.family} model")
        place = pipe.placement
        redux = FluxRedux.from_pretrained(self.folder, dtype=place.dtype, device=place.device)
        return ReduxReference(redux, self.image, self.prompt_embeds_scale,
                              self.pooled_prompt_embeds_scale)


def parse_redux(value: Any, models_dir: Path | None) -> ReduxField | None:
    """The body's `redux` field checked (None when absent); RequestError saying what to
    send otherwise."""
    if value is None:
        return None
    if not isinstance(value, dict) or set(value) - set(_KEYS) or "model" not in value \
            or "image" not in value:
        raise RequestError('redux must be {"model": NAME, "image": BASE64, '
                           '"prompt_embeds_scale": S, "pooled_prompt_embeds_scale": S} '
                           "(the scales optional)")
    name = value["model"]
    folder = None if models_dir is None or not isinstance(name, str) else models_dir / name
    if folder is None or Path(name).name != name or not (folder / "image_embedder").is_dir():
        raise RequestError(f"redux.model {name!r} is not a FLUX Redux folder "
                           "(FluxPriorReduxPipeline) in the server's models folder")
    scales = []
    for key in _KEYS[2:]:
        scale = value.get(key, 1.0)
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) \
                or not math.isfinite(scale):
            raise RequestError(f"redux.{key} must be a number, got {scale!r}")
        scales.append(float(scale))
    image = decode_image(value["image"], "redux.image").convert("RGB")
    return ReduxField(folder, image, *scales)
