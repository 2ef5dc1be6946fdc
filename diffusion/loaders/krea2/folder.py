"""Diffusers folders of Krea 2 (`Krea2Pipeline`): transformer/ (Krea2Transformer2DModel),
text_encoder/ (transformers' Qwen3VLModel, or a Qwen3VLForConditionalGeneration: its language
model is read, the vision tower and `lm_head` left out), tokenizer/ (Qwen's), vae/
(AutoencoderKLQwenImage, Qwen-Image's 16-channel VAE) and scheduler/
(FlowMatchEulerDiscreteScheduler with Krea 2's dynamic shift). model_index.json carries the
pipeline's own settings: the text encoder's tapped layers (`text_encoder_select_layers`),
whether the checkpoint is the few-step distilled one (`is_distilled`: a fixed shift) and the
latents' patch size.

    weights = load_krea2_folder("Krea-2")
    weights.select_layers, weights.distilled
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import pipeline_class, pipeline_index, read_json
from ..formats.dit_folder import DIT_COMPONENTS, DiTWeights, dit_weights
from ..qwen_image.folder import language_model_refs, qwen_tokenizer
from ..qwen_image.folder21 import qwen3_vl_text_config
from ..weights import TensorRef
from .file import krea2_file_family

__all__ = ["SELECT_LAYERS", "Krea2Weights", "krea2_family", "load_krea2_folder"]

_CLASS = "Krea2Pipeline"
# Krea2Pipeline's default taps of Qwen3-VL-4B (indices into transformers' hidden_states,
# 0 the embeddings), used where model_index.json names none
SELECT_LAYERS = (2, 5, 8, 11, 14, 17, 20, 23, 26, 29, 32, 35)


@dataclass
class Krea2Weights(DiTWeights):
    """A Krea 2 folder's lazy component weights, its scheduler config and tokenizer folder,
    and model_index.json's settings: the tapped layers, `distilled` (the fixed shift mu =
    1.15 of the few-step checkpoint) and the patch size."""

    select_layers: tuple[int, ...] = SELECT_LAYERS
    distilled: bool = False
    patch_size: int = 2


def krea2_family(path: str | os.PathLike[str]) -> str | None:
    """"krea-2" for a diffusers folder whose model_index.json names a Krea2Pipeline or a
    Krea 2 transformer file (`krea2_file_family`), None for anything else (a broken JSON
    file is left for loading to name)."""
    root = Path(path)
    if not root.is_dir():
        return krea2_file_family(root)
    return "krea-2" if pipeline_class(root) == _CLASS else None


def _settings(index: dict[str, Any], where: Path) -> tuple[tuple[int, ...], bool, int]:
    """model_index.json's tapped layers, distilled flag and patch size, checked (WeightsError
    naming the file for values the pipeline could not use)."""
    layers = index.get("text_encoder_select_layers") or SELECT_LAYERS
    if not (isinstance(layers, (list, tuple)) and all(
            isinstance(k, int) and not isinstance(k, bool) and k >= 0 for k in layers)):
        raise WeightsError(f"{where}: text_encoder_select_layers must be a list of layer "
                           f"indices (0 or more), got {str(layers)[:80]}")
    patch = index.get("patch_size", 2)
    if patch != 2:
        raise WeightsError(f"{where}: patch_size {patch!r} is not supported (Krea 2's is 2)")
    return tuple(layers), bool(index.get("is_distilled", False)), 2


def load_krea2_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                      variant: str | None = None, skip: tuple[str, ...] = ()) -> Krea2Weights:
    """Lazy weights of the Krea 2 diffusers folder `path`. `dtype`: None (as stored;
    bfloat16 read as float32), "float16" or "float32"; `variant`: e.g. "fp16"; `skip`:
    ("transformer",) leaves it out (None; a single file replaces it, and the folder need not
    hold it). WeightsError naming the file or folder when it is not a Krea 2 pipeline or a
    part is missing."""
    root = Path(path)
    index = pipeline_index(root, _CLASS, DIT_COMPONENTS)
    layers, distilled, patch = _settings(index, root / "model_index.json")
    parts = dit_weights(root, dtype=dtype, variant=variant, skip=skip, adapt=_adapt)
    return Krea2Weights(scheduler_config=read_json(root / "scheduler" / "scheduler_config.json"),
                        tokenizer_dir=qwen_tokenizer(root / "tokenizer"),
                        select_layers=layers, distilled=distilled, patch_size=patch,
                        **parts)  # type: ignore[arg-type]


def _adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
           ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
    """The text encoder's language model: Qwen3-VL's text config and tensors."""
    if name != "text_encoder":
        return config, refs
    return qwen3_vl_text_config(config, "Krea 2"), language_model_refs(refs)
