"""Wan 2.2 Animate's transformer weights (models.wan_animate): a diffusers folder's
transformer/ (config.json and diffusion_pytorch_model*.safetensors, as WanAnimatePipeline
saves it), or Wan's original release (Wan2.2-Animate-14B's sharded
diffusion_pytorch_model-0000N-of-00004.safetensors, or one .safetensors file of them, bare
or under `model.diffusion_model.`), read lazily.

Original names become diffusers' as diffusers' `convert_wan_transformer_to_diffusers` renames
them: the Wan transformer's as models' WAN_RENAMES; the motion encoder's StyleGAN sequences
(`motion_encoder.enc.net_app.convs.N.conv2.1.weight`, its FusedLeakyReLU biases stored (1, C,
1, 1)) named and the blur kernels dropped (the model makes its own); the face adapter's
`fuser_blocks.N.linear1_kv` split into to_k and to_v rows. The config of an original release
comes from the tensor shapes, its head count from the release's own config.json (Wan's
`num_heads`), or Wan's 128-wide heads for a file alone."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import read_json, weight_refs
from ..formats.gguf_file import tensor_file
from ..weights import ComponentWeights, TensorRef, resolve_dtype
from .file import _derived, wan_name

__all__ = ["animate_refs", "load_wan_animate_transformer"]

_PREFIX = "model.diffusion_model."
_HEAD_DIM = 128
_CONV = re.compile(r"motion_encoder\.enc\.net_app\.convs\.(\d+)\.(?:(conv1|conv2|skip)\.)?"
                   r"(?:(\d+)\.)?(weight|bias|kernel)")
# (layer, index in its StyleGAN sequence, parameter) -> diffusers' name in res_blocks.N
_RES = {("conv1", "0", "weight"): "conv1.weight", ("conv1", "1", "bias"): "conv1.act_fn.bias",
        ("conv2", "1", "weight"): "conv2.weight", ("conv2", "2", "bias"): "conv2.act_fn.bias",
        ("skip", "1", "weight"): "conv_skip.weight"}
_FACE = {"linear1_q": "to_q", "linear2": "to_out", "q_norm": "norm_q", "k_norm": "norm_k"}


def _motion_conv(key: str, last: int) -> str | None:
    """diffusers' name of the original motion encoder conv tensor `key` (None: a blur kernel,
    dropped); `last` the index of conv_out in `convs`."""
    match = _CONV.fullmatch(key)
    if match is None:
        raise WeightsError(f"{key}: an unknown tensor of Wan Animate's motion encoder")
    index, layer, step, name = match.groups()
    if name == "kernel":
        return None
    if int(index) == 0:  # conv_in: its conv (0) and its FusedLeakyReLU (1)
        return "motion_encoder.conv_in." + ("weight" if name == "weight" else "act_fn.bias")
    if int(index) == last:
        return "motion_encoder.conv_out.weight"
    tail = _RES.get((layer or "", step or "", name))
    if tail is None:
        raise WeightsError(f"{key}: an unknown tensor of Wan Animate's motion encoder")
    return f"motion_encoder.res_blocks.{int(index) - 1}.{tail}"


def animate_refs(refs: dict[str, TensorRef]) -> dict[str, TensorRef]:
    """Refs under Wan's original names (prefix stripped) -> refs under diffusers' names."""
    convs = [int(m[1]) for key in refs
             if (m := re.match(r"motion_encoder\.enc\.net_app\.convs\.(\d+)\.", key))]
    last = max(convs, default=0)
    out: dict[str, TensorRef] = {}
    for key, ref in refs.items():
        if key.startswith("motion_encoder.enc.net_app."):
            name = _motion_conv(key, last)
            if name is not None:  # the FusedLeakyReLU biases come (1, C, 1, 1)
                out[name] = ref._replace(shape=(math.prod(ref.shape),)) if name.endswith(
                    "bias") else ref
        elif key == "motion_encoder.dec.direction.weight":
            out["motion_encoder.motion_synthesis_weight"] = ref
        elif key.startswith("motion_encoder.enc.fc."):
            out[key.replace("enc.fc.", "motion_network.")] = ref
        elif key.startswith("face_encoder."):
            out[key.replace(".conv.", ".")] = ref
        elif key.startswith("face_adapter.fuser_blocks."):
            _, _, block, layer, name = key.split(".")
            if layer == "linear1_kv":
                half = ref.shape[0] // 2
                for part, rows in (("to_k", (0, half)), ("to_v", (half, 2 * half))):
                    out[f"face_adapter.{block}.{part}.{name}"] = ref._replace(
                        rows=rows, shape=(half, *ref.shape[1:]))
            elif layer in _FACE:
                out[f"face_adapter.{block}.{_FACE[layer]}.{name}"] = ref
            else:
                raise WeightsError(f"{key}: an unknown tensor of Wan Animate's face adapter")
        else:
            out[wan_name(key)] = ref
    return out


def _count(refs: dict[str, TensorRef], prefix: str) -> int:
    found = {int(k[len(prefix):].split(".")[0]) for k in refs if k.startswith(prefix)}
    return max(found) + 1 if found else 0


def _config(refs: dict[str, TensorRef], where: str, heads: int | None) -> dict[str, Any]:
    """WanAnimateTransformer3DModel's config from the shapes of `refs` (diffusers' names),
    `heads` attention heads (None: Wan's 128-wide heads)."""
    try:
        layers = _count(refs, "blocks.")
        config = _derived(refs, layers)
        dim = config.pop("_dim")
        blocks = _count(refs, "motion_encoder.res_blocks.")
        size = 2 ** (blocks + 2)
        widths = [refs["motion_encoder.conv_in.weight"].shape[0]] + [
            refs[f"motion_encoder.res_blocks.{i}.conv2.weight"].shape[0] for i in range(blocks)]
        hidden = refs["face_encoder.conv2.weight"].shape[0]
        synthesis = refs["motion_encoder.motion_synthesis_weight"].shape
        config.update({
            "_class_name": "WanAnimateTransformer3DModel",
            "latent_channels": refs["pose_patch_embedding.weight"].shape[1],
            "motion_encoder_size": size,
            "motion_encoder_channel_sizes": {str(size >> i): w for i, w in enumerate(widths)},
            "motion_style_dim": refs["motion_encoder.conv_out.weight"].shape[0],
            "motion_dim": synthesis[1], "motion_encoder_dim": synthesis[0],
            "face_encoder_hidden_dim": hidden,
            "face_encoder_num_heads": refs["face_encoder.conv1_local.weight"].shape[0] // hidden,
            "inject_face_latents_blocks": layers // max(1, _count(refs, "face_adapter."))})
    except KeyError as missing:
        raise WeightsError(f"{where}: the Wan Animate transformer's tensor {missing} "
                           "(diffusers' name) is missing; the file is incomplete") from None
    heads = heads if heads and dim % heads == 0 else dim // _HEAD_DIM
    if dim % _HEAD_DIM and heads == dim // _HEAD_DIM:
        raise WeightsError(f"{where}: a Wan transformer {dim} wide, not a multiple of Wan's "
                           f"{_HEAD_DIM}-wide heads; give the folder with its config.json")
    config.update(num_attention_heads=heads, attention_head_dim=dim // heads)
    return config


def load_wan_animate_transformer(path: str | os.PathLike[str], *, dtype: Any = None,
                                 variant: str | None = None,
                                 config: Mapping[str, Any] | None = None) -> ComponentWeights:
    """Lazy WanAnimateTransformer3DModel weights of `path` (module docstring): a diffusers
    transformer/ folder, a folder of the original release's shards, or one .safetensors
    file. `dtype`: None (as stored; bfloat16 read as float32), "float16" or "float32";
    `config`: for a file, a `--base` folder's transformer/config.json, whose head count is
    taken where it divides the file's width (the rest always comes from the shapes).
    WeightsError naming the path when it holds no Wan Animate transformer. diffusers:
    `WanAnimateTransformer3DModel.from_pretrained(path)` (`from_single_file` for a file)."""
    path = Path(path)
    base = dict(config or {})
    found: dict[str, Any] | None = None
    if path.is_dir():
        refs, where = weight_refs(path, "diffusion_pytorch_model", variant)
        if (path / "config.json").is_file():
            found = read_json(path / "config.json")
    else:
        file = tensor_file(path)
        refs, where = {k: TensorRef(file, k, tuple(file.shape(k))) for k in file.keys()}, str(
            path)
    refs = {k.removeprefix(_PREFIX): ref for k, ref in refs.items()}
    original = "blocks.0.self_attn.q.weight" in refs
    if original:
        refs = animate_refs(refs)
    if "pose_patch_embedding.weight" not in refs or "face_adapter.0.to_q.weight" not in refs:
        raise WeightsError(f"{where}: no pose_patch_embedding and face_adapter tensors: not a "
                           "Wan Animate transformer")
    if original or found is None or found.get("_class_name") != \
            "WanAnimateTransformer3DModel":  # the original release's config.json is Wan's
        given = found or base
        found = _config(refs, where, given.get("num_heads") or given.get(
            "num_attention_heads"))
    return ComponentWeights("transformer", found, refs, dtype=resolve_dtype(dtype))
