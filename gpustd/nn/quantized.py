"""Quantized weights in a Module: a Linear or Conv2d weight replaced by a gpustd.quant
QuantizedTensor, which the layer dequantizes into a scratch tensor right before each GEMM or
convolution (`gpustd.quant.materialize`), or, for a Linear's Q8_0 / Q4_K / Q5_0 weight, that
the GEMM reads as it is (gpustd.nn.quantized_linear). Weight-only: activations, biases and
norms keep their dtype."""

from __future__ import annotations

from .._tensor import Tensor
from ..quant import QuantizedTensor
from .layers import Conv2d, Linear
from .module import Module, ModuleList

__all__ = ["quantized_weights", "set_quantized_weight"]


def _owner(module: Module, key: str) -> tuple[Module, str]:
    """The module holding parameter `key` ("down_blocks.0.resnets.1.conv1.weight") and the
    attribute name; KeyError naming the key when the path leads nowhere."""
    owner: object = module
    *path, attr = key.split(".")
    for part in path:
        if isinstance(owner, (ModuleList, list, tuple)) and part.isdigit():
            owner = owner[int(part)] if int(part) < len(owner) else None
        else:
            owner = getattr(owner, part, None)
        if owner is None:
            raise KeyError(f"{type(module).__name__} has no parameter {key!r}")
    return owner, attr  # type: ignore[return-value]


def set_quantized_weight(module: Module, key: str, weight: QuantizedTensor) -> None:
    """Replace the weight `key` of a Linear or Conv2d inside `module` by `weight` (same shape).
    The float parameter it replaces is dropped (its memory goes back to the device pool:
    `device.empty_pool()` returns it to the driver). torch has no equivalent; ComfyUI-GGUF's
    GGMLOps layers do this."""
    owner, attr = _owner(module, key)
    if attr != "weight" or not isinstance(owner, (Linear, Conv2d)):
        raise ValueError(f"{key}: only Linear and Conv2d weights can stay quantized, not "
                         f"{type(owner).__name__}.{attr}; load it as floats")
    current = getattr(owner, attr)
    if tuple(current.shape) != weight.shape:
        raise ValueError(f"{key}: the model's weight has shape {tuple(current.shape)}, the "
                         f"quantized one {weight.shape}")
    if isinstance(current, Tensor) and current.dtype != weight.dtype:
        raise ValueError(f"{key}: the model computes in {current.dtype}; dequantize to it "
                         f"(QuantizedTensor dtype={current.dtype}), not {weight.dtype}")
    setattr(owner, attr, weight)


def quantized_weights(module: Module, prefix: str = "") -> dict[str, QuantizedTensor]:
    """Every quantized weight under `module`, by state-dict key."""
    found: dict[str, QuantizedTensor] = {}
    for name, value in vars(module).items():
        if name.startswith("_"):
            continue
        if isinstance(value, QuantizedTensor):
            found[prefix + name] = value
        elif isinstance(value, Module):
            found.update(quantized_weights(value, f"{prefix}{name}."))
    if isinstance(module, ModuleList):
        for i, child in enumerate(module):
            found.update(quantized_weights(child, f"{prefix}{i}."))
    return found
