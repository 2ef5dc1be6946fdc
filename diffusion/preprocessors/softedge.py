"""`softedge_hed`, `softedge_hedsafe` (HED: ControlNetHED.pth in the annotator folder's `hed/`)
and `softedge_pidinet`, `softedge_pidisafe` (PiDiNet: table5_pidinet.pth in `pidinet/`), as
the ControlNet extension's `annotator/hed` and `annotator/pidinet` make them.

HED: the RGB picture in 0..255 through the network; its five side outputs resized to the
picture (cv2.INTER_LINEAR), averaged, through a sigmoid. PiDiNet: the picture's channels
reversed, in 0..1; the network's last output (already a sigmoid). Either map times 255 is
clipped and truncated to uint8; the "safe" modules first quantize it to steps of one half
(`safe_step`: floor(3 x) / 2), for maps with fewer soft edges.
"""

from __future__ import annotations

import numpy as np

import gpustd
from gpucore import Device

from ..models.annotators.hed import ControlNetHED
from ..models.annotators.pidinet import PiDiNet
from .annotators import annotator_model, at_size, picture_tensor, to_uint8

__all__ = ["hed_edges", "pidinet_edges", "safe_step", "softedge_hed", "softedge_hedsafe",
           "softedge_pidinet", "softedge_pidisafe"]


def safe_step(x: np.ndarray) -> np.ndarray:
    """The annotators' `safe_step`: x quantized to floor(3 x) / 2 (float32)."""
    return (x.astype(np.float32) * np.float32(3)).astype(np.int32).astype(np.float32) / 2


def hed_edges(image: np.ndarray, *, device: Device | None = None) -> np.ndarray:
    """HED's edge strength of a uint8 HxWx3 picture: float32 HxW in 0..1, before any
    rounding."""
    model = annotator_model("softedge_hed", "hed", "ControlNetHED.pth",
                            ControlNetHED.from_state_dict, device)
    height, width = image.shape[:2]
    sides = model(picture_tensor(image, model.device, scale=1))
    total = at_size(sides[0], height, width)
    for side in sides[1:]:
        total = total + at_size(side, height, width)
    return gpustd.sigmoid(total * (1 / len(sides))).numpy()[0, 0]


def softedge_hed(image: np.ndarray, *, device: Device | None = None) -> np.ndarray:
    """The extension's softedge_hed map: uint8 HxWx3."""
    return to_uint8(hed_edges(image, device=device) * np.float32(255))


def softedge_hedsafe(image: np.ndarray, *, device: Device | None = None) -> np.ndarray:
    """The extension's softedge_hedsafe map: HED's edges in steps of one half."""
    return to_uint8(safe_step(hed_edges(image, device=device)) * np.float32(255))


def pidinet_edges(image: np.ndarray, *, device: Device | None = None) -> np.ndarray:
    """PiDiNet's edge strength of a uint8 HxWx3 picture: float32 HxW in 0..1, before any
    rounding."""
    model = annotator_model("softedge_pidinet", "pidinet", "table5_pidinet.pth",
                            PiDiNet.from_state_dict, device)
    return model(picture_tensor(image, model.device, bgr=True)).numpy()[0, 0]


def softedge_pidinet(image: np.ndarray, *, device: Device | None = None) -> np.ndarray:
    """The extension's softedge_pidinet map: uint8 HxWx3."""
    return to_uint8(pidinet_edges(image, device=device) * np.float32(255))


def softedge_pidisafe(image: np.ndarray, *, device: Device | None = None) -> np.ndarray:
    """The extension's softedge_pidisafe map: PiDiNet's edges in steps of one half."""
    return to_uint8(safe_step(pidinet_edges(image, device=device)) * np.float32(255))
