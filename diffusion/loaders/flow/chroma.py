"""Chroma's weights: a diffusers folder (`ChromaPipeline`: transformer/, vae/, text_encoder/
T5-XXL, tokenizer/, scheduler/), or the transformer file people download
(`chroma-unlocked-v50.safetensors`, `Chroma1-HD.safetensors`: the original names, bare or
under ComfyUI's `model.diffusion_model.`; diffusion.loaders.keymaps.chroma_keys; or its GGUF,
`Chroma1-HD-Q8_0.gguf`, which diffusion.loaders.flow.gguf loads quantized), whose T5 and
VAE come from `--text-encoder` files (`t5xxl_fp16.safetensors`, city96's T5 GGUFs,
`ae.safetensors`), as FLUX's single files take theirs. Such files also replace a folder's
encoder or VAE.

    weights, modules = load_chroma("Chroma1-HD")
    weights, modules = load_chroma("chroma-unlocked-v50.safetensors",
                                   ["t5xxl_fp16.safetensors", "ae.safetensors"])
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import pipeline_class, read_json, weight_refs
from ..formats.gguf_file import tensor_file
from ..formats.safetensors import SafetensorsFile
from ..keymaps.chroma_keys import chroma_file_weights, is_chroma_file
from ..keymaps.ldm_configs import vae_config
from ..keymaps.t5_gguf import t5_gguf_refs
from ..keymaps.t5_keys import T5_MARK, t5_config, t5_encoder_refs
from ..weights import ComponentWeights
from .file import FLOW_SCHEDULERS, file_parts
from .text_encoder_file import module_stem

__all__ = ["ChromaWeights", "chroma_family", "load_chroma"]

_FOLDER_CLASS = "ChromaPipeline"
_FLUX_VAE = {"scaling_factor": 0.3611, "shift_factor": 0.1159}  # Chroma's VAE is FLUX.1's
_NEEDED = {"text_encoder": "t5xxl_fp16.safetensors (the T5-XXL text encoder)",
           "vae": "ae.safetensors (FLUX's VAE)"}


@dataclass
class ChromaWeights:
    """A Chroma model's lazy component weights, its scheduler config and tokenizer folder."""

    transformer: ComponentWeights | None  # None: a GGUF's (loaders.flow.gguf loads it)
    vae: ComponentWeights
    text_encoder: ComponentWeights
    scheduler_config: dict[str, Any]
    tokenizer_dir: Path | None = None  # None: the bundled T5 tokenizer


def chroma_family(path: str | os.PathLike[str]) -> str | None:
    """"chroma" for a ChromaPipeline folder or a Chroma transformer `.safetensors` / `.gguf`
    file, None for anything else. Reads a small JSON file or a file's header."""
    root = Path(path)
    if root.is_dir():
        return "chroma" if pipeline_class(root) == _FOLDER_CLASS else None
    if root.suffix.lower() not in (".safetensors", ".gguf") or not root.is_file():
        return None
    try:
        return "chroma" if is_chroma_file(tensor_file(root)) else None
    except WeightsError:
        return None  # loading names the bad file


def _folder_part(root: Path, index: dict[str, Any], name: str, stem: str,
                 variant: str | None) -> ComponentWeights | None:
    """A folder component, None when model_index.json leaves it out or it has no weights."""
    entry = index.get(name)
    if not (isinstance(entry, list) and entry and entry[0] is not None):
        return None
    try:
        refs, _ = weight_refs(root / name, stem, variant)
    except WeightsError:
        return None
    return ComponentWeights(name, read_json(root / name / "config.json"), refs)


def _module_parts(given: str | os.PathLike[str]) -> dict[str, ComponentWeights]:
    """The T5 and / or VAE a `--text-encoder` file holds, by slot; WeightsError naming the
    file otherwise."""
    path = Path(given)
    if path.suffix.lower() == ".gguf":  # city96's T5 encoders
        found = {"t5": t5_gguf_refs(path)}
        where = None
    else:
        where = SafetensorsFile(path)
        found = file_parts(where, ("t5",))
    if not found:
        raise WeightsError(f"{path}: no T5-XXL text encoder ({T5_MARK!r}) or VAE "
                           "(decoder.conv_in.weight) found; Chroma takes those two")
    parts = {}
    if (t5 := found.get("t5")) is not None:
        t5 = t5_encoder_refs(t5)
        parts["text_encoder"] = ComponentWeights("text_encoder", t5_config(t5), t5)
    if (vae := found.get("vae")) is not None and where is not None:
        config = {**vae_config(vae, where, sample_size=1024), **_FLUX_VAE,
                  "use_quant_conv": "quant_conv.weight" in vae,
                  "use_post_quant_conv": "post_quant_conv.weight" in vae}
        parts["vae"] = ComponentWeights("vae", config, vae)
    return parts


def load_chroma(path: str | os.PathLike[str], modules: Sequence[str | os.PathLike[str]] = (),
                *, variant: str | None = None) -> tuple[ChromaWeights, list[str]]:
    """Lazy weights of the Chroma folder or transformer file `path`, with `modules` (T5 and
    VAE files, module docstring) in place of its own or supplying what a file lacks; and the
    modules' stems (Forge writes them as "Module N"). WeightsError naming what is missing and
    the file to add for it."""
    root = Path(path)
    parts: dict[str, ComponentWeights | None]
    if root.is_dir():
        index = read_json(root / "model_index.json")
        if index.get("_class_name") != _FOLDER_CLASS:
            raise WeightsError(f"{root / 'model_index.json'}: _class_name "
                               f"{index.get('_class_name')!r} is not {_FOLDER_CLASS}")
        stems = {"transformer": "diffusion_pytorch_model", "vae": "diffusion_pytorch_model",
                 "text_encoder": "model"}
        parts = {name: _folder_part(root, index, name, stem, variant)
                 for name, stem in stems.items()}
        if parts["transformer"] is None:
            raise WeightsError(f"{root}: this Chroma folder has no transformer weights")
        scheduler = read_json(root / "scheduler" / "scheduler_config.json")
        tokenizer = root / "tokenizer" if (root / "tokenizer").is_dir() else None
    else:
        gguf = root.suffix.lower() == ".gguf"
        parts = {"transformer": None if gguf else chroma_file_weights(tensor_file(root)),
                 "vae": None, "text_encoder": None}
        if gguf and not is_chroma_file(tensor_file(root)):
            raise WeightsError(f"{root}: not a Chroma transformer GGUF (no "
                               "distilled_guidance_layer tensors)")
        # the scheduler of Chroma1-HD's folder, which is FLUX.1 dev's
        scheduler, tokenizer = dict(FLOW_SCHEDULERS["flux-dev"]), None
    for given in modules:
        for name, part in _module_parts(given).items():
            if name == "text_encoder" and (current := parts[name]) is not None:
                part.config = current.config
            parts[name] = part
    missing = [what for name, what in _NEEDED.items() if parts[name] is None]
    if missing:
        files = " and ".join("--text-encoder " + what.split()[0] for what in missing)
        raise WeightsError(f"{root}: this Chroma model has no {' and no '.join(missing)}; "
                           f"give {files}")
    vae, encoder = parts["vae"], parts["text_encoder"]
    assert vae is not None and encoder is not None  # else named missing above
    weights = ChromaWeights(transformer=parts["transformer"], vae=vae, text_encoder=encoder,
                            scheduler_config=scheduler, tokenizer_dir=tokenizer)
    return weights, [module_stem(Path(given)) for given in modules]
