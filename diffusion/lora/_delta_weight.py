"""The updates built from the layer's weight itself (LyCORIS IA3, OFT, BOFT, GLoRA), in float64
on the host. W is the weight so far (out, in[, kh, kw]); m the user's multiplier.

    IA3:   W' = W + m * W * w               (w one factor per output row, or per input column
                                             where the file's `on_input` is 1)
    OFT:   W' = W + m * (s * R^T W - W)     (R block-diagonal, one rotation per block of
                                             output rows; s `rescale` per row, 1 without)
    BOFT:  W' = W + m * (s * B W - W)       (B: a butterfly of block-diagonal rotations)
    GLoRA: W' = W + m * (W a2 a1 + b2 b1)   (linear layers)

IA3 is the WebUI's `network_ia3` (no alpha: it has no rank) on a linear layer; on a conv, w
scales the output (input) channels, as LyCORIS trains it (the WebUI's broadcast there fits only
1x1 kernels).

OFT and BOFT are the WebUI's `network_oft`, which reads kohya-ss's OFT and LyCORIS's diag-OFT
and BOFT (`oft_blocks`) and LyCORIS's older files (`oft_diag`, the rotations as stored). Each
block Q_k of `oft_blocks` gives a rotation by the Cayley transform R_k = (I + S)(I - S)^-1 of its
skew part S = Q_k - Q_k^T, after all the S are scaled down together to a Frobenius norm of at
most alpha * out (kohya's and LyCORIS's constraint; none without alpha or with 0). The
multiplier blends the rotated weight in linearly, as the WebUI (and kohya's and LyCORIS's diag
OFT, `m R + (1 - m) I`) applies it, so m = 1 is the file as trained and 0 the model. BOFT's
stages each permute the rows (groups of 2 x 2^i * n/2 rows interleaved), rotate blocks of n rows
by R (not transposed, as the WebUI's BOFT does), and permute back.

GLoRA is the WebUI's `network_glora`, in its layout (a1 (r, in), a2 (in, r), b1 (r, in),
b2 (out, r)) and its scale: 1, its alpha unused (Forge's merge scales by alpha / rank).

Several LoRAs on one layer apply in their order, each on the weight the ones before it left, as
the WebUI applies them.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ._errors import LoraError
from ._file import LoraModule

__all__ = ["apply_to_weight", "check_weight_fit"]


def _ia3_axis(module: LoraModule) -> int:
    """The weight's axis IA3's factors run along: 0 (rows), or 1 (columns) for `on_input`."""
    return 1 if module.tensors["on_input"].reshape(()) else 0


def _blocks(module: LoraModule) -> np.ndarray:
    t = module.tensors
    return t["oft_blocks"] if "oft_blocks" in t else t["oft_diag"]


def _oft_misfit(module: LoraModule, shape: tuple[int, ...]) -> str | None:
    """Why `module`'s rotations cannot turn a weight of `shape`, or None if they can."""
    blocks, out = _blocks(module), shape[0]
    count, size = blocks.shape[-3:-1]
    if count * size != out:
        return f"its {count} blocks of {size} rows do not cover the weight's {out} rows"
    stages = blocks.shape[0] if blocks.ndim == 4 else 0
    if stages and (size < 2 or any(out % (2 ** (i + 1) * (size // 2)) for i in range(stages))):
        return (f"its {stages} butterfly stages of {size}-row blocks do not divide "
                f"the weight's {out} rows")
    rescale = module.tensors.get("rescale")
    if rescale is not None and rescale.size != out:
        return f"its rescale has {rescale.size} factors for the weight's {out} rows"
    return None


def check_weight_fit(path: Path, module: LoraModule, target: str,
                     shape: tuple[int, ...]) -> None:
    """LoraError (naming the file, the key and both shapes) unless `module` fits parameter
    `target` of `shape`."""
    if len(shape) < 2:
        problem: str | None = "it updates linear and conv layers only"
    elif module.kind == "oft":
        problem = _oft_misfit(module, shape)
    elif module.kind == "glora":
        t = module.tensors
        fits = len(shape) == 2 and shape == (t["b2"].shape[0], t["b1"].shape[1])
        problem = None if fits else (f"read in the WebUI's GLoRA layout, it updates a "
                                     f"({t['b2'].shape[0]}, {t['b1'].shape[1]}) linear weight")
    else:
        axis, size = _ia3_axis(module), module.tensors["weight"].size
        where = "input columns" if axis else "output rows"
        problem = None if shape[axis] == size else f"it scales {size} {where}"
    if problem is not None:
        raise LoraError(f"{path}: {module.key!r} does not fit {module.component} parameter "
                        f"{target!r} of shape {shape}: {problem}; this LoRA was made for a "
                        "different model (SD 1.x, SD 2.x and SDXL LoRAs do not mix)")


def _rotations(module: LoraModule, out: int) -> np.ndarray:
    """The blocks' rotations R (blocks, n, n) (BOFT: (stages, blocks, n, n)) for a weight of
    `out` rows: `oft_diag` as stored, `oft_blocks` by the Cayley transform (module doc)."""
    blocks = _blocks(module).astype(np.float64)
    if "oft_blocks" not in module.tensors:
        return blocks
    skew = blocks - np.swapaxes(blocks, -1, -2)
    constraint = (module.alpha or 0.0) * out
    if constraint != 0:  # the WebUI's clamp, its 1e-8 kept
        norm = float(np.linalg.norm(skew))
        skew *= (min(norm, constraint) + 1e-8) / (norm + 1e-8)
    eye = np.eye(skew.shape[-1])
    return (eye + skew) @ np.linalg.inv(eye - skew)


def _rotated(weight: np.ndarray, module: LoraModule) -> np.ndarray:
    """The weight turned by `module`'s rotations (R^T per block; BOFT's butterfly) and
    rescaled per row."""
    out, rest = weight.shape[0], weight.shape[1:]
    rotations = _rotations(module, out)
    if rotations.ndim == 3:
        count, size = rotations.shape[:2]
        turned = np.einsum("knm,kn...->km...", rotations, weight.reshape(count, size, *rest))
        turned = turned.reshape(weight.shape)
    else:
        turned = weight
        count, size = rotations.shape[1:3]
        for stage, rotation in enumerate(rotations):
            group = 2 ** stage * (size // 2)
            rows = turned.reshape(-1, 2, group, *rest).swapaxes(1, 2).reshape(count, size, *rest)
            rows = np.einsum("dij,dj...->di...", rotation, rows)
            turned = rows.reshape(-1, group, 2, *rest).swapaxes(1, 2).reshape(weight.shape)
    if "rescale" in module.tensors:
        turned = turned * module.tensors["rescale"].astype(np.float64).reshape(
            out, *(1,) * len(rest))
    return turned


def apply_to_weight(total: np.ndarray, module: LoraModule, multiplier: float) -> None:
    """Apply `module` at `multiplier` to `total` (float64, the layer's weight so far, changed
    in place), as the module doc says."""
    t = module.tensors
    if module.kind == "oft":
        total += multiplier * (_rotated(total, module) - total)
        return
    if module.kind == "glora":
        a1, a2, b1, b2 = (t[part].astype(np.float64) for part in ("a1", "a2", "b1", "b2"))
        total += multiplier * (total @ a2 @ a1 + b2 @ b1)
        return
    axis = _ia3_axis(module)
    factors = t["weight"].astype(np.float64).reshape(
        [-1 if i == axis else 1 for i in range(total.ndim)])
    total += multiplier * total * factors
