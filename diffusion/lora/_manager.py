"""LoraManager: the LoRAs patched into a loaded pipeline's weights, changed between generations.

How the weights are patched and restored, and why:

- Patch on load: W' = W + sum over LoRAs of multiplier * alpha / rank * dW, written into the
  GPU parameter in place, so sampling runs the model unchanged at full speed (no low-rank
  term in the kernels).
- The sum is formed in float64 on the host from the layer's original values and rounded once
  to the parameter's dtype (float32, or float16 for half-precision pipelines: the WebUI
  patches in float32 and stores back in the weight's dtype; float64 only rounds less).
- The original values of the layers actually patched (and of no others) are kept on the host,
  in the parameter's dtype, until no LoRA patches that layer any more. Restoring writes them
  back, so removing LoRAs gives the original weights bit for bit; subtracting the update
  again would leave rounding residue in every patched weight. The cost is host memory the size
  of the patched layers (the WebUI keeps the same backup); the GPU never holds a second copy.
- Quantized weights (a GGUF UNet's) are merged the same way and quantized again
  (diffusion.lora._quantized says why that and not patching at dequantization); their original
  blocks are what is kept.
- `--int8` layers (gpustd.nn.int8_linear.Int8Weight) likewise: their int8 values plus the
  update, quantized again under the layer's smoothing; their original words and scales kept.
- `set` rewrites only the layers whose LoRAs or multipliers changed (the WebUI's
  `network_current_names` check), and checks every LoRA against the model before writing
  anything, so a bad file leaves the pipeline as it was.
- A weight whose buffer has a host copy (a memory mode's unit: gpustd.nn.offload) keeps the
  values written as its host copy: evicted later, even inside a capture, it reads nothing
  back (gpustd.nn.residency).
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Buffer
from gpustd import Tensor
from gpustd.nn.int8_linear import Int8Weight, int8_weights
from gpustd.nn.quantized import quantized_weights
from gpustd.quant import QuantizedTensor

from ._delta import add_update, fitted_shape
from ._dit_names import Part
from ._errors import LoraError
from ._file import COMPONENTS, LoraFile, LoraModule
from ._names import flat, name_table, part_table
from ._quantized import Blocks, merged, values

__all__ = ["MAX_MULTIPLIER", "LoraManager", "LoraUse"]

# |multiplier| above this is a typo (a seed pasted as a weight), not a style: refused.
MAX_MULTIPLIER = 100.0


@dataclass(frozen=True)
class LoraUse:
    """One LoRA as a generation uses it: `<lora:NAME:te_weight:unet_weight:dyn_dim>`; `name`
    is NAME as the prompt wrote it (a file name or an alias; None: the file's name)."""

    file: LoraFile
    te_weight: float = 1.0
    unet_weight: float = 1.0
    dyn_dim: int | None = None
    name: str | None = None

    @property
    def label(self) -> str:
        """The name infotext gives this LoRA: as the prompt wrote it, else the file's."""
        return self.name or self.file.name

    def multiplier(self, component: str) -> float:
        """The weight for a layer of `component`: the UNet's (a FLUX / SD3 transformer's),
        else the text encoders'."""
        return self.unet_weight if component in ("unet", "transformer") else self.te_weight


# What `set` accepts per LoRA: a LoraUse, or (file or path, te_weight, unet_weight[, dyn_dim]).
LoraSpec = LoraUse | Sequence[Any]
# (component, parameter key)
Target = tuple[str, str]
# One LoRA's contribution to one layer: (LoRA index in `set`, module, multiplier, dyn_dim)
Contribution = tuple[int, LoraModule, float, int | None]


class LoraManager:
    """Applies LoRAs to `pipe` (a StableDiffusion: its `unet`, `text_encoder` and, where it has
    one, `text_encoder_2`; for FLUX / SD3 an object whose `transformer` (and `unet`, kohya's
    name for it) is the transformer) and takes them off again, without reloading the model.

        loras = LoraManager(pipe)
        loras.set([("fluffy.safetensors", 0.8, 0.8), (other_lora_file, 1.0, 0.5)])
        pipe.txt2img(...)
        loras.set([])          # or loras.clear(): the original weights, bit for bit
    """

    def __init__(self, pipe: Any) -> None:
        self._models = {c: getattr(pipe, c) for c in COMPONENTS
                        if getattr(pipe, c, None) is not None}
        self._tables: dict[str, dict[str, tuple[str, tuple[int, ...]]]] = {}
        self._parts: dict[str, dict[str, list[Part]]] = {}
        self._pieces: dict[tuple[int, Part], tuple[LoraModule, LoraModule]] = {}
        self._parameters: dict[str, dict[str, Tensor | QuantizedTensor | Int8Weight]] = {}
        self._originals: dict[Target, Any] = {}  # the float values, or a quantized one's Blocks
        self._applied: dict[Target, tuple[Any, ...]] = {}
        self._files: dict[Path, tuple[tuple[int, int], LoraFile]] = {}
        self.active: tuple[LoraUse, ...] = ()

    def set(self, loras: Iterable[LoraSpec]) -> None:
        """Make exactly `loras` active (each a LoraUse, or (LoraFile or path, te_weight,
        unet_weight[, dyn_dim])), reverting every layer no longer patched. Raises LoraError
        (and changes nothing) for a file that does not fit the model or a multiplier that is
        not a finite number within +-MAX_MULTIPLIER."""
        uses = tuple(self._use(spec) for spec in loras)
        plan = self._plan(uses)
        for target in sorted(set(self._applied) | set(plan)):
            self._write(target, plan.get(target, []))
        self.active = uses

    def clear(self) -> None:
        """Remove every LoRA: the original weights back, bit for bit."""
        self.set([])

    def patched(self) -> list[str]:
        """"component:parameter" of every weight a LoRA currently changes (for debugging)."""
        return [f"{component}:{key}" for component, key in sorted(self._applied)]

    # -- planning -------------------------------------------------------------------------
    def _use(self, spec: LoraSpec) -> LoraUse:
        if not isinstance(spec, LoraUse):
            if len(spec) not in (3, 4):
                raise TypeError("each LoRA is a LoraUse or (file or path, te_weight, "
                                f"unet_weight[, dyn_dim]), got {spec!r}")
            source, te, unet, *dyn = spec
            file = source if isinstance(source, LoraFile) else self.load(source)
            spec = LoraUse(file, te, unet, dyn[0] if dyn else None)
        for what, value in (("text-encoder", spec.te_weight), ("UNet", spec.unet_weight)):
            if (isinstance(value, bool) or not isinstance(value, numbers.Real)
                    or not math.isfinite(value) or abs(value) > MAX_MULTIPLIER):
                raise LoraError(f"{spec.file.path}: {what} weight {value!r} must be a finite "
                                f"number within +-{MAX_MULTIPLIER:g} (1 is the LoRA as trained)")
        if spec.dyn_dim is not None and (isinstance(spec.dyn_dim, bool) or not isinstance(
                spec.dyn_dim, numbers.Integral) or spec.dyn_dim < 1):
            raise LoraError(f"{spec.file.path}: dyn_dim {spec.dyn_dim!r} must be a rank >= 1")
        return spec

    def load(self, path: str | os.PathLike[str]) -> LoraFile:
        """LoraFile.load, reusing an earlier parse (and hash) while the file is unchanged on
        disk."""
        path = Path(path)
        try:
            stat = path.stat()
        except OSError:
            raise LoraError(f"{path}: file not found") from None
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = self._files.get(path.resolve())
        if cached is None or cached[0] != stamp:
            cached = (stamp, LoraFile.load(path))
            self._files[path.resolve()] = cached
        return cached[1]

    def _plan(self, uses: Sequence[LoraUse]) -> dict[Target, list[Contribution]]:
        """Target -> the contributions to it, every module checked against the model."""
        plan: dict[Target, list[Contribution]] = {}
        for index, use in enumerate(uses):
            unmatched = []
            for module in use.file.modules.values():
                found = self._targets(use.file, module)
                if found is None:
                    unmatched.append(module.key)
                    continue
                for target, part in found:
                    plan.setdefault(target, []).append(
                        (index, part, use.multiplier(module.component), use.dyn_dim))
            if unmatched:
                raise LoraError(
                    f"{use.file.path}: {len(unmatched)} of its {len(use.file.modules)} layers are "
                    f"not in this model (e.g. {', '.join(map(repr, unmatched[:3]))}); the LoRA "
                    "was made for another model family (SD 1.x, SD 2.x, SDXL)")
        return plan

    def _targets(self, file: LoraFile, module: LoraModule
                 ) -> list[tuple[Target, LoraModule]] | None:
        """The parameters `module` patches, each with the module (or the part of a fused
        update) that patches it, shapes checked; None if the model lacks them."""
        component = module.component
        if component not in self._models:
            family = {"text_encoder_2": "SDXL (or SD3)", "transformer": "FLUX or SD3"}.get(
                component, "another model family")
            raise LoraError(f"{file.path}: patches {component} ({module.key!r}), which this "
                            f"pipeline does not have; it is a LoRA for {family}")
        table = self._tables.get(component)
        if table is None:
            model = self._models[component]
            table = self._tables[component] = name_table(component, model)
            self._parts[component] = part_table(component, model)
            self._parameters[component] = {**dict(model.named_parameters()),
                                           **quantized_weights(model), **int8_weights(model)}
        found = table.get(flat(module.name))
        if found is not None:
            if module.kind == "bias":
                return [self._bias(file, module, found[0])]
            fitted_shape(file.path, module, found[0], found[1])
            return [((component, found[0]), module)] + (
                [self._bias(file, module, found[0])] if "bias" in module.tensors else [])
        parts = self._parts[component].get(flat(module.name))
        if parts is None:
            return None
        targets = []
        for part in parts:
            key = f"{part.path}.weight"
            piece = self._piece(file, module, part)
            fitted_shape(file.path, piece, key, self._parameters[component][key].shape)
            targets.append(((component, key), piece))
        return targets

    def _bias(self, file: LoraFile, module: LoraModule, weight: str
              ) -> tuple[Target, LoraModule]:
        """The bias update (`diff_b`) `module` carries for the layer of parameter `weight`, as
        a "bias" module of its own (made once per module)."""
        key = weight.removesuffix(".weight") + ".bias"
        parameter = self._parameters[module.component].get(key)
        if parameter is None:
            raise LoraError(f"{file.path}: {module.key!r} updates the bias of "
                            f"{key.removesuffix('.bias')!r}, which has none in this model")
        part = Part(key)
        cached = self._pieces.get((id(module), part))
        if cached is None or cached[0] is not module:
            piece = module if module.kind == "bias" else LoraModule(
                module.component, module.name, module.key, "bias",
                {"bias": module.tensors["bias"]})
            cached = self._pieces[(id(module), part)] = (module, piece)
        fitted_shape(file.path, cached[1], key, tuple(parameter.shape))
        return (module.component, key), cached[1]

    def _piece(self, file: LoraFile, module: LoraModule, part: Part) -> LoraModule:
        """The LoRA of one layer cut from a fused layer's (its rows of `up`, halves swapped
        where the layer's are), made once per module so that it compares equal on reuse."""
        cached = self._pieces.get((id(module), part))
        if cached is not None and cached[0] is module:
            return cached[1]
        if module.kind != "lora" or {"mid", "bias", "dora_scale"} & set(module.tensors):
            raise LoraError(f"{file.path}: {module.key!r} patches a fused layer; only plain "
                            "LoRA (up/down) updates can be split over its parts")
        up = module.tensors["up"]
        if part.rows is not None:
            up = up[part.rows[0]:part.rows[1]]
        if part.swapped:
            half = up.shape[0] // 2
            up = np.concatenate([up[half:], up[:half]])
        piece = LoraModule(module.component, part.path, module.key, "lora",
                           {"down": module.tensors["down"], "up": up}, module.alpha,
                           module.rank_stabilized)
        self._pieces[(id(module), part)] = (module, piece)
        return piece

    # -- writing --------------------------------------------------------------------------
    def _write(self, target: Target, contributions: list[Contribution]) -> None:
        """Give `target` its original value plus `contributions` (unless it already has it)."""
        # LoraModules compare by identity: the same parse of the same file, same multipliers
        signature = tuple(contributions)
        if self._applied.get(target) == signature:
            return
        component, key = target
        tensor = self._parameters[component][key]
        if isinstance(tensor, QuantizedTensor):
            self._write_quantized(target, tensor, contributions)
            return
        if isinstance(tensor, Int8Weight):
            self._write_int8(target, tensor, contributions)
            return
        original = self._originals.get(target)
        if original is None:
            original = self._originals[target] = tensor.numpy()
        if not contributions:
            _write_kept(tensor, original)
            del self._originals[target], self._applied[target]
            return
        total = original.astype(np.float64)
        for _, module, multiplier, dyn_dim in contributions:
            add_update(total, module, multiplier, dyn_dim)
        _write_kept(tensor, total.astype(tensor.dtype))
        self._applied[target] = signature

    def _write_quantized(self, target: Target, weight: QuantizedTensor,
                         contributions: list[Contribution]) -> None:
        """`_write` for a quantized weight: original blocks kept, W + dW quantized again."""
        original = self._originals.get(target)
        if original is None:
            original = self._originals[target] = Blocks.of(weight)
        if not contributions:
            weight.replace(original.raw, original.format)
            del self._originals[target], self._applied[target]
            return
        total = values(original, weight.shape)
        for _, module, multiplier, dyn_dim in contributions:
            add_update(total, module, multiplier, dyn_dim)
        weight.replace(*merged(total, original.format))
        self._applied[target] = tuple(contributions)

    def _write_int8(self, target: Target, weight: Int8Weight,
                    contributions: list[Contribution]) -> None:
        """`_write` for an --int8 layer: its int8 values plus dW quantized again under its
        smoothing (the float weights were dropped as it was quantized); its original words and
        scales kept on the host (a byte a value) and written back when no LoRA patches it."""
        original = self._originals.get(target)
        if original is None:
            original = self._originals[target] = weight.raw()
        if not contributions:
            weight.replace(*original)
            del self._originals[target], self._applied[target]
            return
        total = weight.dequantize(original).astype(np.float64)
        for _, module, multiplier, dyn_dim in contributions:
            add_update(total, module, multiplier, dyn_dim)
        weight.replace(*weight.requantized(total))
        self._applied[target] = tuple(contributions)


def _write_kept(tensor: Tensor, values: np.ndarray) -> None:
    """Write `values` (owned here, never changed after) into `tensor`'s buffer, kept as its
    host copy where it had one (see the module doc)."""
    buffer = tensor.buffer
    if isinstance(buffer, Buffer):
        buffer.write(values, keep_host_copy=True)
    else:
        buffer.write(values)
