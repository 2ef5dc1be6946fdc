"""From a prompt's `<lora:NAME:TE:UNET:DYN>` tags to LoRAs in use, and back to infotext."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from ..text.prompts import ExtraNetwork
from ._errors import LoraError
from ._file import LoraFile
from ._find import find_lora
from ._hashes import format_lora_hashes
from ._manager import LoraUse

__all__ = ["LORA_TAGS", "lora_hashes", "lora_uses"]

# The WebUI's Lora extension answers `<lyco:...>` too (an alias kept for old prompts).
LORA_TAGS = ("lora", "lyco")


def lora_uses(networks: Iterable[ExtraNetwork], lora_dir: str | os.PathLike[str],
              load: Callable[[Path], LoraFile] = LoraFile.load) -> list[LoraUse]:
    """The LoRAs that `networks` (from `prompts.extract_extra_networks`) name, in order, each
    file found by name in `lora_dir` (`find_lora`) and read with `load` (pass a caching
    loader, e.g. `LoraManager.load`, to parse each file once). Tags of other kinds are skipped.

    Raises LoraError naming the tag for a name not found, and ValueError for weights that are
    not numbers."""
    uses = []
    for tag in networks:
        if tag.kind not in LORA_TAGS:
            continue
        try:
            path = find_lora(tag.name, lora_dir)
        except LoraError as exc:
            raise LoraError(f"<{tag.kind}:{tag.name}>: {exc}") from None
        uses.append(LoraUse(load(path), tag.weight, tag.unet_weight, tag.dyn_dim, tag.name))
    return uses


def lora_hashes(uses: Iterable[LoraUse]) -> str:
    """The infotext's `Lora hashes` value for `uses` ("name: 0123456789ab, ..."; empty for
    none): each LoRA under the name the prompt called it (the WebUI's `mentioned_name`)."""
    return format_lora_hashes((use.label, use.file.short_hash) for use in uses)
