"""What the diffusers folders of the DiT pipelines with an LLM text encoder (Z-Image,
Qwen-Image, FLUX.2) share: transformer/, vae/ and text_encoder/ with diffusers' and
transformers' weight files, tokenizer/ and scheduler/, read into lazy `ComponentWeights`
that each family's loader adapts (a causal LM's `model.` prefix dropped, a vision
language model's language model taken out, ...).

    parts = dit_weights(root, dtype=None, variant=None, skip=(), adapt=adapt)
    weights = ZImageWeights(scheduler_config=..., tokenizer_dir=..., **parts)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..weights import ComponentWeights, TensorRef, resolve_dtype
from .diffusers_folder import read_json, weight_refs

__all__ = ["DIT_COMPONENTS", "DiTWeights", "dit_weights"]

DIT_COMPONENTS = ("transformer", "vae", "text_encoder", "tokenizer", "scheduler")
_STEMS = {"transformer": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model",
          "text_encoder": "model"}
Adapt = Callable[[str, dict[str, Any], dict[str, TensorRef]],
                 tuple[dict[str, Any], dict[str, TensorRef]]]


@dataclass
class DiTWeights:
    """A DiT folder's lazy component weights, its scheduler config and tokenizer folder."""

    transformer: ComponentWeights | None  # None when skipped (a single file replaces it)
    vae: ComponentWeights
    text_encoder: ComponentWeights | None  # likewise
    scheduler_config: dict[str, Any]
    tokenizer_dir: Path


def dit_weights(root: Path, *, dtype: Any, variant: str | None, skip: tuple[str, ...],
                adapt: Adapt, hints: Mapping[str, str] | None = None
                ) -> dict[str, ComponentWeights | None]:
    """The lazy weights of the folder `root`'s transformer, VAE and text encoder by name,
    each component's config and tensors as `adapt(name, config, refs)` gives them; those in
    `skip` None (single files replace them, and the folder need not hold them). `dtype`:
    None (as stored; bfloat16 read as float32), "float16" or "float32"; `variant`: e.g.
    "fp16"; `hints`: for a component, what it can be given as instead, for the error of a
    missing one to say. WeightsError naming the file or folder that is missing or broken."""
    resolved = resolve_dtype(dtype)
    parts: dict[str, ComponentWeights | None] = dict.fromkeys(skip)
    for name in ("transformer", "vae", "text_encoder"):
        if name in skip:
            continue
        config = read_json(root / name / "config.json")
        try:
            refs, _where = weight_refs(root / name, _STEMS[name], variant)
        except WeightsError as error:
            if not hints or name not in hints:
                raise
            raise WeightsError(f"{error}; or give the {name.replace('_', ' ')} as one file "
                               f"({hints[name]})") from None
        config, refs = adapt(name, config, refs)
        parts[name] = ComponentWeights(name, config, refs, dtype=resolved)
    return parts
