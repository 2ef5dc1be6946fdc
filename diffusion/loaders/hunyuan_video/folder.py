"""Diffusers folders of HunyuanVideo (1.0) text to video (`HunyuanVideoPipeline`, e.g.
hunyuanvideo-community/HunyuanVideo): transformer/ (HunyuanVideoTransformer3DModel), vae/
(AutoencoderKLHunyuanVideo), text_encoder/ (transformers' LlamaModel: LLaVA-Llama-3-8B's
language model; a LlamaForCausalLM's `model.` prefix dropped and its `lm_head` left out),
tokenizer/ (Llama 3's tokenizer.json), text_encoder_2/ (CLIPTextModel, ViT-L/14: its pooled
output), tokenizer_2/ (CLIPTokenizer) and scheduler/ (FlowMatchEulerDiscreteScheduler, shift
7). Image to video (`HunyuanVideoImageToVideoPipeline`: hunyuanvideo-community/HunyuanVideo-I2V
and -I2V-33ch): text_encoder/ is the whole LLaVA-Llama-3 (LlavaForConditionalGeneration),
split by llava.split_llava into the language model and `vision` (CLIP ViT-L/14-336 and the
projector); image_processor/ is CLIP's.

    weights = load_hunyuan_video_folder("HunyuanVideo")
    weights.text_encoder.config["model_type"], weights.tokenizer_2_dir
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
from ..formats.dit_folder import DIT_COMPONENTS, DiTWeights, dit_weights
from ..weights import ComponentWeights, TensorRef, resolve_dtype
from .llava import llava_configs, split_llava
from .transformer import load_hunyuan_video_transformer
from .vae import load_hunyuan_video_vae

__all__ = ["FAMILY", "HunyuanVideoWeights", "hunyuan_video_family", "load_hunyuan_video_folder",
           "refuse_not_run"]

FAMILY = "hunyuan-video"
_CLASS = "HunyuanVideoPipeline"
I2V_CLASS = "HunyuanVideoImageToVideoPipeline"
# diffusers' other HunyuanVideo pipelines: claimed, so that they are refused by name (not run)
_NOT_RUN = {"HunyuanSkyreelsImageToVideoPipeline": "SkyReels image-to-video",
            "HunyuanVideoFramepackPipeline": "FramePack"}
_COMPONENTS = (*DIT_COMPONENTS, "text_encoder_2", "tokenizer_2")


@dataclass
class HunyuanVideoWeights(DiTWeights):
    """A HunyuanVideo folder's lazy component weights (Llama as `text_encoder`, CLIP as
    `text_encoder_2`), its scheduler config and both tokenizer folders."""

    text_encoder_2: ComponentWeights | None = None
    tokenizer_2_dir: Path | None = None
    vision: ComponentWeights | None = None  # image to video: LLaVA's picture side


def hunyuan_video_family(path: str | os.PathLike[str]) -> str | None:
    """"hunyuan-video" for a diffusers folder whose model_index.json names a
    HunyuanVideoPipeline (or one of diffusers' other HunyuanVideo pipelines, which
    `refuse_not_run` refuses), None for anything else."""
    return FAMILY if pipeline_class(Path(path)) in (_CLASS, I2V_CLASS, *_NOT_RUN) else None


def refuse_not_run(path: str | os.PathLike[str]) -> None:
    """WeightsError in one line for a folder of one of diffusers' HunyuanVideo pipelines
    other than text to video."""
    found = pipeline_class(Path(path)) or ""
    if found in _NOT_RUN:
        raise WeightsError(f"{path}: HunyuanVideo's {_NOT_RUN[found]} model ({found}) is not "
                           "run here yet; give a HunyuanVideoPipeline (text-to-video) or "
                           "HunyuanVideoImageToVideoPipeline folder")


def _checked_folder(folder: Path, files: tuple[tuple[str, ...], ...], what: str) -> Path:
    """`folder`, checked to hold one of the sets of `files`; WeightsError naming the first
    set's missing file otherwise."""
    if not any(all((folder / name).is_file() for name in names) for names in files):
        missing = next(name for name in files[0] if not (folder / name).is_file())
        raise WeightsError(f"{folder / missing}: required file is missing ({what})")
    return folder


def load_hunyuan_video_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                              variant: str | None = None) -> HunyuanVideoWeights:
    """Lazy weights of the HunyuanVideo diffusers folder `path`. `dtype`: None (as stored;
    bfloat16 read as float32), "float16" or "float32"; `variant`: e.g. "fp16". WeightsError
    naming the file or folder when it is not a HunyuanVideoPipeline or
    HunyuanVideoImageToVideoPipeline (`refuse_not_run` naming diffusers' other HunyuanVideo
    pipelines) or a part is missing."""
    root = Path(path)
    refuse_not_run(root)
    image = pipeline_class(root) == I2V_CLASS
    pipeline_index(root, I2V_CLASS if image else _CLASS,
                   (*_COMPONENTS, "image_processor") if image else _COMPONENTS)
    vision: list[ComponentWeights] = []

    def adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
              ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
        if name != "text_encoder":
            return config, refs
        if image:
            if config.get("model_type") != "llava" or not config.get("vision_config"):
                raise WeightsError(f"{root / name}: not a LlavaForConditionalGeneration "
                                   f"(model_type {config.get('model_type')!r}); give the "
                                   "folder's own LLaVA-Llama-3 text encoder")
            refs, seen = split_llava(refs)
            config, whole = llava_configs(config)
            vision.append(ComponentWeights("vision", whole, seen, dtype=resolve_dtype(dtype)))
        else:
            refs = causal_lm_refs(refs)
        if config.get("model_type") != "llama" or "embed_tokens.weight" not in refs:
            raise WeightsError(f"{root / name}: not a LlamaModel (model_type "
                               f"{config.get('model_type')!r}); give the folder's own text "
                               "encoder, LLaVA-Llama-3's language model")
        return config, refs

    # the transformer and the VAE through their own loaders (a layout they do not read is
    # named there)
    parts = dit_weights(root, dtype=dtype, variant=variant, skip=("transformer", "vae"),
                        adapt=adapt)
    parts["transformer"] = load_hunyuan_video_transformer(root / "transformer", dtype=dtype,
                                                          variant=variant)
    parts["vae"] = load_hunyuan_video_vae(root / "vae", dtype=dtype, variant=variant)
    clip = root / "text_encoder_2"
    refs, _where = weight_refs(clip, "model", variant)
    # transformers < 5.6 saved CLIPTextModel's weights under "text_model."; newer, without
    refs = {key.removeprefix("text_model."): ref for key, ref in refs.items()}
    return HunyuanVideoWeights(
        scheduler_config=read_json(root / "scheduler" / "scheduler_config.json"),
        tokenizer_dir=_checked_folder(root / "tokenizer", (("tokenizer.json",),),
                                      "Llama 3's tokenizer the text encoder reads prompts with"),
        text_encoder_2=ComponentWeights("text_encoder_2", read_json(clip / "config.json"),
                                        refs, dtype=resolve_dtype(dtype)),
        tokenizer_2_dir=_checked_folder(root / "tokenizer_2",
                                        (("vocab.json", "merges.txt"), ("tokenizer.json",)),
                                        "the CLIP tokenizer of text_encoder_2"),
        vision=vision[0] if vision else None, **parts)  # type: ignore[arg-type]
