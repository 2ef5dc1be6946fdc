"""Diffusers folders of Qwen-Image (`QwenImagePipeline`, the edit models'
`QwenImageEditPipeline` / `QwenImageEditPlusPipeline`, and Qwen-Image-Layered's
`QwenImageLayeredPipeline`, read as Qwen-Image's: its 4-channel VAE's config says so):
transformer/
(QwenImageTransformer2DModel), text_encoder/ (transformers'
Qwen2_5_VLForConditionalGeneration, whose language model alone is read: its vision tower and
`lm_head` are left out), tokenizer/ (Qwen's tokenizer.json, or a slow Qwen2Tokenizer's
vocab.json and merges.txt), vae/ (AutoencoderKLQwenImage)
and scheduler/ (FlowMatchEulerDiscreteScheduler with a dynamic shift). An edit model's
text encoder gives its vision tower too (`vision`), and its processor/ the picture
preparation's sizes (`processor_config`, preprocessor_config.json).

Each component goes through the safetensors walk (`.fp16` variants, sharded
`.safetensors.index.json`) into lazy `ComponentWeights`; the models' own `load_state_dict`
checks the keys.

    weights = load_qwenimage_folder("Qwen-Image")
    transformer = QwenImageTransformer2DModel(weights.transformer.config)
    transformer.load_state_dict(weights.transformer)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import pipeline_class, pipeline_index, read_json
from ..formats.dit_folder import DIT_COMPONENTS, DiTWeights, dit_weights
from ..weights import ComponentWeights, TensorRef, resolve_dtype
from .file import qwenimage_edit_file_family, qwenimage_file_family

__all__ = ["QwenImageWeights", "language_model_config", "language_model_refs",
           "load_qwenimage_folder", "qwen_tokenizer", "qwenimage_edit_family",
           "qwenimage_family", "qwenimage_layered_family", "vision_refs"]

_CLASS = "QwenImagePipeline"
_LAYERED_CLASS = "QwenImageLayeredPipeline"
# the edit pipelines' classes and the families they load as
_EDIT_CLASSES = {"QwenImageEditPipeline": "qwen-image-edit",
                 "QwenImageEditPlusPipeline": "qwen-image-edit-plus"}
# where the language model's tensors sit in a Qwen2_5_VLForConditionalGeneration file
# (transformers 4's layout, then 5's)
# a ...ForConditionalGeneration's, its base model's (transformers 5 saves Qwen3VLModel's
# language model as `language_model.`)
_LANGUAGE_PREFIXES = ("model.language_model.", "model.", "language_model.")


@dataclass
class QwenImageWeights(DiTWeights):
    """A Qwen-Image folder's lazy component weights, its scheduler config and tokenizer
    folder."""

    vision: ComponentWeights | None = None  # an edit model's vision tower
    processor_config: dict[str, Any] | None = None  # an edit model's preprocessor_config

def qwenimage_family(path: str | os.PathLike[str]) -> str | None:
    """"qwen-image" for a diffusers folder whose model_index.json names a
    QwenImagePipeline or a Qwen-Image transformer file (`qwenimage_file_family`), None for
    anything else (a broken JSON file is left for loading to name)."""
    root = Path(path)
    if not root.is_dir():
        return qwenimage_file_family(root)
    return "qwen-image" if pipeline_class(root) == _CLASS else None


def qwenimage_edit_family(path: str | os.PathLike[str]) -> str | None:
    """"qwen-image-edit" / "qwen-image-edit-plus" for a diffusers folder whose
    model_index.json names a QwenImageEditPipeline / QwenImageEditPlusPipeline, or a
    transformer file whose name says so (`qwenimage_edit_file_family`), None for anything
    else."""
    root = Path(path)
    if not root.is_dir():
        return qwenimage_edit_file_family(root)
    return _EDIT_CLASSES.get(pipeline_class(root) or "")


def qwenimage_layered_family(path: str | os.PathLike[str]) -> str | None:
    """"qwen-image-layered" for a diffusers folder whose model_index.json names a
    QwenImageLayeredPipeline, None for anything else."""
    return "qwen-image-layered" if pipeline_class(Path(path)) == _LAYERED_CLASS else None


def vision_refs(refs: dict[str, Any]) -> dict[str, Any]:
    """The vision tower's tensors under its own names (`blocks.0.attn.qkv.weight`, ...)."""
    out = {}
    for key, ref in refs.items():
        for prefix in ("model.visual.", "visual."):
            if key.startswith(prefix):
                out[key.removeprefix(prefix)] = ref
                break
    return out


