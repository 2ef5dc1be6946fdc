"""ControlNet and T2I-Adapter models on the GPU from what people share: a diffusers folder
(config.json + diffusion_pytorch_model[.fp16].safetensors), one `.safetensors` file under
diffusers' names (the SDXL ControlNets), or lllyasviel's original single files
(`control_v11p_sd15_canny.safetensors`: `control_model.*` keys, the LDM UNet's names);
T2I-Adapters as diffusers folders or single files (diffusion.loaders.control.t2i_adapter_file).

    controlnet = load_controlnet("control_v11p_sd15_canny.safetensors", device=device)
    adapter = load_t2i_adapter("t2i-adapter-canny-sdxl-1.0", device=device)

An original file carries no config: it is read from the tensor shapes as diffusers'
`convert_controlnet_checkpoint` and its SD 1.5 / 2.1 configs give it (8 heads on SD 1.x,
64-wide heads when the context is 1024 wide, SD 2.x, or the model is SDXL).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, FeatureError, as_dtype, default_device
from gpustd.nn import StateDictError, deferred

from ...models.controlnet import ControlNetModel
from ...models.controlnet_union import ControlNetUnionModel
from ...models.flux_controlnet import FluxControlNetModel
from ...models.qwen_image_controlnet import QwenImageControlNetModel
from ...models.sd3_controlnet import SD3ControlNetModel
from ...models.t2i_adapter import T2IAdapter
from ...models.z_image_controlnet import ZImageControlNetModel
from ..errors import WeightsError
from ..formats.diffusers_folder import read_json, weight_refs
from ..formats.torch_file import open_weights_file
from ..keymaps.ldm_keys import ldm_unet_layout, unet_name
from ..weights import ComponentWeights, TensorFile, TensorRef, resolve_dtype
from .dit_controlnet_file import DIT_CONTROLNETS, config_beside, dit_controlnet_config
from .t2i_adapter_file import t2i_adapter_from_file
from .xlabs_file import is_xlabs_controlnet, xlabs_controlnet

__all__ = ["controlnet_weights", "load_controlnet", "load_t2i_adapter", "t2i_adapter_weights"]

_PREFIX = "control_model."
_STEM = "diffusion_pytorch_model"
_UNION = "ControlNetUnionModel"
_CONTROL_FIXED = {"middle_block_out.0": "controlnet_mid_block",
                  "input_hint_block.0": "controlnet_cond_embedding.conv_in"}


def _ldm_control_name(name: str, layers: int, last_hint: int) -> str | None:
    """diffusers' name of an original ControlNet tensor (`control_model.` stripped)."""
    module, _, param = name.rpartition(".")
    if module in _CONTROL_FIXED:
        return f"{_CONTROL_FIXED[module]}.{param}"
    if m := re.fullmatch(r"zero_convs\.(\d+)\.0", module):
        return f"controlnet_down_blocks.{m[1]}.{param}"
    if m := re.fullmatch(r"input_hint_block\.(\d+)", module):
        index = int(m[1])  # convs at even indices, SiLUs between them
        if index == last_hint:
            return f"controlnet_cond_embedding.conv_out.{param}"
        return f"controlnet_cond_embedding.blocks.{index // 2 - 1}.{param}"
    return unet_name(name, layers)


def _original_refs(file: TensorFile) -> dict[str, TensorRef]:
    prefix = _PREFIX if any(k.startswith(_PREFIX) for k in file.keys()) else ""
    names = [k[len(prefix):] for k in file.keys() if k.startswith(prefix)]
    _, layers = ldm_unet_layout(names)
    hints = [int(m[1]) for n in names if (m := re.fullmatch(r"input_hint_block\.(\d+)\.weight",
                                                              n))]
    refs = {}
    for name in names:
        target = _ldm_control_name(name, layers, max(hints, default=-1))
        if target is not None:
            refs[target] = TensorRef(file, prefix + name, file.shape(prefix + name))
    return refs


