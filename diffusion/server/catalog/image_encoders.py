"""The CLIP image encoders a server's IP-Adapter units read their pictures with (`serve
--image-encoder PATH`, repeatable), and which one a unit takes.

    encoders = ImageEncoders(["IP-Adapter/models/image_encoder",
                              "IP-Adapter/sdxl_models/image_encoder"])
    encoders.choose("ip-adapter_clip_sd15", "ip-adapter_sd15.safetensors")  # the ViT-H one

The extension downloads its encoders (clip_h.pth, clip_g.pth) when a module first needs one;
a server here never fetches anything, so they are given at start. A unit takes the encoder
whose output its adapter reads (the image embedding's width for a plain adapter, the hidden
states' for a plus one); where several fit, the one its module names (ip-adapter_clip_h /
_sd15: ViT-H/14, 1280 wide; ip-adapter_clip_g / _sdxl: ViT-bigG/14, 1664), else the first
given. A module naming the other encoder than its adapter needs, which the extension would
fail on, takes the one that fits.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ...loaders.control.ip_adapter_file import image_encoder_config, ip_adapter_reads
from ...loaders.errors import WeightsError
from ...preprocessors.ip_adapter_modules import encoder_width

__all__ = ["EncoderEntry", "ImageEncoders"]


@dataclass(frozen=True)
class EncoderEntry:
    path: Path
    hidden_size: int
    projection_dim: int

    def gives(self, plus: bool) -> int:
        """The width of what it hands a plus adapter (hidden states) or a plain one."""
        return self.hidden_size if plus else self.projection_dim


class ImageEncoders:
    """The encoders at `paths` (their configs read now: FileNotFoundError / WeightsError
    naming --image-encoder for a path that is not one)."""

    def __init__(self, paths: list[str | os.PathLike[str]] | None = None) -> None:
        self.entries: list[EncoderEntry] = []
        for path in paths or []:
            if not Path(path).exists():
                raise FileNotFoundError(f"--image-encoder {str(path)!r} does not exist")
            try:
                config = image_encoder_config(path)
            except WeightsError as exc:
                raise WeightsError(f"--image-encoder: {exc}") from None
            self.entries.append(EncoderEntry(Path(path), int(config["hidden_size"]),
                                             int(config["projection_dim"])))

    def choose(self, module: str, adapter: str | os.PathLike[str]) -> Path:
        """The encoder for an IP-Adapter unit of `module` (an IP-Adapter module) whose model
        is the file `adapter`; ValueError saying what the server lacks."""
        if not self.entries:
            raise ValueError(f"{module!r} needs a CLIP image encoder and this server has "
                             "none: start it with --image-encoder PATH (h94's "
                             "models/image_encoder for SD 1.5 and the _vit-h SDXL adapters, "
                             "sdxl_models/image_encoder for ip-adapter_sdxl)")
        plus, width = ip_adapter_reads(adapter)
        fitting = [e for e in self.entries if e.gives(plus) == width]
        if not fitting:
            have = ", ".join(f"{e.path.name} ({e.gives(plus)})" for e in self.entries)
            what = "hidden states" if plus else "image embeddings"
            raise ValueError(f"{Path(adapter).stem} reads {width}-wide {what}; none of this "
                             f"server's image encoders gives that ({have}): add the one it was "
                             "made with (--image-encoder PATH)")
        named = encoder_width(module)
        return next((e.path for e in fitting if e.hidden_size == named), fitting[0].path)
