"""Which diffusers folder a single-file transformer runs with.

Z-Image, Qwen-Image (its edit models, Qwen-Image 2.1), FLUX.2, Kandinsky 5 and Krea 2 are
shared as the transformer alone (`z_image_turbo_bf16.safetensors`,
`qwen_image_fp8_e4m3fn.safetensors`, `flux-2-klein-4b.safetensors`,
`kandinsky5lite_t2i.safetensors`, GGUFs of each: what ComfyUI keeps in
models/diffusion_models); their text encoder, tokenizer, VAE and scheduler come from a
diffusers folder of the same family, the `base` of `load_pipeline` (the CLI's `--base`). A
registry line says so with `FamilyLoader.single_file_base`. The server looks the folder up
here among the folders it knows, so that a file in its models folder loads as the CLI loads
it:

    family = base_family("z_image_turbo_bf16.safetensors")    # ("Z-Image (Turbo, Base)", "z-image")
    base = find_base("z_image_turbo_bf16.safetensors", [Path("models/Z-Image-Turbo")])
    pipe = load_pipeline("z_image_turbo_bf16.safetensors", base=base)
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .families import family_of

__all__ = ["base_family", "find_base"]


def _family(path: Path) -> str | None:
    try:
        return family_of(path)[1]
    except (OSError, ValueError):  # WeightsError is a ValueError: its load says what is wrong
        return None


def base_family(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """(the registry line's `models`, the family) of the single file `path` when its family
    runs a single file with a base folder (`FamilyLoader.single_file_base`); None for a
    folder, a file of another family, or one that cannot be read (its load says why)."""
    path = Path(path)
    if path.is_dir():
        return None
    try:
        entry, family = family_of(path)
    except (OSError, ValueError):
        return None
    return (entry.models, family) if entry.single_file_base else None


def find_base(path: str | os.PathLike[str], folders: Iterable[str | os.PathLike[str]]
              ) -> Path | None:
    """The first of `folders` that is a diffusers folder of the single file `path`'s family
    (the same family string: "z-image", "flux2-klein" and "flux2-dev" apart, ...), None when
    none is or `path` takes no base (`base_family`)."""
    wanted = base_family(path)
    if wanted is None:
        return None
    for folder in map(Path, folders):
        if folder.is_dir() and _family(folder) == wanted[1]:
            return folder
    return None
