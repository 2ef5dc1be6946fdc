"""`lineart_realistic` and `lineart_coarse`: the lines of informative-drawings' generator
(sk_model.pth, sk_model2.pth in the annotator folder's `lineart/`), as the ControlNet
extension's `annotator/lineart` makes them: the picture in 0..1, the generator's dark-lines
map times 255, truncated to uint8 and inverted (white lines on black). A picture whose sides
are not multiples of 4 comes back from the network a little larger; its map is resized to the
picture bilinearly (what controlnet_aux's detector does; the extension pads to 64 first)."""

from __future__ import annotations

import numpy as np

from gpucore import Device

from ..models.annotators.lineart import LineartGenerator
from .annotators import annotator_model, at_size, picture_tensor, to_uint8

__all__ = ["FILES", "lineart_coarse", "lineart_lines", "lineart_realistic"]

FILES = {"lineart_realistic": "sk_model.pth", "lineart_coarse": "sk_model2.pth"}


def lineart_lines(image: np.ndarray, module: str, *, device: Device | None = None) -> np.ndarray:
    """The generator's map of a uint8 HxWx3 picture at its size, float32 HxW in 0..255 (dark
    lines on white), before rounding. `module`: lineart_realistic or lineart_coarse."""
    model = annotator_model(module, "lineart", FILES[module],
                            LineartGenerator.from_state_dict, device)
    lines = model(picture_tensor(image, model.device))
    return at_size(lines, *image.shape[:2]).numpy()[0, 0] * np.float32(255)


def lineart_realistic(image: np.ndarray, *, device: Device | None = None) -> np.ndarray:
    """The extension's lineart_realistic map: uint8 HxWx3, white lines on black."""
    return to_uint8(lineart_lines(image, "lineart_realistic", device=device), invert=True)


def lineart_coarse(image: np.ndarray, *, device: Device | None = None) -> np.ndarray:
    """The extension's lineart_coarse map (sk_model2.pth): uint8 HxWx3."""
    return to_uint8(lineart_lines(image, "lineart_coarse", device=device), invert=True)
