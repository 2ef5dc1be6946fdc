"""Diffusers folders of Qwen-Image 2.1 (`QwenImage21Pipeline`): transformer/
(QwenImage21Transformer2DModel, single-stream and block-causal), text_encoder/ (transformers'
Qwen3VLForConditionalGeneration: its language model, and apart its vision tower, the reader
of condition pictures; `lm_head` left out), processor/ (Qwen3VLProcessor: the Qwen
tokenizer's tokenizer.json or vocab.json and merges.txt, and preprocessor_config.json, the
picture preparation's sizes, where the folder has one), vae/ (AutoencoderKLQwenImage21, 64
channels, 16x) and scheduler/ (FlowMatchEulerDiscreteScheduler with a dynamic shift).
model_index.json may carry the model author's sampling sigmas (`sample_sigmas`), whose length
is then the default step count.

    weights = load_qwenimage21_folder("Qwen-Image-2.1")
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import pipeline_class, pipeline_index, read_json
from ..formats.dit_folder import DiTWeights, dit_weights
from ..weights import ComponentWeights, TensorRef, resolve_dtype
from .file21 import qwenimage21_file_family
from .folder import language_model_refs, qwen_tokenizer, vision_refs

__all__ = ["QwenImage21Weights", "load_qwenimage21_folder", "qwen3_vl_text_config",
           "qwenimage21_family"]

_CLASS = "QwenImage21Pipeline"
_COMPONENTS = ("transformer", "vae", "text_encoder", "processor", "scheduler")


@dataclass
class QwenImage21Weights(DiTWeights):
    """A Qwen-Image 2.1 folder's lazy component weights, its scheduler config, the folder of
    its tokenizer (processor/), the author's sampling sigmas (None: 1 .. 1/n), the text
    encoder's vision tower (Qwen3VLVisionModel's config and tensors; None where the file has
    none) and processor/preprocessor_config.json (None where absent: Qwen3-VL's sizes)."""

    sample_sigmas: tuple[float, ...] | None = None
    vision: ComponentWeights | None = None
    processor_config: dict[str, Any] | None = None


def qwenimage21_family(path: str | os.PathLike[str]) -> str | None:
    """"qwen-image-2.1" for a diffusers folder whose model_index.json names a
    QwenImage21Pipeline or a Qwen-Image 2.1 transformer file (`qwenimage21_file_family`), None
    for anything else (a broken JSON file is left for loading to name)."""
    root = Path(path)
    if not root.is_dir():
        return qwenimage21_file_family(root)
    return "qwen-image-2.1" if pipeline_class(root) == _CLASS else None


def qwen3_vl_text_config(config: dict[str, Any], model: str = "Qwen-Image 2.1"
                         ) -> dict[str, Any]:
    """LLMTextModel's config of a Qwen3-VL `text_encoder/config.json`: its `text_config`
    (model_type "qwen3_vl_text"); WeightsError for another language model's, naming
    `model`, the family that reads it."""
    text = config.get("text_config")
    if not isinstance(text, dict) or not text.get("hidden_size"):
        raise WeightsError(f"the text encoder's config.json has no text_config: {model}'s "
                           "text encoder is Qwen3-VL (Qwen3VLForConditionalGeneration)")
    kind = text.get("model_type", "qwen3_vl_text")
    if kind != "qwen3_vl_text":
        raise WeightsError(f"the text encoder's language model is {kind!r}; {model}'s "
                           "is Qwen3-VL's (qwen3_vl_text): give the text encoder of its folder")
    return {**text, "model_type": "qwen3_vl_text"}


def _sigmas(index: dict[str, Any], where: Path) -> tuple[float, ...] | None:
    """model_index.json's `sample_sigmas`: None where absent, else decreasing numbers in
    (0, 1] (WeightsError naming the file otherwise)."""
    sigmas = index.get("sample_sigmas")
    if sigmas is None:
        return None
    ok = (isinstance(sigmas, list) and sigmas
          and all(isinstance(s, (int, float)) and 0 < s <= 1 for s in sigmas)
          and all(a > b for a, b in itertools.pairwise(sigmas)))
    if not ok:
        raise WeightsError(f"{where}: sample_sigmas must be decreasing numbers in (0, 1], "
                           f"got {str(sigmas)[:80]}")
    return tuple(float(s) for s in sigmas)


def load_qwenimage21_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                            variant: str | None = None, skip: tuple[str, ...] = ()
                            ) -> QwenImage21Weights:
    """Lazy weights of the Qwen-Image 2.1 diffusers folder `path`. `dtype`: None (as stored;
    bfloat16 read as float32), "float16" or "float32"; `variant`: e.g. "fp16"; `skip`:
    ("transformer",) leaves it out (None; a single file replaces it). WeightsError
    naming the file or folder when it is not a Qwen-Image 2.1 pipeline or a component is
    missing."""
    root = Path(path)
    index = pipeline_index(root, _CLASS, _COMPONENTS)

    extra: dict[str, Any] = {}

    def adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
              ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
        if name != "text_encoder":
            return config, refs
        vision, tower_refs = config.get("vision_config"), vision_refs(refs)
        if isinstance(vision, dict) and tower_refs:
            extra["vision"] = ComponentWeights("vision", vision, tower_refs,
                                               dtype=resolve_dtype(dtype))
        return qwen3_vl_text_config(config), language_model_refs(refs)

    parts = dit_weights(root, dtype=dtype, variant=variant, skip=skip, adapt=adapt)
    pixels = root / "processor" / "preprocessor_config.json"
    return QwenImage21Weights(
        scheduler_config=read_json(root / "scheduler" / "scheduler_config.json"),
        tokenizer_dir=qwen_tokenizer(root / "processor"),
        sample_sigmas=_sigmas(index, root / "model_index.json"),
        processor_config=read_json(pixels) if pixels.is_file() else None,
        **parts, **extra)  # type: ignore[arg-type]
