"""Diffusers folders of Kandinsky 5 Image Lite: text to image (`Kandinsky5T2IPipeline`, the
Kandinsky-5.0-T2I-Lite checkpoints) and its editing model (`Kandinsky5I2IPipeline`,
Kandinsky-5.0-I2I-Lite): transformer/ (Kandinsky5Transformer3DModel),
text_encoder/ (transformers' Qwen2_5_VLForConditionalGeneration: its language model is read,
the vision tower and `lm_head` left out), tokenizer/ (a Qwen2VLProcessor's folder: Qwen's
tokenizer.json, or a slow tokenizer's vocab.json and merges.txt, beside the image processor's
settings, which the editing model alone reads), text_encoder_2/ (CLIPTextModel, ViT-L/14:
its pooled output), tokenizer_2/ (CLIPTokenizer), vae/ (AutoencoderKL, FLUX's 16-channel
one) and scheduler/ (FlowMatchEulerDiscreteScheduler). The editing model's text encoder
gives its vision tower too (`vision`, which reads the picture to edit), its tokenizer/ the
image processor's sizes (`processor_config`, preprocessor_config.json; transformers' defaults
where it has none), and its transformer takes the picture's latents beside the noise
(`visual_cond`).

Kandinsky 5 Video Lite's folders (`Kandinsky5T2VPipeline`, `video=True`) hold the same parts
but a video transformer and HunyuanVideo's VAE (vae/ AutoencoderKLHunyuanVideo), its prompt
template another (128 tokens dropped). The image-to-video folders (Kandinsky5I2VPipeline) are
another pipeline and do not load.

    weights = load_kandinsky5_folder("Kandinsky-5.0-T2I-Lite-sft-Diffusers")
    weights.text_encoder_2.config, weights.tokenizer_2_dir
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import pipeline_class, pipeline_index, read_json, weight_refs
from ..formats.dit_folder import DIT_COMPONENTS, DiTWeights, dit_weights
from ..qwen_image.folder import (
    language_model_config,
    language_model_refs,
    qwen_tokenizer,
    vision_refs,
)
from ..weights import ComponentWeights, TensorRef, resolve_dtype
from .file import kandinsky5_file_family

__all__ = ["Kandinsky5Weights", "kandinsky5_family", "kandinsky5_video_family",
           "load_kandinsky5_folder"]

# the pipelines' classes and the family each is: the editing model reads a picture
_CLASSES = {"Kandinsky5T2IPipeline": "kandinsky-5", "Kandinsky5I2IPipeline": "kandinsky-5-edit"}
_VIDEO_CLASS = "Kandinsky5T2VPipeline"  # Kandinsky 5 Video Lite (load with video=True)
_COMPONENTS = (*DIT_COMPONENTS, "text_encoder_2", "tokenizer_2")


@dataclass
class Kandinsky5Weights(DiTWeights):
    """A Kandinsky 5 folder's lazy component weights (Qwen's language model as text_encoder,
    CLIP as text_encoder_2), its scheduler config and both tokenizer folders (tokenizer_dir
    Qwen's, tokenizer_2_dir CLIP's); the editing model's vision tower and image processor
    settings (None for text to image)."""

    text_encoder_2: ComponentWeights
    tokenizer_2_dir: Path
    vision: ComponentWeights | None = None
    processor_config: dict[str, Any] | None = None


def kandinsky5_family(path: str | os.PathLike[str]) -> str | None:
    """"kandinsky-5" for a diffusers folder whose model_index.json names a
    Kandinsky5T2IPipeline or a Kandinsky 5 transformer file (`kandinsky5_file_family`),
    "kandinsky-5-edit" for a Kandinsky5I2IPipeline folder, None for anything else (a broken
    JSON file is left for loading to name)."""
    root = Path(path)
    if not root.is_dir():
        return kandinsky5_file_family(root)
    return _CLASSES.get(pipeline_class(root) or "")


def kandinsky5_video_family(path: str | os.PathLike[str]) -> str | None:
    """"kandinsky-5-video" for a diffusers folder whose model_index.json names a
    Kandinsky5T2VPipeline (Kandinsky 5 Video Lite), None for anything else."""
    return "kandinsky-5-video" if pipeline_class(Path(path)) == _VIDEO_CLASS else None


def load_kandinsky5_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                           variant: str | None = None, skip: tuple[str, ...] = (),
                           video: bool = False) -> Kandinsky5Weights:
    """Lazy weights of the Kandinsky 5 diffusers folder `path`. `dtype`: None (as stored;
    bfloat16 read as float32), "float16" or "float32"; `variant`: e.g. "fp16"; `skip`:
    ("transformer",) leaves it out (None; a single file replaces it, and the folder need not
    hold it); `video`: a Kandinsky5T2VPipeline folder in place of an image one. WeightsError
    naming the file or folder when it is not a Kandinsky 5 image pipeline (with `video`: the
    video one), a part is missing, or an image pipeline's transformer does not match it
    (`visual_cond` for the editing model alone)."""
    root = Path(path)
    found = pipeline_class(root) or ""
    edit = found == "Kandinsky5I2IPipeline" and not video
    wanted = _VIDEO_CLASS if video else found if found in _CLASSES else "Kandinsky5T2IPipeline"
    pipeline_index(root, wanted, _COMPONENTS)
    extra: dict[str, Any] = {}

    def adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
              ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
        # the video transformer reads an empty condition beside its latents (visual_cond)
        if name == "transformer" and not video and bool(config.get("visual_cond")) != edit:
            raise WeightsError(f"{root / name / 'config.json'}: visual_cond "
                               f"{bool(config.get('visual_cond'))} does not fit a {found} "
                               "(the editing model's transformer takes the picture's latents, "
                               "the text-to-image one's does not)")
        if name != "text_encoder":
            return config, refs
        if edit:
            tower = config.get("vision_config")
            if not isinstance(tower, dict) or not vision_refs(refs):
                raise WeightsError(f"{root / name}: no vision tower; the editing model's text "
                                   "encoder is Qwen2.5-VL with its vision tower")
            extra["vision"] = ComponentWeights("vision", tower, vision_refs(refs),
                                               dtype=resolve_dtype(dtype))
        return language_model_config(config), language_model_refs(refs)

    parts = dit_weights(root, dtype=dtype, variant=variant, skip=skip, adapt=adapt)
    if edit:
        settings = root / "tokenizer" / "preprocessor_config.json"
        extra["processor_config"] = read_json(settings) if settings.is_file() else {}
    clip = root / "text_encoder_2"
    refs, _where = weight_refs(clip, "model", variant)
    # transformers < 5.6 saved CLIPTextModel's weights under "text_model."; newer, without
    refs = {key.removeprefix("text_model."): ref for key, ref in refs.items()}
    return Kandinsky5Weights(
        scheduler_config=read_json(root / "scheduler" / "scheduler_config.json"),
        tokenizer_dir=qwen_tokenizer(root / "tokenizer"),
        text_encoder_2=ComponentWeights("text_encoder_2", read_json(clip / "config.json"),
                                        refs, dtype=resolve_dtype(dtype)),
        tokenizer_2_dir=_clip_tokenizer(root / "tokenizer_2"),
        **parts, **extra)  # type: ignore[arg-type]


def _clip_tokenizer(folder: Path) -> Path:
    """`folder`, checked to hold CLIP's tokenizer (vocab.json and merges.txt, or the
    tokenizer.json transformers 5 writes alone)."""
    if not (folder / "tokenizer.json").is_file() and not (
            (folder / "vocab.json").is_file() and (folder / "merges.txt").is_file()):
        raise WeightsError(f"{folder / 'vocab.json'}: required file is missing, and so is "
                           "tokenizer.json (the CLIP tokenizer of text_encoder_2)")
    return folder