def language_model_config(config: dict[str, Any]) -> dict[str, Any]:
    """The language model's config of a Qwen2.5-VL config.json: its `text_config`
    (transformers 5), or the top level read as the text model's (transformers 4)."""
    text = config.get("text_config")
    if isinstance(text, dict) and text.get("hidden_size"):
        return {**text, "model_type": "qwen2_5_vl_text"}
    return {**config, "model_type": "qwen2_5_vl_text"}


def language_model_refs(refs: dict[str, Any]) -> dict[str, Any]:
    """The language model's tensors under their Qwen2 names (`layers.0.self_attn.q_proj.
    weight`, ...): the vision tower (`visual.`, `model.visual.`) and `lm_head.` left out."""
    out = {}
    for key, ref in refs.items():
        if "visual." in key or key.startswith("lm_head."):
            continue
        for prefix in _LANGUAGE_PREFIXES:
            if key.startswith(prefix):
                out[key.removeprefix(prefix)] = ref
                break
    return out


def qwen_tokenizer(folder: Path) -> Path:
    """`folder`, checked to hold Qwen's tokenizer (tokenizer.json, or a slow Qwen2Tokenizer's
    vocab.json and merges.txt); WeightsError naming what is missing otherwise."""
    slow = (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()
    if not (folder / "tokenizer.json").is_file() and not slow:
        raise WeightsError(f"{folder / 'tokenizer.json'}: required file is missing, and so "
                           "are vocab.json and merges.txt (the Qwen tokenizer the text encoder "
                           "reads prompts with)")
    return folder


def load_qwenimage_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                          variant: str | None = None, skip: tuple[str, ...] = ()
                          ) -> QwenImageWeights:
    """Lazy weights of the Qwen-Image diffusers folder `path`. `dtype`: None (as stored;
    bfloat16 read as float32), "float16" or "float32"; `variant`: e.g. "fp16"; `skip`:
    "transformer" and/or "text_encoder", left out (None; single files replace them, and the
    folder need not hold them). WeightsError naming the file or folder when it is not a
    Qwen-Image pipeline or a component is missing. An edit pipeline's folder also gives
    its vision tower and processor config."""
    root = Path(path)
    found = pipeline_class(root) if root.is_dir() else None
    edit = found in _EDIT_CLASSES
    own = found if edit or found == _LAYERED_CLASS else _CLASS
    pipeline_index(root, own,  # type: ignore[arg-type]
                   DIT_COMPONENTS + (("processor",) if edit else ()))
    extra: dict[str, Any] = {}

    def adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
              ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
        if name != "text_encoder":
            return config, refs
        if edit:
            vision = config.get("vision_config")
            if not isinstance(vision, dict):
                raise WeightsError(f"{root / name / 'config.json'}: no vision_config; an "
                                   "edit model's text encoder is Qwen2.5-VL with its "
                                   "vision tower")
            extra["vision"] = ComponentWeights("vision", vision, vision_refs(refs),
                                               dtype=resolve_dtype(dtype))
        return language_model_config(config), language_model_refs(refs)

    parts: dict[str, Any] = {**dit_weights(root, dtype=dtype, variant=variant, skip=skip,
                                           adapt=adapt), **extra}
    if edit:
        parts["processor_config"] = read_json(root / "processor" / "preprocessor_config.json")
    return QwenImageWeights(scheduler_config=read_json(root / "scheduler" /
                                                       "scheduler_config.json"),
                            tokenizer_dir=qwen_tokenizer(root / "tokenizer"),
                            **parts)  # type: ignore[arg-type]
