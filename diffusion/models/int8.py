"""W8A8 denoisers: a network's linear layers (attention projections, MLPs) given int8 weights
(gpustd.nn.int8_linear: per output channel, activations per token as they run), its convs,
norms, attention products, embedders and modulations left as they are.

`targets` says which layers: every gpustd.nn.Linear with a plain float weight below the
network's top level whose key has no part naming a norm, an embedder, a modulation or a
guidance network ("norm", "emb", "mod", "guidance": FLUX's `norm1.linear`, Qwen-Image's
`img_mod.1`, Z-Image's `adaLN_modulation`, Chroma's `distilled_guidance_layer`, the time and
text embedders), which set every token's scale and shift: their error would reach the whole
picture. diffusers' names, which our models share. A module's `float_linears` (names of its
Linear attributes) keeps those float: layers whose weights its forward reads itself (the
UNet's NCHW token projections in SDXL's transformers).
`calibrate` records the activations' largest magnitude per input channel over a run (the
first denoising step), what `quantize_linears` needs for SmoothQuant's smoothing.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from gpustd import Tensor
from gpustd.nn import Linear, Module, ModuleList
from gpustd.nn.int8_linear import ALPHA, quantize_weights
from gpustd.nn.offload import is_offloaded, offload, restore

__all__ = ["calibrate", "mark", "marked", "quantize_linears", "targets"]

_SKIPPED = ("norm", "emb", "mod", "guidance")
_MARKED: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


def _modules(owner: Any, prefix: str) -> Iterator[tuple[str, Any, Any]]:
    items: Any
    if isinstance(owner, (ModuleList, list, tuple)):
        items = ((str(i), m) for i, m in enumerate(owner))
    else:
        items = ((k, v) for k, v in vars(owner).items() if not k.startswith("_"))
    for name, value in items:
        if isinstance(value, Module) or (isinstance(value, (list, tuple)) and value
                                         and all(isinstance(m, Module) for m in value)):
            yield prefix + name, value, owner
            yield from _modules(value, f"{prefix}{name}.")


def targets(model: Any) -> list[tuple[str, Linear]]:
    """(key, layer) of the linear layers --int8 quantizes (see the module doc)."""
    return [(key, layer) for key, layer, owner in _modules(model, "")
            if type(layer) is Linear and type(layer.weight) is Tensor and "." in key
            and key.rsplit(".", 1)[-1] not in getattr(owner, "float_linears", ())
            and not any(skip in part for part in key.split(".") for skip in _SKIPPED)]


def calibrate(model: Any, run: Callable[[], Any]) -> dict[str, np.ndarray]:
    """{key: float32 [in]} the largest magnitude of each target layer's input per channel
    over `run()` (its inputs read back to the host: a calibration pass, not a fast one)."""
    found: dict[str, np.ndarray] = {}
    layers = targets(model)

    def recorder(key: str, layer: Linear) -> Callable[..., Tensor]:
        def forward(x: Tensor, **kwargs: Any) -> Tensor:
            peak = np.abs(x.numpy().astype(np.float32)).reshape(-1, x.shape[-1]).max(0)
            found[key] = np.maximum(found[key], peak) if key in found else peak
            return Linear.forward(layer, x, **kwargs)
        return forward

    for key, layer in layers:
        layer.forward = recorder(key, layer)  # type: ignore[method-assign]
    try:
        run()
    finally:
        for _, layer in layers:
            del layer.forward
    return found


def quantize_linears(model: Any, act_absmax: dict[str, np.ndarray] | None = None, *,
                     alpha: float = ALPHA) -> int:
    """Give `model`'s target layers int8 weights (SmoothQuant-smoothed where act_absmax, from
    calibrate, has the layer's key); returns how many. The float weights are dropped. Layers
    whose recorded ranges are equal (one input: attention's q, k and v) share one smoothing
    (quantize_weights), so that input is quantized once as it runs (nn.Linear.each)."""
    layers = targets(model)
    groups: dict[Any, list[Linear]] = {}
    ranges: dict[Any, np.ndarray | None] = {}
    for key, layer in layers:
        peak = (act_absmax or {}).get(key)
        tag = key if peak is None else np.asarray(peak, np.float32).tobytes()
        groups.setdefault(tag, []).append(layer)
        ranges[tag] = peak
    for tag, members in groups.items():
        # loaded to host memory for a memory mode (LoadOptions.offload): quantized on the GPU
        # one group at a time, the bias back to host memory after (the int8 weights stay)
        away = [layer for layer in members if is_offloaded(layer)]
        for layer in away:
            restore(layer)
        quantized = quantize_weights([layer.weight for layer in members],
                                     act_absmax=ranges[tag], alpha=alpha)
        for layer, weight in zip(members, quantized):
            layer.weight = weight  # type: ignore[assignment]
        for layer in away:
            offload(layer)
    return len(layers)


def mark(owner: Any, label: str) -> None:
    """Note that `owner` (a pipeline) denoises with W8A8 layers, `label` saying how (the
    infotext's "Int8" field: "W8A8", "W8A8 SmoothQuant")."""
    _MARKED[owner] = label


def marked(owner: Any) -> str | None:
    """The label `owner` was marked with, or None."""
    try:
        return _MARKED.get(owner)
    except TypeError:  # not weakly referable: never marked
        return None
