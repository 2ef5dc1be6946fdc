"""The FLUX Redux options (`--redux`, `--redux-image-encoder`, `--redux-image`,
`--redux-prompt-scale`, `--redux-pooled-scale`): checked before the model loads, made into the
request's ReduxReference (diffusion.pipelines.flow.redux) after."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_redux_options", "redux_reference"]


def add_redux_options(parser: argparse.ArgumentParser, number: Any) -> None:
    """The Redux option group; `number`: the CLI's float type."""
    group = parser.add_argument_group(
        "FLUX Redux", "image variations and prompt mixing with FLUX.1 models: the picture's "
        "SigLIP tokens join the prompt's T5 tokens (diffusers' FluxPriorReduxPipeline)")
    group.add_argument("--redux", metavar="FOLDER|FILE",
                       help="a FLUX.1 Redux diffusers folder (FluxPriorReduxPipeline: "
                            "image_encoder/, image_embedder/, feature_extractor/), or BFL's "
                            "flux1-redux-dev.safetensors with --redux-image-encoder")
    group.add_argument("--redux-image-encoder", metavar="FOLDER|FILE",
                       help="the SigLIP image encoder for a Redux file: ComfyUI's "
                            "sigclip_vision_patch14_384.safetensors or google/siglip-so400m-"
                            "patch14-384's folder (a Redux folder has its own)")
    group.add_argument("--redux-image", metavar="IMG", help="the picture Redux reads")
    group.add_argument("--redux-prompt-scale", type=number, default=1.0, metavar="S",
                       help="diffusers' prompt_embeds_scale: the prompt's and the picture's T5 "
                            "tokens times S (1)")
    group.add_argument("--redux-pooled-scale", type=number, default=1.0, metavar="S",
                       help="diffusers' pooled_prompt_embeds_scale: CLIP's pooled prompt "
                            "times S (1)")


def redux_reference(args: argparse.Namespace) -> Callable[[Any], Any] | None:
    """None without --redux; else a function of the loaded pipeline giving the request's
    ReduxReference. ValueError naming the option now for a missing folder or picture."""
    folder, image = getattr(args, "redux", None), getattr(args, "redux_image", None)
    if folder is None:
        if image is not None:
            raise ValueError("--redux-image needs --redux FOLDER (a FLUX.1 Redux folder)")
        return None
    if image is None:
        raise ValueError("--redux needs --redux-image IMG: the picture Redux reads")
    encoder = getattr(args, "redux_image_encoder", None)
    if not Path(folder).exists():
        raise ValueError(f"--redux {folder!r} does not exist: give a FLUX.1 Redux diffusers "
                         "folder or flux1-redux-dev.safetensors")
    if Path(folder).is_file() and encoder is None:
        raise ValueError("--redux FILE holds the Redux embedder alone: give the SigLIP image "
                         "encoder with --redux-image-encoder (sigclip_vision_patch14_384"
                         ".safetensors)")
    if encoder is not None and not Path(encoder).exists():
        raise ValueError(f"--redux-image-encoder {encoder!r} does not exist")
    picture = _picture(image)

    def reference(pipe: Any) -> Any:
        from ..pipelines.flow.redux import FluxRedux, ReduxReference

        if not pipe.capabilities.redux:
            raise ValueError(f"--redux: FLUX Redux works with FLUX.1 models; this is a "
                             f"{pipe.capabilities.family} model")
        place = pipe.placement
        redux = FluxRedux.from_pretrained(folder, dtype=place.dtype, device=place.device,
                                          image_encoder=encoder)
        return ReduxReference(redux, picture, float(args.redux_prompt_scale),
                              float(args.redux_pooled_scale))

    return reference


def _picture(path: str) -> Any:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except FileNotFoundError:
        raise ValueError(f"--redux-image {path!r} does not exist") from None
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"--redux-image {path!r} is not a readable image ({exc})") from None
