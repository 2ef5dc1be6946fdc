"""FLUX.2 dev's files as people download them, written from a tiny Flux2Pipeline: Black Forest
Labs' transformer (bf16), ComfyUI's mixed fp8 one (float8 matrices each with a
`weight_scale` and a `comfy_quant` marker, the rest bf16), ComfyUI's Mistral Small 3.1 text
encoder (`model.` the language model beside `vision_tower.`, `multi_modal_projector.` and the
`tekken_model` tokenizer blob; bf16, or the older scaled fp8 with `scale_weight` and the
`scaled_fp8` marker). `exact_for_files` first rounds the pipeline's weights to what those
files hold (float8 at power-of-two scales, which bf16 holds exactly), so that every file gives
the folder's picture bitwise."""

from __future__ import annotations

import json
import math
from typing import Any

from flux2_tiny import bfl_layout


def _float8(tensor: Any) -> tuple[Any, Any]:
    """(float8 values, float32 power-of-two scale) of a matrix."""
    import torch

    top = float(tensor.abs().max())
    scale = torch.tensor(2.0 ** math.ceil(math.log2(top / 448)) if top else 1.0)
    return (tensor.float() / scale).to(torch.float8_e4m3fn), scale


def _held(file: dict[str, Any]) -> dict[str, Any]:
    """The float32 values a file of `_float8` matrices (and bf16 rest) holds."""
    held = {}
    for key, value in file.items():
        if key.endswith((".weight_scale", ".scale_weight", ".comfy_quant")) or key in (
                "scaled_fp8", "tekken_model"):
            continue
        layer = key.removesuffix(".weight")
        scale = file.get(layer + ".weight_scale", file.get(layer + ".scale_weight"))
        held[key] = value.float() * scale if scale is not None else value.float()
    return held


def fp8_mixed(layout: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI's mixed-precision layout (flux2_dev_fp8mixed): 2-D weights float8 with a
    `weight_scale` and a `comfy_quant` JSON marker each, the rest bf16."""
    import torch

    out = {}
    for key, value in layout.items():
        if value.ndim == 2:
            out[key], out[key.removesuffix("weight") + "weight_scale"] = _float8(value)
            marker = json.dumps({"format": "float8_e4m3fn"}).encode()
            out[key.removesuffix("weight") + "comfy_quant"] = torch.tensor(list(marker),
                                                                          dtype=torch.uint8)
        else:
            out[key] = value.to(torch.bfloat16)
    return out


def scaled_fp8(state: dict[str, Any]) -> dict[str, Any]:
    """ComfyUI's older scaled layout: 2-D weights but the embedding float8 with a
    `scale_weight` each, the `scaled_fp8` marker, the rest bf16."""
    import torch

    out: dict[str, Any] = {"scaled_fp8": torch.empty(0, dtype=torch.float8_e4m3fn)}
    for key, value in state.items():
        if value.ndim == 2 and "embed_tokens" not in key:
            out[key], out[key.removesuffix("weight") + "scale_weight"] = _float8(value)
        else:
            out[key] = value.to(torch.bfloat16)
    return out


def comfy_mistral(text_encoder: Any) -> dict[str, Any]:
    """A Mistral3ForConditionalGeneration's tensors as ComfyUI's mistral_3_small_flux2 file
    names them (no lm_head), bf16."""
    import torch

    out = {}
    for key, value in text_encoder.state_dict().items():
        if key.startswith("lm_head."):
            continue
        key = key.replace("model.language_model.", "model.").replace(
            "model.vision_tower.", "vision_tower.").replace(
            "model.multi_modal_projector.", "multi_modal_projector.")
        out[key] = value.detach().to(torch.bfloat16).contiguous()
    out["tekken_model"] = torch.tensor(list(b'{"vocab": []}'), dtype=torch.uint8)
    return out


def exact_for_files(pipe: Any) -> dict[str, dict[str, Any]]:
    """Round `pipe`'s transformer and text encoder in place to what their files hold and
    return the files' tensors: "transformer" (bf16, BFL's names under
    model.diffusion_model.), "transformer_fp8" (fp8_mixed), "mistral" (ComfyUI's, bf16),
    "mistral_fp8" (scaled_fp8 of it)."""
    import torch
    from diffusers.loaders.single_file_utils import (
        convert_flux2_transformer_checkpoint_to_diffusers,
    )

    prefix = "model.diffusion_model."
    mixed = fp8_mixed(bfl_layout(pipe.transformer, prefix))
    held = _held(mixed)
    converted = convert_flux2_transformer_checkpoint_to_diffusers(
        {k.removeprefix(prefix): v.clone() for k, v in held.items()})
    pipe.transformer.load_state_dict(converted, strict=True)
    language = comfy_mistral(pipe.text_encoder)
    scaled = scaled_fp8({k: v for k, v in language.items() if k.startswith("model.")})
    values = _held(scaled)
    with torch.no_grad():
        for key, value in pipe.text_encoder.state_dict().items():
            mine = key.replace("model.language_model.", "model.")
            if mine in values:
                value.copy_(values[mine])
            elif not key.startswith("lm_head."):
                value.copy_(value.to(torch.bfloat16).float())
    files = {"transformer": {k: v.to(torch.bfloat16).contiguous() for k, v in held.items()},
             "transformer_fp8": mixed}
    language = comfy_mistral(pipe.text_encoder)
    files["mistral"] = language
    files["mistral_fp8"] = {**scaled, **{k: v for k, v in language.items()
                                         if not k.startswith("model.")}}
    return files
