"""IP-Adapters and their CLIP image encoders on the GPU from the files people share.

    encoder = load_image_encoder("IP-Adapter/models/image_encoder")       # a transformers folder
    adapter = load_ip_adapter("ip-adapter_sd15.safetensors", image_encoder=encoder)

An adapter is h94's `.safetensors` (`image_proj.*` and `ip_adapter.*` keys) or `.bin` (the
same under two nested dicts, read by the safe PyTorch reader without running the pickle).
An image encoder is a transformers `CLIPVisionModelWithProjection` folder (config.json +
model.safetensors or pytorch_model.bin) or one such file (ComfyUI's clip_vision files:
`vision_model.*` and `visual_projection.weight`), whose config is then read from the shapes.
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device
from gpustd.nn import StateDictError

from ...models.clip_vision import CLIPVisionModelWithProjection
from ...models.ip_adapter import IPAdapter
from ..errors import WeightsError
from ..formats.diffusers_folder import read_json
from ..formats.torch_file import open_weights_file
from ..weights import ComponentWeights, TensorRef, resolve_dtype

__all__ = ["image_encoder_config", "ip_adapter_reads", "load_image_encoder", "load_ip_adapter"]

_ENCODER_FILES = ("model.safetensors", "model.fp16.safetensors", "pytorch_model.bin")
# heads by width, for a file without config.json: OpenAI ViT-B/16 and ViT-L/14, OpenCLIP
# ViT-H/14 and ViT-bigG/14 (head widths 64, 64, 80, 104)
_HEADS = {768: 12, 1024: 16, 1280: 16, 1664: 16}
_QUICK_GELU = (768, 1024)  # OpenAI's models; the OpenCLIP ones use the exact GELU


def _refs(path: Path) -> dict[str, TensorRef]:
    file = open_weights_file(path)
    return {k: TensorRef(file, k, tuple(file.shape(k))) for k in file.keys()}


def _encoder_config(refs: dict[str, TensorRef], where: str) -> dict[str, Any]:
    """transformers' CLIPVisionConfig of a file's tensors."""
    def shape(key: str) -> tuple[int, ...]:
        if key not in refs:
            raise WeightsError(f"{where}: no tensor {key!r}: not a CLIP vision model "
                               "(transformers' CLIPVisionModelWithProjection names)")
        return refs[key].shape

    width = shape("vision_model.embeddings.class_embedding")[0]
    patch = shape("vision_model.embeddings.patch_embedding.weight")[-1]
    positions = shape("vision_model.embeddings.position_embedding.weight")[0]
    layers = len({m[1] for k in refs if (m := re.match(r"vision_model\.encoder\.layers\.(\d+)\.",
                                                       k))})
    return {"hidden_size": width, "patch_size": patch,
            "image_size": math.isqrt(positions - 1) * patch, "num_hidden_layers": layers,
            "intermediate_size": shape("vision_model.encoder.layers.0.mlp.fc1.weight")[0],
            "num_attention_heads": _HEADS.get(width, max(1, width // 64)),
            "projection_dim": shape("visual_projection.weight")[0],
            "hidden_act": "quick_gelu" if width in _QUICK_GELU else "gelu"}


def _encoder_file(path: Path) -> tuple[Path, dict[str, Any] | None]:
    """The weights file of an image encoder at `path`, and its folder's config (None for a
    lone file)."""
    if path.is_dir():
        found = next((path / name for name in _ENCODER_FILES if (path / name).is_file()), None)
        if found is None:
            raise WeightsError(f"{path}: no {' or '.join(_ENCODER_FILES)}: not a transformers "
                               "CLIP vision model folder")
        config = read_json(path / "config.json") if (path / "config.json").is_file() else None
        return found, config
    if not path.is_file():
        raise WeightsError(f"{path}: no such image encoder file or folder")
    return path, None


def image_encoder_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The CLIPVisionConfig of the image encoder at `path` (its config.json, else read from
    its tensors' shapes), without loading its weights."""
    file, config = _encoder_file(Path(path))
    return config or _encoder_config(_refs(file), str(file))


def load_image_encoder(path: str | os.PathLike[str], *, dtype: Any = np.float32,
                       device: Device | None = None) -> CLIPVisionModelWithProjection:
    """The CLIP image encoder at `path` (a folder or one file; see the module docstring).
    transformers: `CLIPVisionModelWithProjection.from_pretrained(path)`."""
    path, config = _encoder_file(Path(path))
    refs = {k: r for k, r in _refs(path).items() if not k.endswith("position_ids")}
    config = config or _encoder_config(refs, str(path))
    weights = ComponentWeights("image_encoder", config, refs, dtype=resolve_dtype(dtype))
    try:
        model = CLIPVisionModelWithProjection(config, dtype=dtype, device=device)
        model.load_state_dict(weights)
    except (ValueError, StateDictError) as exc:
        raise WeightsError(f"{path}: not a CLIP vision model with projection this program "
                           f"reads: {exc}") from None
    return model


def load_ip_adapter(path: str | os.PathLike[str], *,
                    image_encoder: CLIPVisionModelWithProjection | str | os.PathLike[str] | None
                    = None, dtype: Any = np.float32, device: Device | None = None) -> IPAdapter:
    """The IP-Adapter at `path` on `device`; `image_encoder` (a loaded encoder, or its path)
    is kept with it for the units that use it. diffusers: `pipe.load_ip_adapter(folder,
    subfolder, weight_name, image_encoder_folder=...)`."""
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: no such IP-Adapter file (h94's ip-adapter_*.safetensors "
                           "or .bin)")
    refs = _refs(path)
    try:
        model = IPAdapter.from_shapes({k: r.shape for k, r in refs.items()}, dtype=dtype,
                                      device=device, name=path.stem)
        model.load_state_dict(ComponentWeights("ip_adapter", {}, refs,
                                               dtype=resolve_dtype(dtype)))
    except (KeyError, ValueError, StateDictError) as exc:
        raise WeightsError(f"{path}: not an IP-Adapter this program reads: {exc}") from None
    if image_encoder is not None and not isinstance(image_encoder,
                                                    CLIPVisionModelWithProjection):
        image_encoder = load_image_encoder(image_encoder, dtype=dtype, device=device)
    model.image_encoder = image_encoder
    return model


def ip_adapter_reads(path: str | os.PathLike[str]) -> tuple[bool, int]:
    """(plus, width) of the IP-Adapter file at `path`, from its tensors' shapes alone: whether
    it reads the image encoder's hidden states (plus) or its image embedding, and how wide
    (IPAdapter.plus and .embed_dim). WeightsError for a file that is not an IP-Adapter."""
    shapes = {k: tuple(r.shape) for k, r in _refs(Path(path)).items()}
    for key, plus in (("image_proj.proj_in.weight", True), ("image_proj.proj.weight", False)):
        if len(shapes.get(key, ())) == 2:
            return plus, int(shapes[key][1])
    raise WeightsError(f"{path}: not an IP-Adapter this program reads (no "
                       "image_proj.proj.weight nor image_proj.proj_in.weight)")
