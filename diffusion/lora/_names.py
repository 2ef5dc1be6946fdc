"""Which model parameter a LoRA module patches: lookup tables built from the loaded model.

Every spelling a LoRA file uses for a layer becomes one "flat" name, dots replaced by
underscores, the way kohya writes them (`down_blocks_0_attentions_0_transformer_blocks_0_attn1_
to_q`); the table maps each flat name the model can have to the parameter key (`down_blocks.0.
attentions.0.transformer_blocks.0.attn1.to_q.weight`). Underscores inside names
(`transformer_blocks`, `to_out`) make flat names impossible to split back into a path, so the
model's own names are flattened instead and looked up.

Spellings in the table:
- UNet: diffusers' module paths, and the original LDM paths kohya's older scripts and the WebUI
  use (`input_blocks_1_1_proj_in`, `middle_block_0_in_layers_2`, `output_blocks_3_0_...`).
- text encoders (the CLIP ones a pipeline offers: SD's, SDXL's two, FLUX.1's CLIP-L, SD3's
  two): the model's own paths, and the same behind `text_model.` (transformers'
  `text_model.encoder.layers.N...`, kohya's and diffusers' spelling).
- a DiT transformer (a flow or video model's): diffusers' module paths; for FLUX.1, SD3,
  Z-Image, Wan, Krea 2, HunyuanVideo and HunyuanImage 2.1 also their original checkpoints'
  paths, which kohya's, ComfyUI's and musubi-tuner's LoRAs use (BFL's, Stability's,
  Z-Image's, Wan's, Krea 2's, Tencent's: `_dit_names.dit_aliases`). Those that patch one
  layer whole are in `name_table`; a fused projection split over several layers (FLUX.1's
  and SD3's qkv, FLUX.1's single-block linear1, Z-Image's attention qkv) or an adaLN with
  swapped halves is in `part_table`.
Weights patched: every linear (2-D), conv (4-D) and norm (1-D, LyCORIS's `w_norm`) weight,
GGUF-quantized and --int8 ones too.
"""

from __future__ import annotations

import re
from typing import Any, Protocol, cast

from gpustd import Tensor
from gpustd.nn import Module
from gpustd.nn.int8_linear import Int8Weight, int8_weights
from gpustd.nn.quantized import quantized_weights
from gpustd.quant import QuantizedTensor

from ._dit_names import Part, dit_aliases

__all__ = ["flat", "name_table", "part_table"]

# diffusers resnet layer -> LDM ResBlock layer (the inverse of the single-file loader's table)
_LDM_RESNET = {"norm1": "in_layers.0", "conv1": "in_layers.2", "norm2": "out_layers.0",
               "conv2": "out_layers.3", "time_emb_proj": "emb_layers.1",
               "conv_shortcut": "skip_connection"}
_LDM_FIXED = {"conv_in": "input_blocks.0.0", "time_embedding.linear_1": "time_embed.0",
              "time_embedding.linear_2": "time_embed.2", "conv_norm_out": "out.0",
              "conv_out": "out.2"}


class _Configured(Protocol):
    """A model with its diffusers config (every UNet and transformer LoRAs patch)."""

    config: dict[str, Any]


def flat(name: str) -> str:
    """A module path as kohya flattens it: dots become underscores."""
    return name.replace(".", "_")


def _patchable(model: Module) -> dict[str, tuple[int, ...]]:
    """Module path -> weight shape of every linear (2-D), conv (4-D) and norm (1-D: LyCORIS's
    `w_norm`) weight."""
    weights: dict[str, Tensor | QuantizedTensor | Int8Weight] = {  # GGUF's, --int8's too
        **dict(model.named_parameters()), **quantized_weights(model), **int8_weights(model)}
    return {key.removesuffix(".weight"): tuple(tensor.shape)
            for key, tensor in weights.items()
            if key.endswith(".weight") and len(tensor.shape) in (1, 2, 4)}


def _resnet_part(rest: str) -> str:
    head, _, tail = rest.partition(".")
    return f"{_LDM_RESNET.get(head, head)}.{tail}" if tail else _LDM_RESNET.get(head, head)


def ldm_path(path: str, layers_per_block: int, up_has_attention: list[bool]) -> str | None:
    """The original LDM UNet path of diffusers module `path` (None where LDM has no such
    module). Input blocks count conv_in, then per level `layers_per_block` resnets and a
    downsampler; output blocks `layers_per_block + 1` resnets per level, the upsampler last
    (after the attention where the level has one)."""
    if path in _LDM_FIXED:
        return _LDM_FIXED[path]
    per_level = layers_per_block + 1
    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions|downsamplers)\.(\d+)\.(.+)",
                         path):
        level, kind, rest = int(m[1]), m[2], m[4]
        if kind == "downsamplers":
            return f"input_blocks.{(level + 1) * per_level}.0.op" if rest == "conv" else None
        index = 1 + level * per_level + int(m[3])
        return (f"input_blocks.{index}.0.{_resnet_part(rest)}" if kind == "resnets"
                else f"input_blocks.{index}.1.{rest}")
    if m := re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", path):
        if m[1] == "attentions":
            return f"middle_block.1.{m[3]}"
        return f"middle_block.{2 * int(m[2])}.{_resnet_part(m[3])}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions|upsamplers)\.(\d+)\.(.+)", path):
        level, kind, rest = int(m[1]), m[2], m[4]
        if kind == "upsamplers":
            slot = 2 if up_has_attention[level] else 1
            return (f"output_blocks.{level * per_level + layers_per_block}.{slot}.conv"
                    if rest == "conv" else None)
        index = level * per_level + int(m[3])
        return (f"output_blocks.{index}.0.{_resnet_part(rest)}" if kind == "resnets"
                else f"output_blocks.{index}.1.{rest}")
    return None


def _unet_aliases(unet: Any, paths: list[str]) -> dict[str, str]:
    """LDM flat name -> diffusers path, for a UNet whose levels all have the same number of
    layers (every SD 1.x/2.x UNet); empty otherwise."""
    layers = unet.config.get("layers_per_block", 2)
    if not isinstance(layers, int):
        return {}
    up_attention = [kind.startswith("CrossAttn") for kind in unet.config["up_block_types"]]
    aliases = {}
    for path in paths:
        if (ldm := ldm_path(path, layers, up_attention)) is not None:
            aliases[flat(ldm)] = path
    return aliases


def name_table(component: str, model: Module) -> dict[str, tuple[str, tuple[int, ...]]]:
    """Flat name -> (parameter key, shape) for every weight of `model` a LoRA can patch."""
    shapes = _patchable(model)
    table = {flat(path): path for path in shapes}
    if component == "unet" and "up_block_types" in cast(_Configured, model).config:
        table.update(_unet_aliases(model, list(shapes)))
    elif component in ("unet", "transformer"):  # a DiT: its original checkpoint's names too
        table.update({name: parts[0].path for name, parts in dit_aliases(model, shapes).items()
                      if parts == [Part(parts[0].path)]})
    else:
        table.update({"text_model_" + flat(path): path for path in shapes})
    return {name: (f"{path}.weight", shapes[path]) for name, path in table.items()}


def part_table(component: str, model: Module) -> dict[str, list[Part]]:
    """Flat name -> parts, for the original names (FLUX.1, SD3, Z-Image) that patch several
    layers or a layer with swapped halves (the rest are in `name_table`)."""
    if component not in ("unet", "transformer"):
        return {}
    return {name: parts for name, parts in dit_aliases(model, _patchable(model)).items()
            if parts != [Part(parts[0].path)]}
