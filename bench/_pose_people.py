"""A few people for openpose's rows of bench dit_controlnet: the body network's weights
built by hand so that a synthetic picture shows exactly `people` whole skeletons (18 parts
each), rather than random weights whose noisy maps hold some ninety.

How: the picture is black with one white dot per person, each inside one cell of the
network's output grid (stride 8) at the detector's scale (its 368 * 0.5 / height: a square
picture of any size becomes 184x184, a 23x23 grid). model0 (the VGG features) carries the
blue channel through unchanged (each convolution's centre tap from channel 0 to channel 0,
the ReLUs dropping the black background of -0.5), so its feature 0 is 0.5 at each dot's cell
and 0 elsewhere; stages 1-5 are zero. Stage 6's heatmap branch moves that dot to each part's
place in the skeleton (PARTS: two 7x7 convolutions' off-centre taps, then identities), so
each heatmap has one peak per person; its PAF branch widens the dot into the person's area
(rows +-6, columns +-2 cells: 7x3 boxes twice) and writes, for every limb, that area times
the limb's own direction, so a limb's two parts score high within a person and the gap
between people (two cells) fails the detector's 80 % test for pairs across people.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["PARTS", "people_body", "people_picture"]

# COCO-18 parts (nose, neck, right shoulder/elbow/wrist, left ..., right hip/knee/ankle, left
# ..., right eye, left eye, right ear, left ear): (row, column) in cells from the person's dot
PARTS = ((-4, 0), (-3, 0), (-3, -2), (-1, -2), (1, -2), (-3, 2), (-1, 2), (1, 2), (0, -1),
         (2, -1), (3, -1), (0, 1), (2, 1), (3, 1), (-5, -1), (-5, 1), (-5, -2), (-5, 2))
# the detector's limbs (1-based parts) and their PAF channels (x, y), less 19: body.py's
# limbSeq and mapIdx
_LIMBS = ((2, 3), (2, 6), (3, 4), (4, 5), (6, 7), (7, 8), (2, 9), (9, 10), (10, 11), (2, 12),
          (12, 13), (13, 14), (2, 1), (1, 15), (15, 17), (1, 16), (16, 18), (3, 17), (6, 18))
_PAF = ((31, 32), (39, 40), (33, 34), (35, 36), (41, 42), (43, 44), (19, 20), (21, 22),
        (23, 24), (25, 26), (27, 28), (29, 30), (47, 48), (49, 50), (53, 54), (51, 52),
        (55, 56), (37, 38), (45, 46))
_FEATURE = 57  # stage 6's input: stage 5's 38 PAF and 19 heatmap channels, then model0's 128
_SCALE = 0.5 * 368  # the detector's height for its one scale (Body: scale_search, boxsize)
_ROW = 13  # the dots' row of cells: the skeletons span rows 8-16 of 23


def people_body(net: Any) -> Any:
    """controlnet_aux's `bodypose_model` `net` with the weights described above (in place);
    returns it in eval mode."""
    import torch

    def convs(block: Any) -> list[Any]:
        return [layer for layer in block if isinstance(layer, torch.nn.Conv2d)]

    with torch.no_grad():
        for parameter in net.parameters():
            parameter.zero_()
        for conv in convs(net.model0):
            conv.weight[0, 0, 1, 1] = 1
        heat = convs(net.model6_2)
        for part, (row, column) in enumerate(PARTS):
            first = (max(-3, min(3, row)), max(-3, min(3, column)))  # a 7x7 tap moves by <= 3
            heat[0].weight[part, _FEATURE, 3 - first[0], 3 - first[1]] = 1
            heat[1].weight[part, part, 3 - (row - first[0]), 3 - (column - first[1])] = 1
            for conv in heat[2:5]:
                conv.weight[part, part, 3, 3] = 1
            heat[5].weight[part, part, 0, 0] = 1
            heat[6].weight[part, part, 0, 0] = 2  # peaks near 1, above the detector's 0.1
        paf = convs(net.model6_1)
        paf[0].weight[0, _FEATURE, :, 2:5] = 1
        paf[1].weight[0, 0, :, 2:5] = 1
        for conv in paf[2:5]:
            conv.weight[0, 0, 3, 3] = 1
        paf[5].weight[0, 0, 0, 0] = 1
        for (a, b), (x, y) in zip(_LIMBS, _PAF):
            (row_a, column_a), (row_b, column_b) = PARTS[a - 1], PARTS[b - 1]
            direction = np.array([column_b - column_a, row_b - row_a], np.float64)
            direction /= np.linalg.norm(direction)
            paf[6].weight[x - 19, 0, 0, 0] = 0.1 * direction[0]
            paf[6].weight[y - 19, 0, 0, 0] = 0.1 * direction[1]
    return net.eval()


def people_picture(size: int, people: int = 3) -> np.ndarray:
    """A black uint8 size x size x 3 picture with a white dot per person (1 to 3), each
    centred in a cell of the detector's grid."""
    if not 1 <= people <= 3:
        raise ValueError(f"people: 1 to 3 fit the grid side by side, got {people}")
    scale = _SCALE / size
    image = np.zeros((size, size, 3), np.uint8)
    rows, columns = np.mgrid[:size, :size]
    for cell in (4, 11, 18)[:people] if people > 1 else (11,):
        # a cell's centre in the picture: cv2.resize's pixel centres, 8 pixels a cell
        y, x = ((8 * _ROW + 4) / scale - 0.5, (8 * cell + 4) / scale - 0.5)
        image[(rows - y) ** 2 + (columns - x) ** 2 <= (2.5 / scale) ** 2] = 255
    return image