def _config_from_shapes(refs: dict[str, TensorRef], where: str) -> dict[str, Any]:
    """diffusers' ControlNetModel config of converted original tensors `refs`."""
    def shape(name: str) -> tuple[int, ...]:
        if name not in refs:
            raise WeightsError(f"{where}: ControlNet tensor {name!r} (diffusers name) is "
                               "missing; the file is incomplete or not a ControlNet")
        return refs[name].shape

    levels = len({m[1] for n in refs if (m := re.match(r"down_blocks\.(\d+)\.", n))})
    channels = [shape(f"down_blocks.{i}.resnets.0.conv1.weight")[0] for i in range(levels)]
    attn = "mid_block.attentions.0."
    context = shape(attn + "transformer_blocks.0.attn2.to_k.weight")[1]
    hint = len({n for n in refs if re.fullmatch(r"controlnet_cond_embedding\.blocks\.\d+\."
                                                r"weight", n)})
    embed = [shape("controlnet_cond_embedding.conv_in.weight")[0]] + [
        shape(f"controlnet_cond_embedding.blocks.{2 * i + 1}.weight")[0]
        for i in range(hint // 2)]
    sdxl = "add_embedding.linear_1.weight" in refs
    config: dict[str, Any] = {
        "in_channels": shape("conv_in.weight")[1],
        "conditioning_channels": shape("controlnet_cond_embedding.conv_in.weight")[1],
        "conditioning_embedding_out_channels": embed,
        "block_out_channels": channels,
        "down_block_types": [
            "CrossAttnDownBlock2D" if f"down_blocks.{i}.attentions.0.proj_in.weight" in refs
            else "DownBlock2D" for i in range(levels)],
        "layers_per_block": len({m[1] for n in refs
                                 if (m := re.match(r"down_blocks\.0\.resnets\.(\d+)\.", n))}),
        "transformer_layers_per_block": [
            len({m[1] for n in refs if (m := re.match(
                rf"down_blocks\.{i}\.attentions\.0\.transformer_blocks\.(\d+)\.", n))}) or 1
            for i in range(levels)],
        "cross_attention_dim": context,
        "attention_head_dim": ([max(1, c // 64) for c in channels]
                               if context != 768 or sdxl else 8),
        "use_linear_projection": len(shape(attn + "proj_in.weight")) == 2,
        "upcast_attention": context == 1024,
    }
    if sdxl:
        width = shape("add_embedding.linear_1.weight")[1]
        config.update(addition_embed_type="text_time", addition_time_embed_dim=256,
                      projection_class_embeddings_input_dim=width)
    return config


def _open(path: Path, variant: str | None, kind: str) -> tuple[dict[str, TensorRef],
                                                                 dict[str, Any] | None, str]:
    """(refs, config or None, where) of a folder or one .safetensors / PyTorch file."""
    if path.is_dir():
        refs, where = weight_refs(path, _STEM, variant)
        if not (path / "config.json").is_file():
            raise WeightsError(f"{path}: no config.json; a diffusers {kind} folder has "
                               f"config.json and {_STEM}.safetensors")
        return refs, read_json(path / "config.json"), where
    if not path.is_file():
        raise WeightsError(f"{path}: no such {kind} file or folder")
    file = open_weights_file(path)  # lllyasviel's originals are .pth: read without running them
    return {k: TensorRef(file, k, file.shape(k)) for k in file.keys()}, None, str(path)


def controlnet_weights(path: str | os.PathLike[str], *, dtype: Any = None,
                       variant: str | None = None,
                       config: dict[str, Any] | None = None) -> ComponentWeights:
    """Lazy weights and config of the ControlNet at `path`. A diffusers-named single file has
    no config: pass its folder's `config` (diffusers: `from_single_file(path, config=...)`).
    A FLUX.1 or SD3 ControlNet's (diffusion.loaders.control.dit_controlnet_file) config names
    its class (`_class_name`).
    Raises WeightsError naming the file when it is missing, unreadable, or not a ControlNet."""
    path, dtype = Path(path), resolve_dtype(dtype)
    refs, own, where = _open(path, variant, "ControlNet")
    if own is None and is_xlabs_controlnet(refs):  # x-flux's file: BFL names, a hint block
        refs, xlabs = xlabs_controlnet(refs, where,
                                       config or config_beside(path, DIT_CONTROLNETS[0]))
        return ComponentWeights("controlnet", xlabs, refs, dtype=dtype)
    dit = dit_controlnet_config(path, refs, own) if config is None else (
        config if config.get("_class_name") in DIT_CONTROLNETS else None)
    if dit is not None:  # a DiT's (FLUX.1, SD3, Z-Image, Qwen-Image) under diffusers' names
        if dit.get("add_control_noise_refiner") == "control_layers":  # Z-Image 2.0's file
            refs = {k: v for k, v in refs.items() if not k.startswith("control_noise_refiner.")}
        return ComponentWeights("controlnet", dict(dit), refs, dtype=dtype)
    if "task_embedding" in refs:  # xinsir's ControlNet Union (SDXL)
        own = own or config_beside(path, _UNION)
        if own is None and config is None:
            raise WeightsError(f"{where}: a ControlNet Union file needs its folder's "
                               f"config.json beside it, as {path.with_suffix('.json').name}")
        # ProMax's file sits beside the 6-type config.json: its types are its table's rows
        types = refs["task_embedding"].shape[0]
        return ComponentWeights("controlnet", {**(config or own or {}), "_class_name": _UNION,
                                               "num_control_type": types}, refs, dtype=dtype)
    if own is None and "time_embedding.linear_1.weight" not in refs:
        refs = _original_refs(next(iter(refs.values())).file) if refs else {}
        if "controlnet_mid_block.weight" not in refs:
            raise WeightsError(f"{where}: not a ControlNet (no control_model.middle_block_out "
                               "or controlnet_mid_block tensor)")
        own = _config_from_shapes(refs, where)
    cfg = config or own
    if cfg is None:
        raise WeightsError(f"{where}: a ControlNet file under diffusers' names has no config; "
                           "pass config= (its folder's config.json) or use the folder")
    return ComponentWeights("controlnet", dict(cfg), refs, dtype=dtype)


def t2i_adapter_weights(path: str | os.PathLike[str], *, dtype: Any = None,
                        variant: str | None = None,
                        config: dict[str, Any] | None = None) -> ComponentWeights:
    """Lazy weights and config of the T2I-Adapter at `path`: a diffusers folder, or one file
    (TencentARC's original layout or diffusers' names; its config read from the shapes unless
    `config=` gives its folder's: diffusion.loaders.control.t2i_adapter_file)."""
    path, dtype = Path(path), resolve_dtype(dtype)
    refs, own, where = _open(path, variant, "T2I-Adapter")
    if own is None:
        refs, own = t2i_adapter_from_file(refs, where)
    return ComponentWeights("t2i_adapter", dict(config or own), refs, dtype=dtype)


def _build(model_type: Any, weights: ComponentWeights, path: Any, dtype: Any,
           device: Device | None, *, to_host: bool = False) -> Any:
    device = device or default_device()
    if as_dtype(dtype) == np.float16 and not device.has_f16:
        raise FeatureError("shader-f16", "float16 weights", device.info.label)
    try:
        with deferred(to_host):  # to_host: no GPU memory until (never) the values arrive
            model = model_type(weights.config, dtype=dtype, device=device)
    except ValueError as exc:
        raise WeightsError(f"{path}: {exc}") from None
    try:
        model.load_state_dict(weights, to_host=to_host)
    except StateDictError as exc:
        raise WeightsError(f"{path}: the tensors do not fit the config: {exc}") from None
    return model


def load_controlnet(path: str | os.PathLike[str], *, dtype: Any = np.float32,
                    device: Device | None = None, variant: str | None = None,
                    config: dict[str, Any] | None = None, to_host: bool = False
                    ) -> Any:
    """The ControlNet at `path` on `device`, weights in `dtype`: a UNet model's, FLUX.1's,
    SD3's, Z-Image's or Qwen-Image's. diffusers: `ControlNetModel.from_pretrained(path)` /
    `.from_single_file(path)`, `FluxControlNetModel.from_pretrained(path)`,
    `SD3ControlNetModel.from_pretrained(path)`, `ZImageControlNetModel.from_pretrained(path)`
    / `.from_single_file(path)` (alibaba-pai's file),
    `QwenImageControlNetModel.from_pretrained(path)` (InstantX's),
    `ControlNetUnionModel.from_pretrained(path)` (xinsir's SDXL Union: a folder, or its one
    .safetensors with the folder's config.json beside it). `to_host`: loaded tensor by tensor
    into host memory, never on the GPU, for a flow model's memory mode to place
    (FlowMemoryPlan.guests)."""
    weights = controlnet_weights(path, dtype=dtype, variant=variant, config=config)
    kinds: dict[str, Any] = {
        "FluxControlNetModel": FluxControlNetModel, "SD3ControlNetModel": SD3ControlNetModel,
        "ZImageControlNetModel": ZImageControlNetModel,
        "QwenImageControlNetModel": QwenImageControlNetModel, _UNION: ControlNetUnionModel}
    kind = kinds.get(weights.config.get("_class_name", ""), ControlNetModel)
    return _build(kind, weights, path, dtype, device, to_host=to_host)


def load_t2i_adapter(path: str | os.PathLike[str], *, dtype: Any = np.float32,
                     device: Device | None = None, variant: str | None = None,
                     config: dict[str, Any] | None = None) -> T2IAdapter:
    """The T2I-Adapter at `path` on `device`. diffusers: `T2IAdapter.from_pretrained(path)`."""
    weights = t2i_adapter_weights(path, dtype=dtype, variant=variant, config=config)
    return _build(T2IAdapter, weights, path, dtype, device)
