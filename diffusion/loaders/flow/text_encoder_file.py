"""Text encoders shared as single files, named by `--text-encoder`: `t5xxl_fp16.safetensors`,
`t5xxl_fp8_e4m3fn.safetensors`, ComfyUI's `t5xxl_fp8_e4m3fn_scaled.safetensors` (transformers'
T5EncoderModel names; the scaled float8 read by formats.safetensors), city96's T5 GGUFs
(`t5-v1_1-xxl-encoder-Q8_0.gguf`, llama.cpp's names: diffusion.loaders.keymaps.t5_gguf),
`clip_l.safetensors` and `clip_g.safetensors` (transformers' CLIPTextModel(WithProjection)
names), bare or under the `text_encoders.<clip_l|clip_g|t5xxl>.transformer.` prefix of
ComfyUI's all-in-one files.

Each replaces the matching component of a FLUX / SD3 folder (`FlowWeights`): T5 goes to T5's
slot (FLUX's text_encoder_2, SD3's text_encoder_3, whose config, when the folder has none, is
read from the tensor shapes); a CLIP to the slot whose width it has (CLIP-L 768, OpenCLIP-G
1280), by its name ("clip_g", "clip_l") where both slots have the same width. Only the
encoder's tensors are taken (not a file's `logit_scale`, T5's tied `embed_tokens` copy, an
unused projection); the folder's component may then come without weights.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.safetensors import SafetensorsFile
from ..keymaps.t5_gguf import t5_gguf_refs
from ..keymaps.t5_keys import T5_MARK, t5_config, t5_encoder_refs
from ..weights import ComponentWeights, TensorRef
from .folder import FlowWeights

__all__ = ["clip_text_refs", "module_stem", "use_text_encoder_files"]

_PREFIXES = ("text_encoders.t5xxl.transformer.", "text_encoders.clip_l.transformer.",
             "text_encoders.clip_g.transformer.", "")
CLIP_MARK = "text_model.embeddings.token_embedding.weight"
CLIP_MARKS = (CLIP_MARK, CLIP_MARK.removeprefix("text_model."))  # transformers >= 5.6 saves


def tensors_under(file: SafetensorsFile, prefix: str) -> dict[str, TensorRef]:
    """The file's tensors under `prefix`, named without it."""
    return {key[len(prefix):]: TensorRef(file, key, file.shape(key))
            for key in file.keys() if key.startswith(prefix)}


def _refs(file: SafetensorsFile, *marks: str) -> dict[str, TensorRef] | None:
    """The file's tensors under the first prefix that holds one of `marks`, named without
    it."""
    for prefix in _PREFIXES:
        if any(prefix + mark in file for mark in marks):
            return tensors_under(file, prefix)
    return None


# the tensors of our CLIP encoders (the rest of a file: logit_scale, an unused projection)
CLIP_PARTS = ("embeddings.", "encoder.", "final_layer_norm.")


def _component(name: str, config: dict[str, Any], refs: dict[str, TensorRef],
               parts: tuple[str, ...], dtype: Any) -> ComponentWeights:
    """The encoder's tensors of `refs` (its model's strict loading names any missing one)."""
    taken = {key: ref for key, ref in refs.items() if key.startswith(parts)}
    return ComponentWeights(name, config, taken, dtype=dtype)


def clip_text_refs(file: SafetensorsFile) -> dict[str, TensorRef] | None:
    """The CLIP text encoder's tensors in `file` (bare, under transformers' `text_model.` or
    a ComfyUI all-in-one prefix) under our CLIPTextModel's names (no `text_model.`); None
    when it holds none."""
    found = _refs(file, *CLIP_MARKS)
    if found is None:
        return None
    return {key.removeprefix("text_model."): ref for key, ref in found.items()}


def module_stem(path: Path) -> str:
    """A model or module file's name as Forge's infotext writes it ("Model: flux1-dev-Q8_0",
    "Module 1: t5xxl_fp16"): no .safetensors or .gguf."""
    return path.name.removesuffix(".safetensors").removesuffix(".gguf")


def use_text_encoder_files(weights: FlowWeights, files: list[str | os.PathLike[str]]
                           ) -> list[str]:
    """Put each file's text encoder in place of the folder's (module docstring); returns the
    files' stems (Forge writes them as "Module N" in the infotext). WeightsError naming the
    file when it holds no text encoder or none the model takes."""
    stems = []
    t5_slot = "text_encoder_2" if weights.family == "flux" else "text_encoder_3"
    clip_slots = ["text_encoder"] + (["text_encoder_2"] if weights.family == "sd3" else [])
    for given in files:
        path = Path(given)
        gguf = path.suffix.lower() == ".gguf"
        file = None if gguf else SafetensorsFile(path)
        t5 = t5_gguf_refs(path) if file is None else _refs(file, T5_MARK)
        if t5 is not None:
            t5 = t5_encoder_refs(t5)
            current = getattr(weights, t5_slot)
            config = current.config if current is not None else t5_config(t5)
            setattr(weights, t5_slot, ComponentWeights(
                t5_slot, config, t5, dtype=None if current is None else current.dtype))
        elif file is not None and (clip := clip_text_refs(file)) is not None:
            width = clip[CLIP_MARKS[1]].shape[1]
            slots = [s for s in clip_slots if getattr(weights, s).config["hidden_size"] == width]
            if not slots:
                raise WeightsError(f"{path}: a CLIP text encoder {width} wide; this "
                                   f"{weights.family} model's are not")
            if len(slots) > 1:  # the same width: the file's name tells
                slots = [slots[-1] if "clip_g" in path.name.lower() else slots[0]]
            current = getattr(weights, slots[0])
            # SD3's CLIPs project their pooled output (FLUX's CLIP-L does not)
            parts = (*CLIP_PARTS, *(("text_projection.",) if weights.family == "sd3" else ()))
            setattr(weights, slots[0], _component(slots[0], current.config, clip, parts,
                                                  current.dtype))
        else:
            raise WeightsError(f"{path}: no text encoder found (neither T5's "
                               f"{T5_MARK!r} nor CLIP's {CLIP_MARK!r}); --text-encoder takes "
                               "t5xxl / clip_l / clip_g .safetensors files and T5 encoder "
                               ".gguf files")
        stems.append(module_stem(path))
    return stems
