"""The configs of the diffusion transformers' ControlNets (FLUX.1's FluxControlNetModel, SD 3 /
3.5's SD3ControlNetModel, Z-Image's ZImageControlNetModel, Qwen-Image's
QwenImageControlNetModel) as users have them: a diffusers
folder (config.json + diffusion_pytorch_model.safetensors), or the one `.safetensors` file of
such a folder in `models/ControlNet`, with its config beside it (`NAME.json`, or a
`config.json` of the same folder naming the class) or, for FLUX, Z-Image and Qwen-Image
without one, read from the tensor shapes (FLUX.1's and Qwen-Image's rotary axes assumed;
Z-Image's: alibaba-pai's files, see `zimage_controlnet_config`)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import WeightsError
from ..weights import ComponentWeights

__all__ = ["DIT_CONTROLNETS", "QWEN_CONTROLNET", "ZIMAGE_CONTROLNET", "config_beside",
           "dit_controlnet_config", "zimage_controlnet_config"]

FLUX_CONTROLNET, SD3_CONTROLNET = "FluxControlNetModel", "SD3ControlNetModel"
ZIMAGE_CONTROLNET, QWEN_CONTROLNET = "ZImageControlNetModel", "QwenImageControlNetModel"
# their configs' _class_name
DIT_CONTROLNETS = (FLUX_CONTROLNET, SD3_CONTROLNET, ZIMAGE_CONTROLNET, QWEN_CONTROLNET)
_FLUX_KEYS = ("controlnet_x_embedder.weight", "controlnet_single_blocks.0.weight")
_SD3_KEY = "pos_embed_input.proj.weight"
_ZIMAGE_KEY = "control_all_x_embedder.2-1.weight"
_ZIMAGE_LAYERS = 30  # Z-Image's joint blocks, over which a file's control blocks spread


def dit_controlnet_config(path: Path, refs: Mapping[str, Any],
                          own: dict[str, Any] | None) -> dict[str, Any] | None:
    """The FluxControlNetModel / SD3ControlNetModel config of the ControlNet at `path`
    (`refs`: its tensors by diffusers' names with their shapes; `own`: a folder's
    config.json), None when it is neither."""
    if own is not None:
        return own if own.get("_class_name") in DIT_CONTROLNETS else None
    if _ZIMAGE_KEY in refs:
        return config_beside(path, ZIMAGE_CONTROLNET) or zimage_controlnet_config(
            refs, str(path))
    if "txt_norm.weight" in refs and "controlnet_x_embedder.weight" in refs:
        return config_beside(path, QWEN_CONTROLNET) or _qwen_config_from_shapes(refs,
                                                                                str(path))
    flux = any(key in refs for key in _FLUX_KEYS)
    if not flux and _SD3_KEY not in refs:
        return None
    config = config_beside(path, FLUX_CONTROLNET if flux else SD3_CONTROLNET)
    if config is not None:
        return config
    if not flux:
        raise WeightsError(f"{path}: an SD3 ControlNet file under diffusers' names needs its "
                           f"folder's config.json beside it, as {path.with_suffix('.json').name}")
    return _flux_config_from_shapes(refs, str(path))


def config_beside(path: Path, class_name: str) -> dict[str, Any] | None:
    """The config of the single file `path` found beside it (`NAME.json`, or the folder's
    config.json) whose `_class_name` is `class_name`; None when there is none."""
    for beside in (path.with_suffix(".json"), path.parent / "config.json"):
        if beside.is_file():
            try:
                config = json.loads(beside.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
                raise WeightsError(f"{beside}: cannot read it as JSON: {error}") from None
            if isinstance(config, dict) and config.get("_class_name") == class_name:
                return config
    return None


def _flux_config_from_shapes(refs: Mapping[str, Any], where: str) -> dict[str, Any]:
    def shape(name: str) -> tuple[int, ...]:
        if name not in refs:
            raise WeightsError(f"{where}: FLUX ControlNet tensor {name!r} is missing; the file "
                               "is incomplete, or give its config.json beside it")
        return tuple(refs[name].shape)

    def count(pattern: str) -> int:
        return len({m[1] for name in refs if (m := re.match(pattern, name))})

    dim, in_channels = shape("x_embedder.weight")
    head_dim = shape("transformer_blocks.0.attn.norm_q.weight")[0] if (
        "transformer_blocks.0.attn.norm_q.weight" in refs) else shape(
        "single_transformer_blocks.0.attn.norm_q.weight")[0]
    config: dict[str, Any] = {
        "_class_name": FLUX_CONTROLNET, "in_channels": in_channels,
        "num_layers": count(r"controlnet_blocks\.(\d+)\."),
        "num_single_layers": count(r"controlnet_single_blocks\.(\d+)\."),
        "attention_head_dim": head_dim, "num_attention_heads": dim // head_dim,
        "joint_attention_dim": shape("context_embedder.weight")[1],
        "pooled_projection_dim": shape("time_text_embed.text_embedder.linear_1.weight")[1],
        "guidance_embeds": "time_text_embed.guidance_embedder.linear_1.weight" in refs,
    }
    if "controlnet_mode_embedder.weight" in refs:
        config["num_mode"] = shape("controlnet_mode_embedder.weight")[0]
    if "input_hint_block.conv_in.weight" in refs:
        config["conditioning_embedding_channels"] = shape("input_hint_block.conv_out.weight")[0]
    if head_dim != 128:
        raise WeightsError(f"{where}: a FLUX ControlNet with {head_dim}-wide heads, not FLUX.1's "
                           "128: give its config.json beside it (its axes_dims_rope)")
    return config


def _qwen_config_from_shapes(refs: Mapping[str, Any], where: str) -> dict[str, Any]:
    """InstantX's Qwen-Image ControlNet config from its tensors (Qwen-Image's rotary axes,
    16 + 56 + 56, need 128-wide heads)."""
    dim, in_channels = tuple(refs["img_in.weight"].shape)
    norm = "transformer_blocks.0.attn.norm_q.weight"
    head_dim = int(refs[norm].shape[0]) if norm in refs else 0
    if head_dim != 128:
        raise WeightsError(f"{where}: a Qwen-Image ControlNet without Qwen-Image's 128-wide "
                           "heads: give its config.json beside it")
    blocks = len({m[1] for name in refs
                  if (m := re.match(r"transformer_blocks\.(\d+)\.", name))})
    return {"_class_name": QWEN_CONTROLNET, "in_channels": in_channels, "num_layers": blocks,
            "attention_head_dim": head_dim, "num_attention_heads": dim // head_dim,
            "joint_attention_dim": int(refs["txt_in.weight"].shape[1]),
            "extra_condition_channels": int(refs["controlnet_x_embedder.weight"].shape[1])
            - in_channels}


def zimage_controlnet_config(refs: Mapping[str, Any], where: str) -> dict[str, Any]:
    """The ZImageControlNetModel config of alibaba-pai's single file (Z-Image-Turbo-Fun-
    Controlnet-Union 1.0, 2.0, 2.1 and its lite forms), read from its tensors as diffusers'
    `from_single_file` tells them apart: refiner control blocks whose `before_proj` is not
    zero are 2.1's ("control_noise_refiner"), 15 or more control blocks without them 2.0's
    ("control_layers"; the file's refiner blocks are then unused), else 1.0's (plain refiner
    blocks). The control blocks follow every (30 / count)-th of Z-Image's 30 joint blocks
    (1.0: 0, 5, ..., 25; 2.x: 0, 2, ..., 28), the 2.x refiner residuals its two noise
    refiner blocks. `refs`: tensors by name with `.shape` (and TensorRefs, for the zero
    test)."""
    def count(pattern: str) -> int:
        return len({m[1] for name in refs if (m := re.match(pattern, name))})

    dim, width = tuple(refs[_ZIMAGE_KEY].shape)
    norm = "control_layers.0.attention.norm_q.weight"
    if norm not in refs or width % 4:
        raise WeightsError(f"{where}: not a Z-Image ControlNet file ({norm!r} missing, or an "
                           "input not of 2x2 patches); give its config.json beside it")
    blocks = count(r"control_layers\.(\d+)\.")
    refiners = count(r"control_noise_refiner\.(\d+)\.")
    if not 0 < blocks <= _ZIMAGE_LAYERS:
        raise WeightsError(f"{where}: {blocks} control blocks for Z-Image's {_ZIMAGE_LAYERS}; "
                           "give its config.json beside it")
    before = refs.get("control_noise_refiner.0.before_proj.weight")
    mode = ("control_noise_refiner" if before is not None and _nonzero(before) else
            "control_layers" if blocks >= 15 else None)
    head_dim = int(refs[norm].shape[0])
    return {"_class_name": ZIMAGE_CONTROLNET, "dim": dim, "n_heads": dim // head_dim,
            "n_kv_heads": dim // head_dim, "control_in_dim": width // 4,
            "control_layers_places": list(range(0, _ZIMAGE_LAYERS, _ZIMAGE_LAYERS // blocks))
            [:blocks], "control_refiner_layers_places": None if mode is None else [0, 1],
            "add_control_noise_refiner": mode, "n_refiner_layers": refiners or 2}


def _nonzero(ref: Any) -> bool:
    """Whether the tensor of a TensorRef holds anything but zeros."""
    return bool(np.any(ComponentWeights("probe", {}, {"t": ref})["t"]))
