"""The face restorers' files, found where the WebUI keeps them, and the networks read from them
(pickles read without running them) on first use.

    folders = FaceFolders.from_models_dir("models")   # models/GFPGAN, Codeformer, facexlib
    faces = FaceRestorers(folders)
    faces.available()           # [{"name": "CodeFormer", "cmd_dir": ...}, {"name": "GFPGAN", ...}]
    out = faces.restore(rgb, "CodeFormer", codeformer_weight=0.5)

Files: GFPGAN's `GFPGANv1.4.pth` (any `.pth` with "GFPGAN" in its name; v1.3 reads the same) in
the GFPGAN folder, CodeFormer's `codeformer-v0.1.0.pth` (any `.pth` with "codeformer" in its
name, else the folder's only `.pth`) in the Codeformer folder; facexlib's
`detection_Resnet50_Final.pth` (or `detection_mobilenet0.25_Final.pth`) and
`parsing_parsenet.pth` in any of the facexlib, GFPGAN and Codeformer folders (facexlib's own
`weights/` under them included).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device

from ..loaders import WeightsError
from ..loaders.formats.torch_file import open_weights_file
from ..process_shared import process_shared
from .restore import FaceRestorer, blend

__all__ = ["FACE_RESTORERS", "FaceFolders", "FaceModelError", "FaceRestoration",
           "FaceRestorers"]

FACE_RESTORERS = ("CodeFormer", "GFPGAN")  # the WebUI's /sdapi/v1/face-restorers order
DETECTORS = ("detection_Resnet50_Final.pth", "detection_mobilenet0.25_Final.pth")
PARSER = "parsing_parsenet.pth"


class FaceModelError(ValueError):
    """A face restorer's file is missing or unreadable; the message names where it looked."""


@dataclass(frozen=True)
class FaceFolders:
    """Where each kind of file is looked for (None: nowhere)."""

    gfpgan: Path | None = None
    codeformer: Path | None = None
    facexlib: Path | None = None

    @classmethod
    def from_models_dir(cls, models_dir: str | os.PathLike[str] | None, *,
                        gfpgan: str | os.PathLike[str] | None = None,
                        codeformer: str | os.PathLike[str] | None = None) -> FaceFolders:
        """The WebUI's layout: models_dir/GFPGAN, models_dir/Codeformer, models_dir/facexlib,
        the first two replaced by --gfpgan-models-path / --codeformer-models-path."""
        root = Path(models_dir) if models_dir else None
        return cls(gfpgan=Path(gfpgan) if gfpgan else root / "GFPGAN" if root else None,
                   codeformer=Path(codeformer) if codeformer else
                   root / "Codeformer" if root else None,
                   facexlib=root / "facexlib" if root else None)

    def restorer_file(self, name: str) -> Path:
        """GFPGAN's or CodeFormer's file. Raises FaceModelError naming the folder."""
        folder = self.gfpgan if name == "GFPGAN" else self.codeformer
        option = "--gfpgan-models-path" if name == "GFPGAN" else "--codeformer-models-path"
        files = sorted(folder.rglob("*.pth")) if folder and folder.is_dir() else []
        chosen = [p for p in files if name.lower() in p.name.lower()]
        if not chosen and name == "CodeFormer" and len(files) == 1:
            chosen = files
        if not chosen:
            where = f"in {folder}" if folder else "(no models folder given)"
            example = "GFPGANv1.4.pth" if name == "GFPGAN" else "codeformer-v0.1.0.pth"
            raise FaceModelError(f"{name}: no {name} .pth file {where}; put {example} there "
                                 f"or point {option} at its folder")
        return chosen[0]

    def helper_file(self, names: tuple[str, ...]) -> Path:
        """facexlib's detector or parser file. Raises FaceModelError naming the folders."""
        folders = [f for f in (self.facexlib, self.gfpgan, self.codeformer) if f]
        for name in names:
            for folder in folders:
                found = sorted(folder.rglob(name)) if folder.is_dir() else []
                if found:
                    return found[0]
        where = ", ".join(str(f) for f in folders) or "no models folder given"
        raise FaceModelError(f"face restoration needs facexlib's {names[0]}; it is in none of "
                             f"{where}: put it in the models folder's facexlib folder")


