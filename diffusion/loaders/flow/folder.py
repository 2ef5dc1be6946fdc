"""Diffusers folders of the flow-matching transformers: FLUX.1 (`FluxPipeline`: transformer/,
vae/, text_encoder/ CLIP-L, text_encoder_2/ T5-XXL, tokenizer/, tokenizer_2/, scheduler/) and
SD3/3.5 (`StableDiffusion3Pipeline`: the same plus text_encoder_2/ OpenCLIP-G with projection
and text_encoder_3/ T5, which a folder may leave out as null).

Each component goes through the SD loaders' safetensors walk (`.fp16` variants, sharded
`.safetensors.index.json`, pickles refused) into lazy `ComponentWeights`; the models' own
`load_state_dict` checks the keys, naming every missing or unexpected one.

    weights = load_flow_folder("FLUX.1-schnell")
    weights.family                     # "flux" or "sd3"
    transformer = FluxTransformer2DModel(weights.transformer.config)
    transformer.load_state_dict(weights.transformer)   # read tensor by tensor
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from ..errors import WeightsError
from ..formats.diffusers_folder import read_json, weight_refs
from ..weights import ComponentWeights, resolve_dtype

__all__ = ["FlowWeights", "flow_family", "is_fill_transformer", "load_flow_folder"]

# model_index.json's _class_name -> family, and the components each family needs
_FAMILIES = {"FluxPipeline": "flux", "FluxKontextPipeline": "flux", "FluxFillPipeline": "flux",
             "FluxControlPipeline": "flux",  # FLUX.1 Canny / Depth dev (Flux Tools)
             "StableDiffusion3Pipeline": "sd3"}
_REQUIRED = {"flux": ("transformer", "vae", "text_encoder", "text_encoder_2"),
             "sd3": ("transformer", "vae", "text_encoder", "text_encoder_2")}
_OPTIONAL = {"flux": (), "sd3": ("text_encoder_3",)}
_STEMS = {"transformer": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model"}


@dataclass
class FlowWeights:
    """A FLUX or SD3 folder's lazy component weights, configs and tokenizer folders."""

    family: Literal["flux", "sd3"]
    transformer: ComponentWeights | None  # None when skipped (a single file replaces it)
    vae: ComponentWeights
    text_encoder: ComponentWeights
    text_encoder_2: ComponentWeights
    scheduler_config: dict[str, Any]
    tokenizer_dirs: dict[str, Path] = field(default_factory=dict)
    text_encoder_3: ComponentWeights | None = None


def _declared(index: dict[str, Any], name: str) -> bool:
    entry = index.get(name)
    return isinstance(entry, list) and bool(entry) and entry[0] is not None


def _component(root: Path, name: str, variant: str | None, dtype: Any,
               weightless: tuple[str, ...] = ()) -> ComponentWeights:
    config = read_json(root / name / "config.json")
    try:
        refs, _where = weight_refs(root / name, _STEMS.get(name, "model"), variant)
    except WeightsError:
        if name not in weightless:
            raise
        refs = {}  # its config only: a file gives the weights

    if name.startswith("text_encoder"):
        # transformers < 5.6 saved CLIPTextModel weights under "text_model."; newer, without
        refs = {key.removeprefix("text_model."): ref for key, ref in refs.items()}
    return ComponentWeights(name, config, refs, dtype=dtype)


def load_flow_folder(path: str | Path, *, dtype: Any = None, variant: str | None = None,
                     skip: tuple[str, ...] = (), weightless: tuple[str, ...] = ()
                     ) -> FlowWeights:
    """Lazy weights of the FLUX or SD3 diffusers folder `path`.

    `dtype`: None (as stored; bfloat16 read as float32), "float16" or "float32". `variant`:
    e.g. "fp16" for `*.fp16.safetensors` files. `skip`: components not to load (None in the
    result; "transformer" when a single file supplies it). `weightless`: components that may
    come without weights (their config only, no tensors: files supply them, e.g. the text
    encoders of `--text-encoder`). Raises WeightsError naming the
    file when the folder is not a FLUX/SD3 pipeline or a component is missing."""
    root = Path(path)
    index = read_json(root / "model_index.json")
    family = _FAMILIES.get(str(index.get("_class_name")))
    if family is None:
        raise WeightsError(f"{root / 'model_index.json'}: _class_name "
                           f"{index.get('_class_name')!r} is not a flow-matching pipeline; "
                           f"expected one of {sorted(_FAMILIES)} (SD and SDXL folders load "
                           "with load_pipeline_weights)")
    resolved = resolve_dtype(dtype)
    for name in _REQUIRED[family]:
        if name not in skip and not _declared(index, name):
            raise WeightsError(f"{root / 'model_index.json'}: the {index['_class_name']} has "
                               f"no {name!r} component")
    components = {name: _component(root, name, variant, resolved, weightless)
                  for name in (*_REQUIRED[family], *_OPTIONAL[family])
                  if _declared(index, name) and name not in skip}
    transformer = components.pop("transformer", None)  # None: skipped, a file replaces it
    tokenizers = {name: root / name for name in ("tokenizer", "tokenizer_2", "tokenizer_3")
                  if (root / name).is_dir()}
    return FlowWeights(family=family,  # type: ignore[arg-type]
                       scheduler_config=read_json(root / "scheduler" / "scheduler_config.json"),
                       tokenizer_dirs=tokenizers, transformer=transformer, **components)


def flow_family(path: str | os.PathLike[str]) -> str | None:
    """"flux-dev", "flux-schnell", "flux-kontext", "flux-fill" or "sd3" for a FLUX / SD3
    diffusers folder (its model_index.json's _class_name; dev embeds guidance, its transformer
    config says so; Kontext's folder is a FluxKontextPipeline, Fill's a FluxFillPipeline or a
    transformer taking the masked picture and mask: `is_fill_transformer`), None for anything
    else. Reads two small JSON files; a broken one is left for loading to name."""
    root = Path(path)
    try:
        index = read_json(root / "model_index.json")
    except WeightsError:
        return None
    name = str(index.get("_class_name"))
    family = _FAMILIES.get(name)
    if family != "flux":
        return family
    if name == "FluxKontextPipeline":  # FLUX.1 dev's transformer, a reference beside the noise
        return "flux-kontext"
    if name == "FluxFillPipeline":  # FLUX.1 dev's widened to take the masked picture and mask
        return "flux-fill"
    try:
        config = read_json(root / "transformer" / "config.json")
    except WeightsError:
        return "flux-dev"  # a folder whose transformer comes from BFL's file
    if is_fill_transformer(config.get("in_channels", 64), config.get("out_channels")):
        return "flux-fill"
    return "flux-dev" if config.get("guidance_embeds", True) else "flux-schnell"


def is_fill_transformer(in_channels: int, out_channels: int | None) -> bool:
    """Whether a FLUX transformer of these widths is FLUX.1 Fill's: besides the noise's
    channels it takes the masked picture's latents (as many) and the packed 8x8 mask (256;
    FLUX.1 Fill: 64 + 64 + 256 = 384)."""
    return out_channels is not None and in_channels == 2 * out_channels + 256
