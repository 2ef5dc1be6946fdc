"""Diffusers folders of NVIDIA's SANA-Video (`SanaVideoPipeline`, e.g.
SANA-Video_2B_480p_diffusers): transformer/ (SanaVideoTransformer3DModel), text_encoder/
(transformers' Gemma2Model, or a Gemma2ForCausalLM whose `model.` prefix and `lm_head` are
dropped), tokenizer/ (Gemma's tokenizer.json), vae/ (AutoencoderKLWan, Wan 2.1's) and
scheduler/ (DPMSolverMultistepScheduler on flow sigmas). The pipeline also accepts a DC-AE or
LTX-2 VAE in diffusers; the released folders use Wan's, the only one read here.

    weights = load_sana_video_folder("SANA-Video_2B_480p_diffusers")
    transformer = SanaVideoTransformer3DModel(weights.transformer.config)
    transformer.load_state_dict(weights.transformer)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import causal_lm_refs, pipeline_class, pipeline_index, read_json
from ..formats.dit_folder import DIT_COMPONENTS, DiTWeights, dit_weights
from ..weights import TensorRef

__all__ = ["SanaVideoWeights", "load_sana_video_folder", "sana_video_family"]

_PIPELINES = ("SanaVideoPipeline",)


class SanaVideoWeights(DiTWeights):
    """A SANA-Video folder's lazy component weights, scheduler config and tokenizer folder."""


def sana_video_family(path: str | os.PathLike[str]) -> str | None:
    """"sana-video" for a diffusers folder whose model_index.json names a SanaVideoPipeline,
    None for anything else (a broken JSON file is left for loading to name)."""
    return "sana-video" if pipeline_class(Path(path)) in _PIPELINES else None


def load_sana_video_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                           variant: str | None = None) -> SanaVideoWeights:
    """Lazy weights of the SANA-Video diffusers folder `path`. `dtype`: None (as stored;
    bfloat16 read as float32), "float16" or "float32"; `variant`: e.g. "fp16". WeightsError
    naming the file or folder when it is not such a pipeline, its VAE is not Wan's or a
    component is missing."""
    root = Path(path)
    pipeline_index(root, "SanaVideoPipeline", DIT_COMPONENTS)
    vae = read_json(root / "vae" / "config.json").get("_class_name", "AutoencoderKLWan")
    if vae != "AutoencoderKLWan":
        raise WeightsError(f"{root / 'vae' / 'config.json'}: a {vae}; SANA-Video runs here "
                           "with Wan 2.1's VAE (AutoencoderKLWan), as the released folders")
    parts = dit_weights(root, dtype=dtype, variant=variant, skip=(), adapt=_adapt)
    tokenizer = root / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        raise WeightsError(f"{tokenizer / 'tokenizer.json'}: required file is missing (the "
                           "Gemma tokenizer the text encoder reads prompts with)")
    return SanaVideoWeights(
        scheduler_config=read_json(root / "scheduler" / "scheduler_config.json"),
        tokenizer_dir=tokenizer, **parts)  # type: ignore[arg-type]


def _adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
           ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
    """A Gemma2ForCausalLM text encoder's weights as its base model's (a Gemma2Model's)."""
    return config, (causal_lm_refs(refs) if name == "text_encoder" else refs)
