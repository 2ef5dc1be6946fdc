"""Diffusers folders of Motif Technologies' Motif-Video (`MotifVideoPipeline`, or its
`MotifVideoImage2VideoPipeline`, e.g. Motif-Video-2B): transformer/
(MotifVideoTransformer3DModel), text_encoder/ (transformers' T5Gemma2Encoder: its text model
under LLMTextModel's names, models.t5gemma2; the SigLIP vision tower kept apart for
image-to-video, under transformers' SiglipVisionModel names), tokenizer/ (Gemma's
tokenizer.json), vae/ (AutoencoderKLWan, Wan 2.1's), scheduler/
(FlowMatchEulerDiscreteScheduler), guider/ (ClassifierFreeGuidance) and, image-to-video,
feature_extractor/ (SiglipImageProcessor's settings).

    weights = load_motif_video_folder("Motif-Video-2B")
    transformer = MotifVideoTransformer3DModel(weights.transformer.config)
    transformer.load_state_dict(weights.transformer)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...models.t5gemma2 import t5gemma2_text_config, t5gemma2_text_weights
from ..errors import WeightsError
from ..formats.diffusers_folder import pipeline_class, pipeline_index, read_json
from ..formats.dit_folder import DIT_COMPONENTS, DiTWeights, dit_weights
from ..weights import ComponentWeights, TensorRef

__all__ = ["MotifVideoWeights", "load_motif_video_folder", "motif_video_family"]

_PIPELINES = ("MotifVideoPipeline", "MotifVideoImage2VideoPipeline")


@dataclass
class MotifVideoWeights(DiTWeights):
    """A Motif-Video folder's lazy component weights, scheduler and guider configs,
    tokenizer folder, and (image-to-video) the text encoder's SigLIP vision tower with the
    feature extractor's settings."""

    guider_config: dict[str, Any] = field(default_factory=dict)
    pipeline: str = "MotifVideoPipeline"
    vision: ComponentWeights | None = None
    feature_extractor: dict[str, Any] | None = None


def motif_video_family(path: str | os.PathLike[str]) -> str | None:
    """"motif-video" for a diffusers folder whose model_index.json names a MotifVideoPipeline
    or MotifVideoImage2VideoPipeline, None for anything else."""
    return "motif-video" if pipeline_class(Path(path)) in _PIPELINES else None


def load_motif_video_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                            variant: str | None = None) -> MotifVideoWeights:
    """Lazy weights of the Motif-Video diffusers folder `path`. `dtype`: None (as stored;
    bfloat16 read as float32), "float16" or "float32"; `variant`: e.g. "fp16". WeightsError
    naming the file or folder when it is not such a pipeline or a component is missing."""
    root = Path(path)
    name = pipeline_class(root)
    pipeline_index(root, name if name in _PIPELINES else _PIPELINES[0],
                   (*DIT_COMPONENTS, "guider"))
    vision: dict[str, Any] = {}
    parts = dit_weights(root, dtype=dtype, variant=variant, skip=(),
                        adapt=lambda *args: _adapt(*args, vision=vision))
    tokenizer = root / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        raise WeightsError(f"{tokenizer / 'tokenizer.json'}: required file is missing (the "
                           "Gemma tokenizer the text encoder reads prompts with)")
    text = parts["text_encoder"]
    assert text is not None
    tower = (ComponentWeights("vision_tower", vision["config"], vision["refs"],
                              dtype=text.dtype) if vision.get("refs") else None)
    processor = root / "feature_extractor" / "preprocessor_config.json"
    return MotifVideoWeights(
        scheduler_config=read_json(root / "scheduler" / "scheduler_config.json"),
        tokenizer_dir=tokenizer, guider_config=read_json(root / "guider" / "guider_config.json"),
        pipeline=str(name), vision=tower,
        feature_extractor=read_json(processor) if processor.is_file() else None,
        **parts)  # type: ignore[arg-type]


def _adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef], *,
           vision: dict[str, Any]) -> tuple[dict[str, Any], dict[str, TensorRef]]:
    """The text encoder's config and tensors as models.t5gemma2's (WeightsError for another
    model's); its SigLIP tower's (`vision_tower.` dropped) and config put in `vision`."""
    if name != "text_encoder":
        return config, refs
    try:
        text = t5gemma2_text_config(config)
    except ValueError as error:
        raise WeightsError(f"text_encoder/config.json: {error}") from None
    # under models.redux.SiglipVisionModel's names (`vision_model.`), the pooling head left out
    vision["config"] = config.get("vision_config") or {}
    vision["refs"] = {"vision_model." + key.removeprefix("vision_tower."): ref
                      for key, ref in refs.items() if key.startswith("vision_tower.")
                      and not key.startswith("vision_tower.head.")}
    return text, t5gemma2_text_weights(refs)
