"""The IP-Adapter options (`--ip-adapter`, `--ip-image`, `--ip-scale`, `--image-encoder`): checked
before the model loads, made into IPAdapterUnits (diffusion.pipelines.ip_adapter) after."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["ip_adapter_units"]


def ip_adapter_units(args: argparse.Namespace) -> Callable[[Any], tuple[Any, ...]] | None:
    """None without --ip-adapter; else a function of the loaded pipeline giving its units.
    ValueError naming the option now for a missing file, picture or count."""
    adapters = getattr(args, "ip_adapter", None) or []
    images = getattr(args, "ip_image", None) or []
    scales = getattr(args, "ip_scale", None) or [1.0]
    if not adapters:
        # --image-encoder alone serves the IP-Adapter units --from-infotext found
        if images or (args.image_encoder and not getattr(args, "control_models", None)):
            raise ValueError("--ip-image and --image-encoder need --ip-adapter PATH")
        return None
    if len(images) != len(adapters):
        raise ValueError(f"give one --ip-image per --ip-adapter: got {len(adapters)} adapters "
                         f"and {len(images)} pictures")
    if len(scales) not in (1, len(adapters)):
        raise ValueError(f"give one --ip-scale for all, or one per --ip-adapter "
                         f"({len(adapters)}); got {len(scales)}")
    if not args.image_encoder:
        raise ValueError("--ip-adapter needs --image-encoder PATH: the CLIP image encoder "
                         "(h94's models/image_encoder folder for SD 1.5 and the _vit-h SDXL "
                         "adapters, sdxl_models/image_encoder for ip-adapter_sdxl)")
    for option, path in [*(("--ip-adapter", a) for a in adapters),
                         ("--image-encoder", args.image_encoder)]:
        if not Path(path).exists():
            raise ValueError(f"{option} {path!r} does not exist")
    pictures = [_picture(path) for path in images]
    weights = scales * len(adapters) if len(scales) == 1 else scales

    def units(pipe: Any) -> tuple[Any, ...]:
        from ..loaders.control.catalog import short_hash
        from ..loaders.control.ip_adapter_file import load_image_encoder, load_ip_adapter
        from ..pipelines.ip_adapter import IPAdapterUnit

        place = pipe.placement  # the device, and the dtype of its denoiser
        encoder = load_image_encoder(args.image_encoder, dtype=place.dtype,
                                     device=place.device)
        out = []
        for path, picture, scale in zip(adapters, pictures, weights):
            adapter = load_ip_adapter(path, image_encoder=encoder, dtype=place.dtype,
                                      device=place.device)
            adapter.title = f"{Path(path).stem} [{short_hash(Path(path))}]"  # as the extension
            out.append(IPAdapterUnit(adapter, picture, weight=scale))
        return tuple(out)

    return units


def _picture(path: str) -> Any:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise ValueError(f"--ip-image {path!r} does not exist") from None
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"--ip-image {path!r} is not a readable image ({exc})") from None
