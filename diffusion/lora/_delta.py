"""The weight update of one LoRA / LoCon / LoHa module, in float64 on the host.

    LoRA:  dW = up @ down                      (reshaped for convs: a 3x3 LoCon down times a
                                                1x1 up is a 3x3 kernel)
    CP:    dW = einsum(mid, up, down)          (LoCon's `lora_mid`)
    LoHa:  dW = (w1a @ w1b) * (w2a @ w2b)      (elementwise product of two low-rank matrices)
    LoKr:  dW = kron(w1, w2)                   (each factor whole or a low-rank product; a
                                                conv's w2 a kernel, or flat as (out, in*k*k))
    full:  dW = diff

scaled by alpha / rank and the user's multiplier: W' = W + multiplier * alpha / rank * dW
(LoKr's rank: its low-rank factor's, w2's before w1's; none, so no alpha, where both factors
are whole; full: none). The same formulas as the WebUI's `lyco_helpers.py`
(`rebuild_conventional`, `rebuild_cp_decomposition`, `make_weight_cp`), its `network_lokr` and
`network_full`, Forge's (ComfyUI's) LoKr merge, and LyCORIS.

DoRA (a module with `dora_scale`, LyCORIS / kohya, or PEFT's `lora_magnitude_vector`): the
weight so far plus the update, V = W + alpha / rank * dW, is given the trained magnitudes per
input column (`dora_scale` (1, in)) or output row ((out, 1), PEFT's (out,)), and the
multiplier blends it in: W' = W + multiplier * (dora_scale * V / (||V|| + eps) - W), as the
WebUI's `apply_weight_decompose` and Forge's `weight_decompose` do (eps float32's). Forge
normalizes an output-row DoRA by ||W|| rather than ||V||; LyCORIS and PEFT, which train them,
by ||V||, as here. Several LoRAs on one layer apply in their order, each on the weight the ones
before it left, as Forge merges them.

The updates built from the weight itself (IA3, OFT, BOFT, GLoRA) are `_delta_weight`'s.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ._delta_weight import apply_to_weight, check_weight_fit
from ._errors import LoraError
from ._file import WEIGHT_KINDS, LoraModule

__all__ = ["add_update", "delta", "fitted_shape"]

_EPS = float(np.finfo(np.float32).eps)


def _low_rank(up: np.ndarray, down: np.ndarray, shape: tuple[int, ...],
              dyn_dim: int | None = None) -> np.ndarray:
    """up (out, r, ...) @ down (r, ...) as `shape`; `dyn_dim` keeps the first ranks only (the
    WebUI's `<lora:name:w:w:dyn>`)."""
    up, down = up.reshape(up.shape[0], -1), down.reshape(down.shape[0], -1)
    if dyn_dim is not None:
        up, down = up[:, :dyn_dim], down[:dyn_dim]
    return (up @ down).reshape(shape)


def _tucker(t: np.ndarray, wa: np.ndarray, wb: np.ndarray) -> np.ndarray:
    """LoHa's CP form: t (r, r, kh, kw) with wa (r, out) and wb (r, in) -> (out, in, kh, kw)."""
    return np.einsum("ijkl,jr,ip->prkl", t, wb, wa)


def _lokr_factor(t: dict[str, np.ndarray], which: str) -> np.ndarray:
    """LoKr factor `which` ("1" or "2"): whole, the CP form's kernel, or a low-rank pair's
    product flattened to (out, in * kh * kw) as Forge's merge flattens it."""
    if f"k{which}" in t:
        return t[f"k{which}"]
    a, b = t[f"k{which}a"], t[f"k{which}b"]
    if f"kt{which}" in t:
        return _tucker(t[f"kt{which}"], a, b)
    return a.reshape(a.shape[0], -1) @ b.reshape(b.shape[0], -1)


def _kron(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """kron(w1, w2), w1 given a conv kernel's 1 x 1 taps where w2 has taps (as the WebUI's
    `make_kron`)."""
    if second.ndim == 4:
        first = first.reshape(*first.shape, 1, 1)
    return np.kron(first, second)


def _natural(module: LoraModule, dyn_dim: int | None) -> np.ndarray:
    """The module's update dW in its own shape (`module.delta_shape`), unscaled."""
    t = {part: value.astype(np.float64) for part, value in module.tensors.items()}
    shape = module.delta_shape
    if module.kind == "full":
        return t["diff"]
    if module.kind == "lokr":
        return _kron(_lokr_factor(t, "1"), _lokr_factor(t, "2")).reshape(shape)
    if module.kind == "lora":
        if "mid" in t:
            up, down = t["up"].reshape(t["up"].shape[0], -1), t["down"].reshape(
                t["down"].shape[0], -1)
            return np.einsum("nmkl,in,mj->ijkl", t["mid"], up, down)
        return _low_rank(t["up"], t["down"], shape, dyn_dim)
    if "t1" in t:
        first = _tucker(t["t1"], t["w1a"], t["w1b"])
    else:
        first = _low_rank(t["w1a"], t["w1b"], shape)
    if "t2" in t:
        second = _tucker(t["t2"], t["w2a"], t["w2b"])
    else:
        second = _low_rank(t["w2a"], t["w2b"], shape)
    return first * second


def fitted_shape(path: Path, module: LoraModule, target: str,
                 shape: tuple[int, ...]) -> tuple[int, ...]:
    """Check that `module`'s update fits parameter `target` of `shape`; LoraError (naming the
    file, the key and both shapes) when it does not. Returns `shape`.

    Fits: the same number of elements (a linear update on a 1x1 conv and back, as the WebUI
    reshapes), or an inpainting UNet's conv_in whose 4 extra input channels the update leaves
    alone (the WebUI zero-pads them); an update built from the weight (`_delta_weight`): its
    own test.
    """
    if module.kind in WEIGHT_KINDS:
        check_weight_fit(path, module, target, shape)
        return shape
    natural = module.tensors["bias"].shape if module.kind == "bias" else module.delta_shape
    if math.prod(natural) == math.prod(shape) or _inpaint_pad(natural, shape):
        if "dora_scale" in module.tensors:
            _magnitudes(path, module, shape)
        return shape
    raise LoraError(f"{path}: {module.key!r} builds an update of shape {natural} for "
                    f"{module.component} parameter {target!r} of shape {shape}; this LoRA was "
                    "made for a different model (SD 1.x, SD 2.x and SDXL LoRAs do not mix)")


def _inpaint_pad(natural: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    return (len(natural) == 4 and len(shape) == 4 and natural[1] == 4 and shape[1] == 9
            and natural[0] == shape[0] and natural[2:] == shape[2:])


def delta(module: LoraModule, shape: tuple[int, ...], multiplier: float,
          dyn_dim: int | None = None) -> np.ndarray:
    """multiplier * alpha / rank * dW as float64 of `shape` (already checked by
    `fitted_shape`); a "bias" module's: multiplier * its bias update, unscaled (PEFT's
    `lora_B.bias` of diffusers' converted Wan LoRAs, whose alphas are folded in)."""
    if module.kind == "bias":
        return module.tensors["bias"].astype(np.float64).reshape(shape) * multiplier
    update = _natural(module, dyn_dim) * (multiplier * module.scale)
    if _inpaint_pad(update.shape, shape):
        update = np.pad(update, ((0, 0), (0, 5), (0, 0), (0, 0)))
    return update.reshape(shape)


def _magnitudes(path: Path | None, module: LoraModule, shape: tuple[int, ...]) -> np.ndarray:
    """`dora_scale` shaped to broadcast over a weight of `shape`: per output row where its
    first axis is the weight's (Forge's test), else per input column; LoraError if it fits
    neither."""
    scale = module.tensors["dora_scale"].astype(np.float64)
    ones = (1,) * (len(shape) - 2)
    if len(shape) >= 2 and scale.shape[0] == shape[0] and scale.size == shape[0]:
        return scale.reshape(shape[0], 1, *ones)
    if len(shape) >= 2 and scale.size == shape[1]:
        return scale.reshape(1, shape[1], *ones)
    raise LoraError(f"{path}: {module.key!r} has DoRA magnitudes of shape {scale.shape}, which "
                    f"fit neither the rows nor the columns of its layer's weight {shape}")


def add_update(total: np.ndarray, module: LoraModule, multiplier: float,
               dyn_dim: int | None = None) -> None:
    """Add `module`'s update at `multiplier` to `total` (float64, the layer's weight so far,
    changed in place): `delta`'s, DoRA's blend (module doc), or one built from the weight
    (`_delta_weight`)."""
    if module.kind in WEIGHT_KINDS:
        apply_to_weight(total, module, multiplier)
        return
    if "dora_scale" not in module.tensors:
        total += delta(module, total.shape, multiplier, dyn_dim)
        return
    merged = total + delta(module, total.shape, 1.0, dyn_dim)
    scale = _magnitudes(None, module, total.shape)
    axes = tuple(i for i in range(total.ndim) if scale.shape[i] == 1)
    norm = np.sqrt(np.sum(merged * merged, axis=axes, keepdims=True))
    total += multiplier * (scale * merged / (norm + _EPS) - total)
