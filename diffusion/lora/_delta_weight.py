"""The updates built from the layer's weight itself (LyCORIS IA3), in float64 on the host.

    IA3:  W' = W + multiplier * W * w      (w one factor per output row, or per input column
                                            where the file's `on_input` is 1)

The WebUI's `network_ia3` (no alpha: IA3 has no rank), on a linear layer; on a conv, w scales
the output (input) channels, as LyCORIS trains it (the WebUI's broadcast there fits only 1x1
kernels). W is the weight so far: several LoRAs on one layer apply in their order, each on the
weight the ones before it left, as the WebUI applies them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._errors import LoraError
from ._file import LoraModule

__all__ = ["WEIGHT_KINDS", "apply_to_weight", "check_weight_fit"]

# The module kinds whose update depends on the weight it patches
WEIGHT_KINDS = ("ia3",)


def _ia3_axis(module: LoraModule) -> int:
    """The weight's axis IA3's factors run along: 0 (rows), or 1 (columns) for `on_input`."""
    return 1 if module.tensors["on_input"].reshape(()) else 0


def check_weight_fit(path: Path, module: LoraModule, target: str,
                     shape: tuple[int, ...]) -> None:
    """LoraError (naming the file, the key and both shapes) unless `module` fits parameter
    `target` of `shape`."""
    axis = _ia3_axis(module)
    size = module.tensors["weight"].size
    if len(shape) < 2 or shape[axis] != size:
        where = "input columns" if axis else "output rows"
        raise LoraError(f"{path}: {module.key!r} scales {size} {where}, but {module.component} "
                        f"parameter {target!r} has shape {shape}; this LoRA was made for a "
                        "different model (SD 1.x, SD 2.x and SDXL LoRAs do not mix)")


def apply_to_weight(total: np.ndarray, module: LoraModule, multiplier: float) -> None:
    """Apply `module` at `multiplier` to `total` (float64, the layer's weight so far, changed
    in place), as the module doc says."""
    axis = _ia3_axis(module)
    factors = module.tensors["weight"].astype(np.float64).reshape(
        [-1 if i == axis else 1 for i in range(total.ndim)])
    total += multiplier * total * factors
