"""LoRA and LyCORIS (LoCon, LoHa) networks: read from `.safetensors` (or a `.pt`, read without
running it), patched into a loaded pipeline's weights, changed or removed between generations
without reloading the model.

    from diffusion.lora import LoraManager, find_lora, lora_hashes, lora_uses

    loras = LoraManager(pipe)                        # pipe = diffusion.load_pipeline(...)
    path = find_lora("fluffy", "models/Lora")        # <lora:fluffy:0.8>
    loras.set([(path, 0.8, 0.8)])                    # (file, text-encoder weight, UNet weight)
    pipe.txt2img(...)
    loras.clear()                                    # the original weights, bit for bit

    # from a prompt's tags (diffusion.text.prompts.extract_extra_networks):
    loras.set(lora_uses(networks, "models/Lora", load=loras.load))
    infotext["Lora hashes"] = lora_hashes(loras.active)

Formats: kohya/WebUI (`lora_unet_*`, `lora_te_*`, `lora_te1_*`/`lora_te2_*`; diffusers or
original LDM layer names), diffusers/PEFT (`unet.*.lora_A/lora_B`, `*.lora.down/up`), LyCORIS
LoCon (conv layers, `lora_mid`) and LoHa. Pickle files are refused. See `_manager` for how
the weights are patched and restored exactly.
"""

from ._errors import LoraError
from ._file import LoraFile, LoraModule
from ._find import find_lora
from ._hashes import format_lora_hashes, lora_hash, short_hash
from ._manager import MAX_MULTIPLIER, LoraManager, LoraUse
from ._tags import LORA_TAGS, lora_hashes, lora_uses

__all__ = [
    "LORA_TAGS",
    "MAX_MULTIPLIER",
    "LoraError",
    "LoraFile",
    "LoraManager",
    "LoraModule",
    "LoraUse",
    "find_lora",
    "format_lora_hashes",
    "lora_hash",
    "lora_hashes",
    "lora_uses",
    "short_hash",
]
