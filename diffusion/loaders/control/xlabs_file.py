"""XLabs' FLUX.1 ControlNet files (`flux-canny-controlnet-v3.safetensors`, depth, hed: x-flux's
`ControlNetFlux`) under diffusers' FluxControlNetModel names, read lazily.

Their tensors are BFL's (`img_in`, `time_in.in_layer`, `double_blocks.N.img_attn.qkv`, ...)
plus `controlnet_blocks.N`, `pos_embed_input` (the control tokens' linear: diffusers'
`controlnet_x_embedder`) and `input_hint_block.{0,2,...,14}`, x-flux's `nn.Sequential` of
eight 3x3 convolutions with SiLUs between them (diffusers' ControlNetConditioningEmbedding:
`conv_in`, `blocks.0-5`, `conv_out`). The model has no single blocks; its config comes from
the shapes. diffusers converts such files the same way (its XLabs support:
`FluxControlNetModel(conditioning_embedding_channels=16)`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..errors import WeightsError
from ..flow.flux_file import BFL_RENAMES, double_block_refs
from ..keymaps.dit_keys import block_count
from ..weights import TensorRef

__all__ = ["is_xlabs_controlnet", "xlabs_controlnet"]

_HINT = "input_hint_block."
# x-flux's Sequential indices (the odd ones are its SiLUs) -> diffusers' hint block names
_HINT_CONVS = {0: "conv_in", 2: "blocks.0", 4: "blocks.1", 6: "blocks.2", 8: "blocks.3",
               10: "blocks.4", 12: "blocks.5", 14: "conv_out"}


def is_xlabs_controlnet(refs: Mapping[str, Any]) -> bool:
    """Whether the tensors (by their names in the file) are an XLabs FLUX ControlNet's."""
    return f"{_HINT}0.weight" in refs and "double_blocks.0.img_attn.qkv.weight" in refs


def xlabs_controlnet(refs: Mapping[str, TensorRef], where: str,
                     beside: Mapping[str, Any] | None = None
                     ) -> tuple[dict[str, TensorRef], dict[str, Any]]:
    """(refs under diffusers' names, the FluxControlNetModel config) of an XLabs file whose
    tensors are `refs`: read from the shapes, FLUX.1's rotary axes, updated by `beside` (a
    config given with the file). WeightsError naming `where` when a tensor is missing or the
    heads are not FLUX.1's and no config gives their rotary axes."""
    file = next(iter(refs.values())).file

    def ref(name: str) -> TensorRef:
        if name not in refs:
            raise WeightsError(f"{where}: XLabs FLUX ControlNet tensor {name!r} is missing; "
                               "the file is incomplete")
        return refs[name]

    dim, in_channels = ref("img_in.weight").shape
    head_dim = ref("double_blocks.0.img_attn.norm.query_norm.scale").shape[0]
    doubles = block_count(file, "", "double_blocks.")
    out: dict[str, TensorRef] = {}
    for parameter in ("weight", "bias"):
        for source, target in BFL_RENAMES.items():
            if source.startswith(("final_layer", "guidance_in")) and (
                    f"{source}.{parameter}" not in refs):
                continue  # a ControlNet has no final layer; schnell's, no guidance
            out[f"{target}.{parameter}"] = ref(f"{source}.{parameter}")
        out[f"controlnet_x_embedder.{parameter}"] = ref(f"pos_embed_input.{parameter}")
        for index, name in _HINT_CONVS.items():
            out[f"input_hint_block.{name}.{parameter}"] = ref(f"{_HINT}{index}.{parameter}")
        for i in range(doubles):
            out[f"controlnet_blocks.{i}.{parameter}"] = ref(f"controlnet_blocks.{i}.{parameter}")
    for i in range(doubles):
        out.update(double_block_refs(file, "", i, dim))
    beside = dict(beside or {})
    if head_dim != 128 and "axes_dims_rope" not in beside:
        raise WeightsError(f"{where}: an XLabs FLUX ControlNet with {head_dim}-wide heads, not "
                           "FLUX.1's 128: give its config (axes_dims_rope) beside it as a "
                           "FluxControlNetModel config.json")
    config = {
        "_class_name": "FluxControlNetModel", "in_channels": in_channels,
        "num_layers": doubles, "num_single_layers": 0,
        "attention_head_dim": head_dim, "num_attention_heads": dim // head_dim,
        "joint_attention_dim": ref("txt_in.weight").shape[1],
        "pooled_projection_dim": ref("vector_in.in_layer.weight").shape[1],
        "guidance_embeds": "guidance_in.in_layer.weight" in refs,
        "conditioning_embedding_channels": ref(f"{_HINT}14.weight").shape[0],
    }
    return out, {**config, **beside}
