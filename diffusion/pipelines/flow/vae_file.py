"""A `--vae` file put in place of a flow family's own VAE network: the new network built like
the old one (its config, dtype and device) and loaded from the file's weights, before the old
one is let go."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from gpustd.nn import StateDictError, deferred

from ...loaders.component import load_component
from ...loaders.errors import WeightsError
from ...loaders.weights import ComponentWeights

__all__ = ["network_like"]


def network_like(old: Any, weights: ComponentWeights, path: str | os.PathLike[str]) -> Any:
    """A network of `old`'s class, config, dtype and device holding `weights` (read from the
    VAE file `path`); WeightsError in one line naming the file when they do not fit it."""
    weight = old.decoder.conv_in.weight
    try:
        with deferred():  # each parameter takes GPU memory when its values arrive
            return load_component(type(old)(old.config, dtype=weight.dtype,
                                             device=weight.device), weights)
    except StateDictError as exc:
        raise WeightsError(f"{Path(path).name}: its tensors do not fit this model's VAE "
                           f"({exc}); give the VAE made for this model") from None
