"""The hashes the WebUI writes for LoRAs in infotext (`Lora hashes: "name: 0123456789ab"`)."""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterable

__all__ = ["format_lora_hashes", "lora_hash", "short_hash"]


def lora_hash(path: str | os.PathLike[str], metadata: dict[str, str] | None = None) -> str:
    """The WebUI's hash of a LoRA file (64 hex digits): the `sshs_model_hash` its metadata
    records, else kohya's "addnet" hash, the sha256 of the tensor data (the bytes after the
    safetensors header, so editing the metadata does not change it). The WebUI's
    `modules/hashes.py` `addnet_hash_safetensors`."""
    if metadata and metadata.get("sshs_model_hash"):
        return metadata["sshs_model_hash"]
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        (length,) = struct.unpack("<Q", file.read(8))
        file.seek(8 + length)
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def short_hash(path: str | os.PathLike[str], metadata: dict[str, str] | None = None) -> str:
    """The first 12 hex digits of `lora_hash`: what `Lora hashes` in infotext shows."""
    return lora_hash(path, metadata)[:12]


def format_lora_hashes(named: Iterable[tuple[str, str]]) -> str:
    """The value of the infotext's `Lora hashes` from (name as the prompt wrote it, short
    hash) pairs: "name: hash, name2: hash2", with ':' and ',' taken out of names as the WebUI
    does (the infotext writer quotes the whole value)."""
    return ", ".join(f"{name.replace(':', '').replace(',', '')}: {digest}"
                     for name, digest in named)