class FaceRestorers:
    """The restorers of `folders`, each network read once per device, on first use (onto the
    device a call names, else `device`, else the default one)."""

    def __init__(self, folders: FaceFolders, *, device: Device | None = None) -> None:
        self.folders, self.device = folders, device
        self._models: dict[tuple[str, Device], Any] = {}
        self._lock = threading.Lock()

    def __reduce__(self) -> tuple[Any, ...]:
        # a job sent to a worker process (serve --devices) takes that process's restorers of
        # the folders along (diffusion.process_shared): the networks are read once per
        # process, not once per job, and the server's unload-checkpoint forgets them there
        return process_shared, (FaceRestorers, self.folders)

    def available(self) -> list[dict[str, Any]]:
        """The WebUI's /sdapi/v1/face-restorers list: the restorers whose file is found."""
        items = []
        for name in FACE_RESTORERS:
            try:
                path = self.folders.restorer_file(name)
            except FaceModelError:
                continue
            items.append({"name": name, "cmd_dir": str(path.parent)})
        return items

    def _load(self, name: str, path: Path, build: Any, device: Device) -> Any:
        with self._lock:
            if (name, device) not in self._models:
                try:
                    file = open_weights_file(path)
                    state = {key: file.read(key) for key in file.keys()}
                    self._models[name, device] = build(state, device=device)
                except (WeightsError, ValueError, KeyError, OSError) as error:
                    text = str(error)
                    raise FaceModelError(text if str(path) in text else f"{path}: {text}"
                                         ) from None
            return self._models[name, device]

    def forget(self) -> None:
        """Drop the networks read so far (the server's unload-checkpoint: their GPU memory
        goes once nothing else holds them); the next restore reads them again."""
        with self._lock:
            self._models.clear()

    def restorer(self, name: str, *, codeformer_weight: float = 0.5,
                 device: Device | None = None) -> FaceRestorer:
        """The pipeline of restorer `name` ("GFPGAN" or "CodeFormer"; CodeFormer at fidelity
        `codeformer_weight`) on `device` (None: the restorers'). Raises FaceModelError for an
        unknown name or a missing file."""
        from ..models.codeformer import CodeFormer
        from ..models.gfpgan import GFPGAN
        from ..models.parsenet import ParseNet
        from ..models.retinaface import RetinaFace

        if name not in FACE_RESTORERS:
            raise FaceModelError(f"unknown face restoration model {name!r}; known: "
                                 f"{', '.join(FACE_RESTORERS)}")
        path = self.folders.restorer_file(name)
        device = device or self.device or default_device()
        if name == "GFPGAN":
            gfpgan = self._load(name, path, GFPGAN.from_state_dict, device)
            network, size = gfpgan.__call__, gfpgan.size
        else:
            codeformer = self._load(name, path, CodeFormer.from_state_dict, device)
            network = lambda face: codeformer(face, w=codeformer_weight)  # noqa: E731
            size = codeformer.size
        detector = self._load("detector", self.folders.helper_file(DETECTORS),
                              RetinaFace.from_state_dict, device)
        parser = self._load("parser", self.folders.helper_file((PARSER,)),
                            ParseNet.from_state_dict, device)
        return FaceRestorer(network=network, detector=detector, parser=parser, device=device,
                            size=size)

    def restore(self, rgb: np.ndarray, name: str, *, codeformer_weight: float = 0.5,
                visibility: float = 1.0, device: Device | None = None) -> np.ndarray:
        """(H, W, 3) uint8 RGB with its faces restored by `name` on `device` (None: the
        restorers'), blended over the original by `visibility` (the Extras tab's)."""
        restored = self.restorer(name, codeformer_weight=codeformer_weight,
                                 device=device).restore(rgb)
        return blend(rgb, restored, visibility)

    def check(self, name: str) -> None:
        """Raises FaceModelError unless restorer `name`'s files are all found (nothing is
        read): what a request is refused with before it is queued."""
        if name not in FACE_RESTORERS:
            raise FaceModelError(f"unknown face restoration model {name!r}; known: "
                                 f"{', '.join(FACE_RESTORERS)}")
        self.folders.restorer_file(name)
        self.folders.helper_file(DETECTORS)
        self.folders.helper_file((PARSER,))


@dataclass(frozen=True)
class FaceRestoration:
    """A job's face restoration (picklable: it travels to worker processes, its restorers
    becoming that process's own): restorer `model` of `restorers`, CodeFormer's fidelity
    `codeformer_weight`, blended by `visibility`."""

    restorers: FaceRestorers
    model: str
    codeformer_weight: float = 0.5
    visibility: float = 1.0

    def apply(self, rgb: np.ndarray, device: Device | None = None) -> np.ndarray:
        """(H, W, 3) uint8 RGB with its faces restored on `device` (None: the default)."""
        return self.restorers.restore(rgb, self.model, codeformer_weight=self.codeformer_weight,
                                      visibility=self.visibility, device=device)

