"""Diffusers folders of HunyuanImage 2.1 (`HunyuanImagePipeline`, the base and the distilled
checkpoints): transformer/ (HunyuanImageTransformer2DModel), vae/
(AutoencoderKLHunyuanImage, 32x, 64 channels), text_encoder/ (transformers'
Qwen2_5_VLForConditionalGeneration, whose language model alone is read), tokenizer/ (Qwen's),
text_encoder_2/ (ByT5's T5EncoderModel, the glyph encoder), tokenizer_2/ (ByT5Tokenizer's
config: its added tokens), scheduler/ (FlowMatchEulerDiscreteScheduler, a constant shift),
and the guiders' guider/ and ocr_guider/ guider_config.json (AdaptiveProjectedMixGuidance;
the distilled checkpoint has none: it embeds its guidance). Tencent's single transformer file
(`transformer.load_hunyuanimage_transformer`) is the family's too: such a folder gives it the
rest.

    weights = load_hunyuanimage_folder("HunyuanImage-2.1-Diffusers")
    weights.guider, weights.ocr_guider, weights.text_encoder_2.config
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import pipeline_class, pipeline_index, read_json, weight_refs
from ..formats.dit_folder import DiTWeights, dit_weights
from ..formats.safetensors import SafetensorsFile
from ..qwen_image.folder import language_model_config, language_model_refs, qwen_tokenizer
from ..weights import ComponentWeights, TensorRef, resolve_dtype
from .transformer import is_hunyuanimage_file, load_hunyuanimage_transformer

__all__ = ["HunyuanImageWeights", "hunyuanimage_distilled", "hunyuanimage_family",
           "load_hunyuanimage_folder"]

_CLASS = "HunyuanImagePipeline"
_COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2",
               "tokenizer_2", "scheduler")


@dataclass
class HunyuanImageWeights(DiTWeights):
    """A HunyuanImage 2.1 folder's lazy component weights (the ByT5 glyph encoder as
    `text_encoder_2`), its scheduler config, its tokenizers' folders and its guiders'
    guider_config.json (None where the folder has none)."""

    text_encoder_2: ComponentWeights | None = None
    tokenizer_2_dir: Path | None = None
    guider: dict[str, Any] | None = None
    ocr_guider: dict[str, Any] | None = None


def _transformer_file(path: Path) -> bool:
    """`path` is a .safetensors file holding a HunyuanImage 2.1 transformer in Tencent's
    layout (its header read; a broken file is left for loading to name)."""
    if path.suffix.lower() != ".safetensors" or not path.is_file():
        return False
    try:
        return is_hunyuanimage_file(SafetensorsFile(path))
    except (WeightsError, ValueError, OSError):
        return False


def hunyuanimage_family(path: str | os.PathLike[str]) -> str | None:
    """"hunyuanimage-2.1" for a diffusers folder whose model_index.json names a
    HunyuanImagePipeline or a transformer file in Tencent's layout, None for anything else (a
    broken JSON file is left for loading to name)."""
    root = Path(path)
    if not root.is_dir():
        return "hunyuanimage-2.1" if _transformer_file(root) else None
    return "hunyuanimage-2.1" if pipeline_class(root) == _CLASS else None


def hunyuanimage_distilled(path: str | os.PathLike[str]) -> bool:
    """Whether the folder's transformer, or the transformer file, embeds its guidance (the
    distilled checkpoint's `guidance_embeds`), read from its config or its tensors' names
    alone (False where they cannot be read)."""
    root = Path(path)
    try:
        config = (load_hunyuanimage_transformer(root).config if root.is_file()
                  else read_json(root / "transformer" / "config.json"))
    except WeightsError:
        return False
    return bool(config.get("guidance_embeds"))


def _guider(root: Path, name: str, index: dict[str, Any]) -> dict[str, Any] | None:
    """The guider_config.json of the folder's `name` guider, None where model_index.json
    names none."""
    entry = index.get(name)
    if not (isinstance(entry, list) and entry and entry[0] is not None):
        return None
    return read_json(root / name / "guider_config.json")


def load_hunyuanimage_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                             variant: str | None = None, skip: tuple[str, ...] = ()
                             ) -> HunyuanImageWeights:
    """Lazy weights of the HunyuanImage 2.1 diffusers folder `path`. `dtype`: None (as
    stored; bfloat16 read as float32), "float16" or "float32"; `variant`: e.g. "fp16";
    `skip`: ("transformer",) where a single file gives it (the folder need not hold one).
    WeightsError naming the file or folder when it is not a HunyuanImage 2.1 pipeline or a
    part is missing."""
    root = Path(path)
    index = pipeline_index(root, _CLASS, tuple(c for c in _COMPONENTS if c not in skip))

    def adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
              ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
        if name != "text_encoder":
            return config, refs
        return language_model_config(config), language_model_refs(refs)

    parts = dit_weights(root, dtype=dtype, variant=variant, skip=skip, adapt=adapt)
    glyph_refs, _ = weight_refs(root / "text_encoder_2", "model", variant)
    glyph = ComponentWeights("text_encoder_2", read_json(root / "text_encoder_2" /
                                                         "config.json"),
                             glyph_refs, dtype=resolve_dtype(dtype))
    return HunyuanImageWeights(
        scheduler_config=read_json(root / "scheduler" / "scheduler_config.json"),
        tokenizer_dir=qwen_tokenizer(root / "tokenizer"), text_encoder_2=glyph,
        tokenizer_2_dir=root / "tokenizer_2", guider=_guider(root, "guider", index),
        ocr_guider=_guider(root, "ocr_guider", index), **parts)  # type: ignore[arg-type]
