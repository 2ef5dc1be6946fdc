"""Where a Wan model's parts come from, checked in one line each before anything loads: a
diffusers folder, or a transformer file (ComfyUI's split file or a GGUF) with a `base` folder
and the files standing in for the folder's other parts (WanFiles). The command line
(`txt2vid --model FILE --base FOLDER --vae FILE ...`) and the server's video requests (files
of the models directory by name) resolve them here alike; `Names` says how each asks for a
part in its messages.

    folder, files = resolve_wan(WanSource(model=Path("wan2.1_t2v_1.3B_bf16.safetensors"),
                                          base=Path("Wan2.1-T2V-1.3B-Diffusers")))
    weights = load_wan(folder, files)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..formats.diffusers_folder import component_config
from .animate import load_wan_animate_transformer
from .file import is_vace_module, wan_file_family
from .files import WanFiles
from .folder import FILE_EXAMPLES, chronoedit_family, missing_parts, wan_family

__all__ = ["CLI_NAMES", "Names", "WanSource", "animate_face_size", "check_wan_paths",
           "is_wan_animate", "resolve_wan"]

_SUFFIXES = (".safetensors", ".gguf")
# WanSource's fields -> the components of WanFiles they replace
_PARTS = {"model": "transformer", "model_2": "transformer_2", "text_encoder": "text_encoder",
          "vae": "vae", "clip_vision": "image_encoder", "vace_module": "vace_module"}


@dataclass(frozen=True)
class Names:
    """How a caller's user gives each part (WanSource's field -> e.g. "--text-encoder"), and
    what follows it in a message saying to give a file for it (" FILE")."""

    fields: dict[str, str]
    value: str = " FILE"

    def __getitem__(self, field: str) -> str:
        return self.fields[field]


CLI_NAMES = Names({"model": "--model", "base": "--base", "model_2": "--model-2",
                   "text_encoder": "--text-encoder", "vae": "--vae",
                   "clip_vision": "--clip-vision", "vace_module": "--vace-module"})


@dataclass(frozen=True)
class WanSource:
    """A Wan diffusers folder as `model`, or a transformer file as `model` with the `base`
    folder and the files standing in for its other parts (None: the folder's own)."""

    model: Path
    base: Path | None = None
    model_2: Path | None = None
    text_encoder: Path | None = None
    vae: Path | None = None
    clip_vision: Path | None = None
    vace_module: Path | None = None

    def files(self) -> dict[str, Path]:
        """The files given, by WanSource field ("model" only when it is a file)."""
        given = {name: getattr(self, name) for name in _PARTS if getattr(self, name)}
        if self.model.is_dir():
            given.pop("model", None)
        return given


def check_wan_paths(source: WanSource, names: Names = CLI_NAMES) -> None:
    """What needs no file read: the model exists, a file has a base folder and a folder none,
    the companions are .safetensors / .gguf files. ValueError in one line."""
    model, base = source.model, source.base
    if not model.exists():
        raise ValueError(f"{names['model']} {model}: no such folder or file (give a Wan "
                         "diffusers folder, or a transformer .safetensors / .gguf with "
                         f"{names['base']})")
    if model.is_dir() and base:
        raise ValueError(f"{names['model']} {model} is a folder: leave {names['base']} out "
                         "(it is for a transformer file)")
    if model.is_file() and not base:
        raise ValueError(f"{names['model']} {model} is a single file: give {names['base']}, "
                         "the Wan diffusers folder of the same model (its tokenizer, "
                         "scheduler, VAE and configs)")
    if source.model_2 and not model.is_file():
        raise ValueError(f"{names['model_2']} is the low-noise expert's file: give the "
                         f"high-noise expert's as {names['model']} and the Wan 2.2 A14B folder "
                         f"as {names['base']}")
    if source.vace_module and not model.is_file():
        raise ValueError(f"{names['vace_module']} joins a Wan transformer file: give the Wan "
                         f"2.1 text-to-video transformer file as {names['model']} and its "
                         f"diffusers folder as {names['base']}")
    if base and not base.is_dir():
        raise ValueError(f"{names['base']} {base}: not a folder (give the Wan diffusers "
                         "folder)")
    for field, given in source.files().items():
        if not given.is_file() or given.suffix.lower() not in _SUFFIXES:
            raise ValueError(f"{names[field]} {given}: not a .safetensors or .gguf file")


def resolve_wan(source: WanSource, names: Names = CLI_NAMES) -> tuple[Path, WanFiles]:
    """The folder to load and the files in place of its parts, after `check_wan_paths` and the
    checks that read the files' headers: the folder is a Wan pipeline, a transformer file holds
    a Wan transformer, every part the folder holds no weights of is given as a file. ValueError
    in one line naming what to give."""
    check_wan_paths(source, names)
    folder = source.base or source.model
    if chronoedit_family(folder) is not None:  # a video model that makes pictures
        raise ValueError(f"{folder} is ChronoEdit, which edits a picture: use `python -m "
                         f"diffusion img2img --model {folder} --init-image IN.png --prompt "
                         "'the edit'`")
    if wan_family(folder) is None:
        raise ValueError(f"{names['base'] if source.base else names['model']} {folder}: not a "
                         "Wan diffusers folder (its model_index.json must name a WanPipeline, "
                         "WanImageToVideoPipeline, WanVACEPipeline or WanAnimatePipeline)")
    given = source.files()
    for field in ("model", "model_2"):
        if field in given and is_vace_module(given[field]):
            option = names.fields.get("vace_module")
            raise ValueError(f"{names[field]} {given[field]}: a Wan VACE module alone (its "
                             "vace_* tensors only), which joins a base Wan file; " + (
                                 f"give it as {option} and the Wan 2.1 text-to-video "
                                 f"transformer file as {names['model']}" if option else
                                 "choose a whole Wan VACE transformer file or folder"))
        if field in given and wan_file_family(given[field]) is None:
            raise ValueError(f"{names[field]} {given[field]}: holds no Wan transformer "
                             "(blocks.0.self_attn.q.weight ...)")
    if "vace_module" in given and not is_vace_module(given["vace_module"]):
        raise ValueError(f"{names['vace_module']} {given['vace_module']}: not a Wan VACE module "
                         "(vace_blocks.N.* and vace_patch_embedding.* tensors alone)")
    animate = "model" in given and wan_file_family(given["model"]) == "wan-animate"
    for field in ("model_2", "vace_module"):
        if animate and field in given and field in names.fields:
            raise ValueError(f"{names['model']} {given['model']} is Wan 2.2 Animate, which "
                             f"takes no {names[field]}: leave it out")
    parts = {_PARTS[field]: path for field, path in given.items()}
    # Animate reads the picture's CLIP states: a text-to-video base needs the CLIP file
    missing = missing_parts(folder, tuple(parts), ("image_encoder",) if animate else ())
    if missing:
        field = next(f for f, part in _PARTS.items() if part == missing[0])
        _, example = FILE_EXAMPLES[missing[0]]
        raise ValueError(f"{folder.name}/{missing[0]}: no weights in the folder; give them "
                         f"as {names[field]}{names.value} ({example})")
    return folder, WanFiles(**parts)


def is_wan_animate(path: Path, files: WanFiles | None = None) -> bool:
    """Whether the model is Wan 2.2 Animate: `files`' transformer file's kind where given, else
    that of `path` (an Animate folder, or an Animate transformer file). Headers only."""
    model = files.transformer if files is not None and files.transformer else path
    return wan_family(model) == "wan-animate" or wan_file_family(model) == "wan-animate"


def animate_face_size(folder: Path, files: WanFiles) -> int:
    """The side of the face crops the Wan 2.2 Animate model `resolve_wan` gave reads (its
    transformer's motion_encoder_size: a file's from its shapes). Headers only."""
    config = component_config(folder, "transformer") or {}
    if files.transformer is not None:
        config = load_wan_animate_transformer(files.transformer, config=config).config
    return int(config.get("motion_encoder_size", 512))
