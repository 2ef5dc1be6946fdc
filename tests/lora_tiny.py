"""A tiny random LoRA as its trainers make one: peft's adapter on a diffusers transformer, its
A and B redrawn (peft starts B at zero) so it visibly changes the picture, saved by the
pipeline's own `save_lora_weights` (diffusers/PEFT's `transformer.` names, the adapter's
config with its alpha in the file's metadata)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def peft_lora(model: Any, targets: list[str] | str, pipeline: Any, folder: Path, name: str,
              seed: int = 3, scale: float = 0.4) -> Path:
    """A rank-2 LoRA (alpha 3: peft's scale 1.5) of `model`'s `targets` (peft's
    target_modules: layer names, or a regex of whole module paths), A and B ~ N(0, scale^2),
    written by `pipeline.save_lora_weights` as `folder / f"{name}.safetensors"`; returns that
    path. `model` keeps the adapter."""
    import torch
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    model.add_adapter(LoraConfig(r=2, lora_alpha=3, target_modules=targets))
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, p in model.named_parameters():
            if "lora_" in key:
                p.copy_(torch.randn(p.shape, generator=gen) * scale)
    pipeline.save_lora_weights(
        folder, transformer_lora_layers=get_peft_model_state_dict(model),
        weight_name=f"{name}.safetensors",
        transformer_lora_adapter_metadata=model.peft_config["default"].to_dict())
    return folder / f"{name}.safetensors"
