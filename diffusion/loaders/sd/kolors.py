"""Kolors' diffusers folders (`KolorsPipeline`, `KolorsImg2ImgPipeline`: Kwai-Kolors/
Kolors-diffusers; Kwai-Kolors/Kolors names StableDiffusionXLPipeline with a ChatGLMModel
text encoder): unet/ (SDXL's UNet with encoder_hid_proj, "text_proj"), vae/ (SDXL's),
text_encoder/ (ChatGLM3-6B as diffusers' ChatGLMModel: safetensors, an fp16 variant, or the
original repository's sharded pytorch_model-*.bin with its index), tokenizer/ (ChatGLM's
SentencePiece tokenizer.model) and scheduler/ (EulerDiscreteScheduler, 1100 training steps).
A Kolors UNet shared as one .safetensors file (Kwai's unet/ file, or a fine-tune under the LDM
names) runs with such a folder giving the rest.

    weights = load_kolors_folder("Kolors-diffusers", variant="fp16")
    weights.unet.config, weights.text_encoder["embedding.word_embeddings.weight"]
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import pipeline_class, pipeline_index, read_json, weight_refs
from ..formats.torch_file import open_weights_file
from ..keymaps.expected_keys import unet_keys, vae_keys
from ..keymaps.ldm_keys import UNET_PREFIX, unet_refs
from ..weights import ComponentWeights, TensorFile, TensorRef, require_keys, resolve_dtype

__all__ = ["KolorsWeights", "chatglm_keys", "kolors_family", "load_kolors_folder"]

_CLASSES = ("KolorsPipeline", "KolorsImg2ImgPipeline")
_COMPONENTS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler")


def _chatglm_folder(root: Path) -> bool:
    """Whether the folder's model_index.json names ChatGLMModel its text encoder (Kwai's
    original Kolors repository calls its pipeline StableDiffusionXLPipeline)."""
    try:
        entry = read_json(root / "model_index.json").get("text_encoder")
    except WeightsError:
        return False
    return isinstance(entry, list) and entry[-1:] == ["ChatGLMModel"]


def _hid_proj_key(file: TensorFile) -> str | None:
    """The key of a Kolors UNet file's encoder_hid_proj weight (diffusers' name, or under
    the LDM prefix as ComfyUI saves it), None for a file without one."""
    return next((key for key in ("encoder_hid_proj.weight",
                                 f"{UNET_PREFIX}encoder_hid_proj.weight") if key in file), None)


def kolors_family(path: str | os.PathLike[str]) -> str | None:
    """"kolors" for a diffusers folder whose model_index.json names a KolorsPipeline, a
    KolorsImg2ImgPipeline or a ChatGLMModel text encoder, or for a .safetensors file of a
    Kolors UNet (its encoder_hid_proj; run with a folder as its base); None otherwise (a
    broken file is left for loading to name)."""
    root = Path(path)
    if root.is_file() and root.suffix.lower() == ".safetensors":
        try:
            return "kolors" if _hid_proj_key(open_weights_file(root)) else None
        except (WeightsError, ValueError, OSError):
            return None
    if not root.is_dir() or not (root / "model_index.json").is_file():
        return None
    return "kolors" if pipeline_class(root) in _CLASSES or _chatglm_folder(root) else None


def _unet_file_refs(path: Path) -> tuple[dict[str, TensorRef], str]:
    """A Kolors UNet file's tensors under diffusers' names: as they are, or an LDM file's
    mapped as SDXL's (keymaps.ldm_keys) with its encoder_hid_proj."""
    file = open_weights_file(path)
    if _hid_proj_key(file) != f"{UNET_PREFIX}encoder_hid_proj.weight":
        return {key: TensorRef(file, key, file.shape(key)) for key in file.keys()}, str(path)
    refs = unet_refs(file)
    for param in ("weight", "bias"):
        key = f"{UNET_PREFIX}encoder_hid_proj.{param}"
        if key in file:
            refs[f"encoder_hid_proj.{param}"] = TensorRef(file, key, file.shape(key))
    return refs, str(path)


@dataclass(frozen=True)
class KolorsWeights:
    unet: ComponentWeights
    vae: ComponentWeights
    text_encoder: ComponentWeights
    scheduler_config: dict[str, Any]
    tokenizer_dir: Path


