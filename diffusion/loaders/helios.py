"""Diffusers folders of PKU-YuanGroup's Helios (`HeliosPipeline`, e.g. Helios-Base):
transformer/ (HeliosTransformer3DModel), text_encoder/ (transformers' UMT5EncoderModel, Wan's),
tokenizer/ (UMT5's tokenizer.json), vae/ (AutoencoderKLWan, Wan 2.1's) and scheduler/
(HeliosScheduler). The distilled pyramid folders (HeliosPyramidPipeline: Helios-Mid,
Helios-Distilled) are told apart and refused in one line.

    weights = load_helios_folder("Helios-Base")
    transformer = HeliosTransformer3DModel(weights.transformer.config)
    transformer.load_state_dict(weights.transformer)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .errors import WeightsError
from .formats.diffusers_folder import pipeline_class, pipeline_index, read_json
from .formats.dit_folder import DIT_COMPONENTS, DiTWeights, dit_weights
from .weights import TensorRef

__all__ = ["HeliosWeights", "helios_family", "load_helios_folder"]

_PIPELINES = ("HeliosPipeline", "HeliosPyramidPipeline")


class HeliosWeights(DiTWeights):
    """A Helios folder's lazy component weights, scheduler config and tokenizer folder."""


def helios_family(path: str | os.PathLike[str]) -> str | None:
    """"helios" for a diffusers folder whose model_index.json names a HeliosPipeline or a
    HeliosPyramidPipeline (refused when loaded), None for anything else."""
    return "helios" if pipeline_class(Path(path)) in _PIPELINES else None


def load_helios_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                       variant: str | None = None) -> HeliosWeights:
    """Lazy weights of the Helios diffusers folder `path`. `dtype`: None (as stored;
    bfloat16 read as float32), "float16" or "float32"; `variant`: e.g. "fp16". WeightsError
    naming the file or folder when it is not such a pipeline (a pyramid one included) or a
    component is missing."""
    root = Path(path)
    if pipeline_class(root) == "HeliosPyramidPipeline":
        raise WeightsError(f"{root}: a HeliosPyramidPipeline (Helios-Mid / Helios-Distilled, "
                           "pyramid sampling) is not supported yet; use a HeliosPipeline "
                           "folder (Helios-Base)")
    pipeline_index(root, "HeliosPipeline", DIT_COMPONENTS)
    scheduler = read_json(root / "scheduler" / "scheduler_config.json")
    parts = dit_weights(root, dtype=dtype, variant=variant, skip=(), adapt=_adapt)
    tokenizer = root / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        raise WeightsError(f"{tokenizer / 'tokenizer.json'}: required file is missing (the "
                           "UMT5 tokenizer the text encoder reads prompts with)")
    return HeliosWeights(scheduler_config=scheduler, tokenizer_dir=tokenizer,
                         **parts)  # type: ignore[arg-type]


def _adapt(name: str, config: dict[str, Any], refs: dict[str, TensorRef]
           ) -> tuple[dict[str, Any], dict[str, TensorRef]]:
    """The transformer's weights without `norm_added_q` (a norm no Helios layer reads, which
    diffusers skips on load too: `_keys_to_ignore_on_load_unexpected`)."""
    if name != "transformer":
        return config, refs
    return config, {key: ref for key, ref in refs.items() if "norm_added_q" not in key}
