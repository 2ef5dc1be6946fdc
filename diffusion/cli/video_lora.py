"""txt2vid's --lora FILE[:WEIGHT]: the flag read (checked before the model loads) and the LoRAs
patched into a video pipeline's transformer (Wan's, Kandinsky 5 Video's) by a LoraManager."""

from __future__ import annotations

from pathlib import Path

__all__ = ["lora_spec", "patch_loras"]


def lora_spec(spec: str) -> tuple[Path, float]:
    """--lora FILE[:WEIGHT] as (file, weight); ValueError in one line for a missing file or a
    weight that is not a number."""
    path, weight = spec, 1.0
    head, colon, tail = spec.rpartition(":")
    if colon and head and not Path(spec).is_file():
        try:
            path, weight = head, float(tail)
        except ValueError:
            raise ValueError(f"--lora {spec}: WEIGHT after the last ':' must be a number "
                             "(FILE[:WEIGHT])") from None
    if not Path(path).is_file():
        raise ValueError(f"--lora {spec}: no such file (give a LoRA .safetensors)")
    return Path(path), weight


def patch_loras(targets: object, specs: list[str]) -> None:
    """The --lora FILE[:WEIGHT] `specs` patched into `targets` (a video pipeline's
    `lora_targets()`); ValueError in one line for a file that does not fit the model."""
    from ..lora import LoraManager

    LoraManager(targets).set([(path, weight, weight) for path, weight in map(lora_spec, specs)])
