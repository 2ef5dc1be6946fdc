"""The files of the ControlNet extension's model-based preprocessors ("annotators"): where they
are looked for, and their tensors read through the safe PyTorch reader (nothing unpickled runs).

The folder is the one in CONTROLNET_ANNOTATOR_DIR (or `set_annotator_dir`), by default
`models/ControlNetPreprocessor` under the working directory. A file is found either in the
subfolder the extension downloads it to (`lineart/sk_model.pth`, `hed/ControlNetHED.pth`,
`pidinet/table5_pidinet.pth`, as in its `annotator/downloads`) or directly in the folder (as
lllyasviel/Annotators lays them out)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import WeightsError
from ..formats.torch_file import open_weights_file

__all__ = ["DEFAULT_DIR", "ENV_VAR", "annotator_dir", "find_annotator", "read_annotator",
           "set_annotator_dir", "use_annotator_dir"]

ENV_VAR = "CONTROLNET_ANNOTATOR_DIR"
DEFAULT_DIR = Path("models") / "ControlNetPreprocessor"
_chosen: dict[str, Path] = {}


def set_annotator_dir(path: str | os.PathLike[str] | None) -> None:
    """The folder the annotator files are looked for in (None: the environment's or the
    default)."""
    if path is None:
        _chosen.pop("dir", None)
    else:
        _chosen["dir"] = Path(path)


def use_annotator_dir(path: str | os.PathLike[str]) -> None:
    """The command line's --annotator-dir: the folder for this process and, through ENV_VAR,
    for the worker processes it starts. ValueError in one line if it is not a folder."""
    if not Path(path).is_dir():
        raise ValueError(f"--annotator-dir {str(path)!r} is not a folder; give the folder that "
                         "holds the annotator files (the extension's annotator/downloads)")
    set_annotator_dir(Path(path).resolve())
    os.environ[ENV_VAR] = str(Path(path).resolve())


def annotator_dir() -> Path:
    """The folder annotator files are looked for in now."""
    return _chosen.get("dir") or Path(os.environ.get(ENV_VAR) or DEFAULT_DIR)


def find_annotator(module: str, subfolder: str, filename: str) -> Path:
    """The path of `filename` for preprocessor `module`: FOLDER/subfolder/filename or
    FOLDER/filename. WeightsError in one line naming the file and the folder if neither is."""
    folder = annotator_dir()
    for path in (folder / subfolder / filename, folder / filename):
        if path.is_file():
            return path
    raise WeightsError(f"{module} needs its annotator file {filename}, which is not in "
                       f"{folder / subfolder} (nor {folder}): put lllyasviel/Annotators' "
                       f"{filename} there, or set {ENV_VAR} to the folder that holds it")


def read_annotator(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of an annotator file as float32, by its state-dict name (a `state_dict`
    wrapper and DataParallel's `module.` prefix dropped)."""
    file = open_weights_file(path)
    return {key: np.asarray(file.read(key), np.float32) for key in file.keys()}
