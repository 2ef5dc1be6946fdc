"""The files of a diffusers model folder, whatever the model: its JSON configs, and each
component's weights as diffusers and transformers save them (`diffusion_pytorch_model` /
`model`, `.safetensors` optionally as a `.fp16` variant or sharded with a
`.safetensors.index.json`; older downloads' torch `.bin` files, read safely)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..weights import TensorRef
from .safetensors import SafetensorsFile
from .torch_file import open_weights_file

__all__ = ["causal_lm_refs", "component_config", "pipeline_class", "pipeline_index", "read_json",
           "weight_refs"]


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from `path`; WeightsError naming the file when missing or malformed."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WeightsError(f"{path}: required file is missing") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise WeightsError(f"{path}: cannot read it as JSON: {error}") from None
    if not isinstance(data, dict):
        raise WeightsError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def component_config(root: str | os.PathLike[str], component: str) -> dict[str, Any] | None:
    """The folder `root`'s `component/config.json` (`read_json`), None where it has none (a
    single file's --base folder whose part that file replaces)."""
    path = Path(root) / component / "config.json"
    return read_json(path) if path.is_file() else None


def pipeline_class(path: Path) -> str | None:
    """The `_class_name` of the folder `path`'s model_index.json (the diffusers pipeline it
    holds); None for a file, a folder without one or a broken one (loading names it)."""
    if not path.is_dir():
        return None
    try:
        return str(read_json(path / "model_index.json").get("_class_name"))
    except WeightsError:
        return None


def pipeline_index(root: Path, class_name: str, components: tuple[str, ...]) -> dict[str, Any]:
    """The model_index.json of the `class_name` pipeline folder `root`, checked: WeightsError
    naming it when it holds another pipeline or lacks one of `components`."""
    index = read_json(root / "model_index.json")
    if index.get("_class_name") != class_name:
        raise WeightsError(f"{root / 'model_index.json'}: _class_name "
                           f"{index.get('_class_name')!r} is not a {class_name}")
    for name in components:
        entry = index.get(name)
        if not (isinstance(entry, list) and entry and entry[0] is not None):
            needs = ", ".join(components)
            raise WeightsError(f"{root / 'model_index.json'}: the {class_name} has no {name!r} "
                               f"component; give the whole folder (it needs {needs})")
    return index


def causal_lm_refs(refs: dict[str, TensorRef]) -> dict[str, TensorRef]:
    """A causal LM's weights (transformers' `...ForCausalLM`) as its base model's: `model.`
    dropped, `lm_head.` left out (a base model's own names pass unchanged)."""
    return {key.removeprefix("model."): ref for key, ref in refs.items()
            if not key.startswith("lm_head.")}


def weight_refs(folder: Path, stem: str, variant: str | None) -> tuple[dict[str, TensorRef], str]:
    """Tensor refs of one component folder, and the file to name in errors.

    Like diffusers: `variant` files when present, else the default files; and since an fp16-only
    download holds just the variant files, a folder with one variant and no default uses it.
    """
    if not folder.is_dir():
        raise WeightsError(f"{folder}: component folder is missing")
    names = {p.name for p in folder.iterdir()}
    found = {m[1] for n in names if (m := re.fullmatch(
        re.escape(stem) + r"\.(?:safetensors\.index\.)?(\w+)\.(?:safetensors|json)", n))}
    choices: list[str | None] = [variant] if variant is not None else []
    choices += [None] + sorted(found)[:1] * (len(found) == 1)
    for choice in choices:
        infix = "" if choice is None else f".{choice}"
        single, sharded = f"{stem}{infix}.safetensors", f"{stem}.safetensors.index{infix}.json"
        if sharded in names and single not in names:
            return _sharded_refs(folder / sharded), str(folder / sharded)
        # older downloads hold torch.save files (diffusers' and transformers' names), read safely
        pickled = [n for n in (f"{stem}{infix}.bin", f"pytorch_{stem}{infix}.bin") if n in names]
        if single in names or pickled:
            file = open_weights_file(folder / (single if single in names else pickled[0]))
            return {k: TensorRef(file, k, file.shape(k)) for k in file.keys()}, str(file.path)
    listing = ", ".join(sorted(names)) or "nothing"
    raise WeightsError(f"{folder}: no weights: expected {stem}.safetensors or "
                       f"{stem}.safetensors.index.json; found {listing}")


def _sharded_refs(index_path: Path) -> dict[str, TensorRef]:
    weight_map = read_json(index_path).get("weight_map")
    if not isinstance(weight_map, dict):
        raise WeightsError(f"{index_path}: no 'weight_map' object")
    shards: dict[str, SafetensorsFile] = {}
    refs = {}
    for key, shard_name in weight_map.items():
        if shard_name not in shards:
            shards[shard_name] = SafetensorsFile(index_path.parent / str(shard_name))
        shard = shards[shard_name]
        if key not in shard:
            raise WeightsError(f"{index_path}: maps tensor {key!r} to {shard_name}, which does "
                               "not contain it; the download is incomplete or mixed")
        refs[key] = TensorRef(shard, key, shard.shape(key))
    return refs
