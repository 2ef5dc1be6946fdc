"""The alphas of a diffusers/PEFT LoRA file, kept in its metadata rather than in tensors.

diffusers' `save_lora_weights` stores each component's PEFT `LoraConfig` as JSON under the
safetensors metadata key `lora_adapter_metadata`, flattened with the component as prefix:
`unet.lora_alpha`, `unet.alpha_pattern` ({module pattern: alpha}), `unet.use_rslora`, ... A
module's alpha is the first pattern matching the end of its name (PEFT's `get_pattern_key`:
`(.*\\.)?(pattern)$`), else `lora_alpha`; without metadata a PEFT file's scale is 1.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ._errors import LoraError

__all__ = ["METADATA_KEY", "apply_adapter_config"]

METADATA_KEY = "lora_adapter_metadata"


def _configs(path: Path, metadata: dict[str, str]) -> dict[str, Any]:
    """The flattened per-component config, {} when the file has none."""
    raw = metadata.get(METADATA_KEY)
    if not raw:
        return {}
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise LoraError(f"{path}: metadata {METADATA_KEY!r} is not valid JSON ({exc}); the file is "
                    "damaged") from None
    if not isinstance(config, dict):
        raise LoraError(f"{path}: metadata {METADATA_KEY!r} must be a JSON object")
    return config


def _alpha(config: dict[str, Any], component: str, name: str) -> float | None:
    patterns = config.get(f"{component}.alpha_pattern") or {}
    for pattern, alpha in patterns.items():
        if re.match(rf"(.*\.)?({pattern})$", name):
            return float(alpha)
    alpha = config.get(f"{component}.lora_alpha")
    return None if alpha is None else float(alpha)


def apply_adapter_config(path: Path, metadata: dict[str, str], modules: Iterable[Any]) -> None:
    """Give each diffusers-format module without an `alpha` tensor the alpha its file's
    adapter config sets (and mark rank-stabilized ones); LoraError for malformed JSON. (DoRA's
    `use_dora` needs nothing here: its magnitudes are tensors of the file.)"""
    config = _configs(path, metadata)
    if not config:
        return
    for module in modules:
        if module.key.startswith("lora_") or module.alpha is not None:
            continue  # kohya names carry their own alpha tensors
        alpha = _alpha(config, module.component, module.name)
        if alpha is not None:
            module.alpha = alpha
        module.rank_stabilized = bool(config.get(f"{module.component}.use_rslora"))
