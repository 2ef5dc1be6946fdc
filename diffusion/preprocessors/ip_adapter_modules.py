"""The ControlNet extension's (and Forge's) IP-Adapter module names. Such a module makes no map:
the unit's picture goes as it is to an IP-Adapter's CLIP image encoder
(diffusion.pipelines.ip_adapter.IPAdapterUnit), the module naming which encoder."""

from __future__ import annotations

__all__ = ["IP_ADAPTER_MODULES", "encoder_width"]

# module -> the encoder it names (None: the model's own choice, "ip-adapter-auto")
IP_ADAPTER_MODULES: dict[str, str | None] = {
    "ip-adapter-auto": None,
    "ip-adapter_clip_h": "ViT-H/14",
    "ip-adapter_clip_g": "ViT-bigG/14",
    "ip-adapter_clip_sd15": "ViT-H/14",  # the extension's older names
    "ip-adapter_clip_sdxl": "ViT-bigG/14",
    "ip-adapter_clip_sdxl_plus_vith": "ViT-H/14",
}
_WIDTHS = {"ViT-H/14": 1280, "ViT-bigG/14": 1664}


def encoder_width(module: str) -> int | None:
    """The hidden width of the encoder `module` names (1280 ViT-H, 1664 ViT-bigG); None for
    ip-adapter-auto. KeyError for a module that is not an IP-Adapter one."""
    name = IP_ADAPTER_MODULES[module]
    return None if name is None else _WIDTHS[name]