def chatglm_keys(config: dict[str, Any]) -> list[str]:
    """The tensors ChatGLMModel (diffusion.models.chatglm) loads for `config`."""
    keys = ["embedding.word_embeddings.weight"]
    parts = ["input_layernorm.weight", "self_attention.query_key_value.weight",
             "self_attention.dense.weight", "post_attention_layernorm.weight",
             "mlp.dense_h_to_4h.weight", "mlp.dense_4h_to_h.weight"]
    if config.get("add_qkv_bias") or config.get("add_bias_linear"):
        parts.append("self_attention.query_key_value.bias")
    if config.get("add_bias_linear"):
        parts += ["self_attention.dense.bias", "mlp.dense_h_to_4h.bias", "mlp.dense_4h_to_h.bias"]
    return keys + [f"encoder.layers.{i}.{part}" for i in range(int(config["num_layers"]))
                   for part in parts]


def _text_refs(folder: Path, variant: str | None) -> tuple[dict[str, TensorRef], str]:
    """text_encoder/'s tensors as diffusers names them (THUDM's `transformer.` prefix
    dropped): its safetensors, or the original release's pytorch_model.bin shards."""
    index = folder / "pytorch_model.bin.index.json"
    if not any(re.fullmatch(r"model.*\.(safetensors|json)", p.name) for p in folder.iterdir()
               ) and index.is_file():
        weight_map = read_json(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise WeightsError(f"{index}: no 'weight_map' object")
        files = {name: open_weights_file(folder / str(name)) for name in set(weight_map.values())}
        refs = {key: TensorRef(files[name], key, files[name].shape(key))
                for key, name in weight_map.items()}
        where = str(index)
    else:
        refs, where = weight_refs(folder, "model", variant)
    return {key.removeprefix("transformer."): ref for key, ref in refs.items()}, where


def _component(root: Path, name: str, variant: str | None, dtype: Any,
               unet_file: Path | None = None) -> ComponentWeights:
    path = root / name / "config.json"
    config = read_json(path)
    try:
        if name == "unet" and unet_file is not None:
            refs, where = _unet_file_refs(unet_file)
            expected = unet_keys(config)
        elif name == "text_encoder":
            refs, where = _text_refs(root / name, variant)
            expected = chatglm_keys(config)
        else:
            refs, where = weight_refs(root / name, "diffusion_pytorch_model", variant)
            expected = (unet_keys if name == "unet" else vae_keys)(config)
    except (KeyError, TypeError, ValueError) as error:
        raise WeightsError(f"{path}: bad or missing field {error}") from None
    return ComponentWeights(name, config, require_keys(name, refs, expected, where),
                            dtype=resolve_dtype(dtype))


def load_kolors_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                       variant: str | None = None,
                       unet_file: str | os.PathLike[str] | None = None) -> KolorsWeights:
    """Lazy weights of the Kolors folder `path`; `unet_file`: a Kolors UNet file (diffusers'
    or the LDM names) in place of the folder's unet/ weights, its config the folder's.
    `dtype`: None (as stored), "float16" or "float32"; `variant`: e.g. "fp16". WeightsError
    naming the file or folder where a part is missing or is not Kolors'."""
    root = Path(path)
    found = pipeline_class(root)
    named = found if found in _CLASSES or _chatglm_folder(root) else _CLASSES[0]
    pipeline_index(root, str(named), _COMPONENTS)
    text_config = read_json(root / "text_encoder" / "config.json")
    if text_config.get("model_type", "chatglm") != "chatglm":
        raise WeightsError(f"{root / 'text_encoder' / 'config.json'}: model_type "
                           f"{text_config.get('model_type')!r}; Kolors' text encoder is "
                           "ChatGLM3 (model_type chatglm)")
    unet = None if unet_file is None else Path(unet_file)
    parts = {name: _component(root, name, variant, dtype, unet)
             for name in ("unet", "vae", "text_encoder")}
    if parts["unet"].config.get("encoder_hid_dim_type") != "text_proj":
        raise WeightsError(f"{root / 'unet' / 'config.json'}: a Kolors UNet has "
                           "encoder_hid_dim_type 'text_proj' (ChatGLM's states projected)")
    return KolorsWeights(scheduler_config=read_json(root / "scheduler" / "scheduler_config.json"),
                         tokenizer_dir=root / "tokenizer", **parts)
