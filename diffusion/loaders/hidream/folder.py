"""Diffusers folders of HiDream-I1 (Full, Dev, Fast: `HiDreamImagePipeline`): transformer/
(HiDreamImageTransformer2DModel), vae/ (AutoencoderKL, FLUX's), text_encoder/ and
text_encoder_2/ (CLIPTextModelWithProjection: Long-CLIP L and G) with tokenizer/ and
tokenizer_2/, text_encoder_3/ (T5EncoderModel, T5-XXL) with tokenizer_3/ (its
tokenizer.json), scheduler/ (Full: UniPC on flow sigmas; Dev, Fast: a flow-matching one),
and Llama-3.1-8B-Instruct as text_encoder_4/ and tokenizer_4/ (a LlamaForCausalLM, its
`model.` prefix dropped and `lm_head` left out), which HiDream's own folders leave out:
`llama` then names a Llama 3.1 folder (meta-llama/Llama-3.1-8B-Instruct as downloaded:
config.json, the safetensors, tokenizer.json) that stands in for both.

    weights = load_hidream_folder("HiDream-I1-Full", llama="Llama-3.1-8B-Instruct")
    weights.llama.config["num_hidden_layers"], weights.scheduler_config["_class_name"]
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import (
    causal_lm_refs,
    pipeline_class,
    pipeline_index,
    read_json,
    weight_refs,
)
from ..weights import ComponentWeights, resolve_dtype
from .transformer import hidream_file_family, load_hidream_transformer

__all__ = ["FAMILY", "HiDreamWeights", "hidream_family", "load_hidream_folder"]

FAMILY = "hidream"
_CLASS = "HiDreamImagePipeline"
_COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "text_encoder_2",
               "tokenizer_2", "text_encoder_3", "tokenizer_3", "scheduler")


@dataclass
class HiDreamWeights:
    """A HiDream-I1 folder's lazy component weights (`clips`: CLIP-L's and CLIP-G's, `t5`,
    `llama`), its scheduler config and tokenizer folders by diffusers' names (tokenizer ..
    tokenizer_4, the last the Llama one's)."""

    transformer: ComponentWeights | None  # None when skipped (a single file replaces it)
    vae: ComponentWeights
    clips: tuple[ComponentWeights, ComponentWeights]
    t5: ComponentWeights
    llama: ComponentWeights
    scheduler_config: dict[str, Any]
    tokenizer_dirs: dict[str, Path]


def hidream_family(path: str | os.PathLike[str]) -> str | None:
    """"hidream" for a diffusers folder whose model_index.json names a HiDreamImagePipeline
    or a HiDream-I1 transformer file (`hidream_file_family`), None for anything else."""
    root = Path(path)
    if not root.is_dir():
        return hidream_file_family(root)
    return FAMILY if pipeline_class(root) == _CLASS else None


def _component(folder: Path, stem: str, dtype: Any, variant: str | None) -> ComponentWeights:
    refs, _where = weight_refs(folder, stem, variant)
    if stem == "model":  # transformers < 5.6 saved CLIP's weights under "text_model."
        refs = {key.removeprefix("text_model."): ref for key, ref in refs.items()}
    return ComponentWeights(folder.name, read_json(folder / "config.json"), refs,
                            dtype=resolve_dtype(dtype))


def _tokenizer(folder: Path, files: tuple[tuple[str, ...], ...], what: str) -> Path:
    """`folder`, checked to hold one of the sets of `files`."""
    if not any(all((folder / name).is_file() for name in names) for names in files):
        missing = next(name for name in files[0] if not (folder / name).is_file())
        raise WeightsError(f"{folder / missing}: required file is missing ({what})")
    return folder


def _llama(root: Path, llama: str | os.PathLike[str] | None, dtype: Any,
           variant: str | None) -> tuple[ComponentWeights, Path]:
    """Llama's weights and tokenizer folder: `llama`'s (one folder holding both), else the
    folder's text_encoder_4/ and tokenizer_4/. WeightsError in one line when neither is."""
    if llama is not None:
        weights, tokenizer = Path(llama), Path(llama)
        if not (weights / "config.json").is_file():
            raise WeightsError(f"{weights}: not a Llama 3.1 folder (no config.json); give "
                               "meta-llama/Llama-3.1-8B-Instruct's folder as downloaded")
    else:
        weights, tokenizer = root / "text_encoder_4", root / "tokenizer_4"
        if not (weights / "config.json").is_file():
            raise WeightsError(f"{root}: this HiDream-I1 folder has no text_encoder_4 "
                               "(Llama-3.1-8B-Instruct, which HiDream's folders leave out); "
                               "give its folder with --text-encoder")
    found, _where = weight_refs(weights, "model", variant)
    config, refs = read_json(weights / "config.json"), causal_lm_refs(found)
    if config.get("model_type") != "llama" or "embed_tokens.weight" not in refs:
        raise WeightsError(f"{weights}: not a Llama model (model_type "
                           f"{config.get('model_type')!r}); HiDream reads prompts with "
                           "Llama-3.1-8B-Instruct")
    return (ComponentWeights("text_encoder_4", config, refs, dtype=resolve_dtype(dtype)),
            _tokenizer(tokenizer, (("tokenizer.json",),), "Llama 3's tokenizer"))


def load_hidream_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                        variant: str | None = None,
                        llama: str | os.PathLike[str] | None = None,
                        skip_transformer: bool = False) -> HiDreamWeights:
    """Lazy weights of the HiDream-I1 diffusers folder `path`, Llama's from `llama` (a Llama
    3.1 folder) or the folder's text_encoder_4/. `dtype`: None (as stored; bfloat16 read as
    float32), "float16" or "float32"; `variant`: e.g. "fp16"; `skip_transformer`: the
    transformer left out (None: a single file replaces it, and the folder need not hold
    it). WeightsError naming the file or folder when it is not a HiDreamImagePipeline or a
    part is missing."""
    root = Path(path)
    pipeline_index(root, _CLASS, _COMPONENTS)
    clip_files = (("vocab.json", "merges.txt"), ("tokenizer.json",))
    dirs = {name: _tokenizer(root / name, clip_files, "a CLIP tokenizer")
            for name in ("tokenizer", "tokenizer_2")}
    dirs["tokenizer_3"] = _tokenizer(root / "tokenizer_3", (("tokenizer.json",),),
                                     "T5's tokenizer.json")
    llama_weights, dirs["tokenizer_4"] = _llama(root, llama, dtype, variant)
    return HiDreamWeights(
        transformer=None if skip_transformer else load_hidream_transformer(
            root / "transformer", dtype=dtype, variant=variant),
        vae=_component(root / "vae", "diffusion_pytorch_model", dtype, variant),
        clips=(_component(root / "text_encoder", "model", dtype, variant),
               _component(root / "text_encoder_2", "model", dtype, variant)),
        t5=_component(root / "text_encoder_3", "model", dtype, variant),
        llama=llama_weights,
        scheduler_config=read_json(root / "scheduler" / "scheduler_config.json"),
        tokenizer_dirs=dirs)
