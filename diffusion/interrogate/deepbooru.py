"""DeepDanbooru's tags for a picture as the WebUI's `modules/deepbooru.py` makes them: the
picture resized and filled to 512x512, scored by the network (diffusion.models.deepdanbooru),
the tags at or above the score threshold (`rating:` tags left out) sorted, filtered, with
spaces and escaped brackets, joined by ", ".

    booru = DeepBooru(Path("models/torch_deepdanbooru"))
    booru.tag(picture, DEEPBOORU_OPTIONS)     # "1girl, solo, smile"

The file is the WebUI's `model-resnet_custom_v3.pt` (any `.pt` of the folder), read without
running its pickle, once per device, on first use there.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device

from ..imaging import fit_picture
from ..loaders import WeightsError
from ..process_shared import process_shared
from .per_device import PerDevice

__all__ = ["DEEPBOORU_OPTIONS", "DeepBooru", "InterrogateModelError", "check_options",
           "format_tags"]

FILE_NAME = "model-resnet_custom_v3.pt"
SIZE = 512
# the WebUI's options and their defaults (its shared options' "Interrogate" section)
DEEPBOORU_OPTIONS: dict[str, Any] = {
    "interrogate_deepbooru_score_threshold": 0.5, "deepbooru_sort_alpha": True,
    "deepbooru_use_spaces": True, "deepbooru_escape": True, "deepbooru_filter_tags": "",
    "interrogate_return_ranks": False}
_SPECIAL = re.compile(r"([\\()])")


class InterrogateModelError(ValueError):
    """An interrogator's file is missing or unreadable; the message names where it looked."""


def check_options(body: Mapping[str, Any]) -> dict[str, Any]:
    """DEEPBOORU_OPTIONS' entries of an options body (POST /sdapi/v1/options), checked:
    ValueError saying which is wrong."""
    updates: dict[str, Any] = {}
    for key, default in DEEPBOORU_OPTIONS.items():
        if key not in body:
            continue
        value = body[key]
        if isinstance(default, bool):
            if not isinstance(value, bool):
                raise ValueError(f"{key} must be true or false, got {value!r}")
        elif isinstance(default, str):
            if not isinstance(value, str):
                raise ValueError(f"{key} must be text (tags separated by commas), got "
                                 f"{value!r}")
        elif isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not 0 <= value <= 1:
            raise ValueError(f"{key} must be a number from 0 to 1, got {value!r}")
        updates[key] = value
    return updates


def format_tags(tags: Sequence[str], scores: Sequence[float] | np.ndarray,
                options: Mapping[str, Any]) -> str:
    """The WebUI's DeepDanbooru.tag_multi text of `scores` (one per tag) under `options` (the
    keys of DEEPBOORU_OPTIONS; missing ones take their defaults)."""
    settings = {**DEEPBOORU_OPTIONS, **options}
    threshold = settings["interrogate_deepbooru_score_threshold"]
    kept = {tag: score for tag, score in zip(tags, scores)
            if score >= threshold and not tag.startswith("rating:")}
    if settings["deepbooru_sort_alpha"]:
        ordered = sorted(kept)
    else:
        ordered = [tag for tag, _ in sorted(kept.items(), key=lambda item: -item[1])]
    dropped = {name.strip().replace(" ", "_")
               for name in str(settings["deepbooru_filter_tags"]).split(",")}
    out = []
    for tag in ordered:
        if tag in dropped:
            continue
        text = tag.replace("_", " ") if settings["deepbooru_use_spaces"] else tag
        if settings["deepbooru_escape"]:
            text = _SPECIAL.sub(r"\\\1", text)
        if settings["interrogate_return_ranks"]:
            text = f"({text}:{kept[tag]:.3f})"
        out.append(text)
    return ", ".join(out)


class DeepBooru:
    """DeepDanbooru from `folder` (None: none given), read once onto each device a call names
    (`device` where it names none; None: the default device), on its first use there."""

    def __init__(self, folder: Path | None, *, device: Device | None = None) -> None:
        self.folder, self.device = folder, device
        self._networks: PerDevice[Any] = PerDevice()

    def __reduce__(self) -> tuple[Any, ...]:
        # a job sent to a worker process (serve --devices) takes that process's own
        # DeepDanbooru of the folder along (diffusion.process_shared), on that process's GPU
        return process_shared, (DeepBooru, self.folder)

    def forget(self) -> None:
        """Drop every device's network (the server's unload-checkpoint: its GPU memory goes
        once nothing else holds it); the next picture reads it again."""
        self._networks.clear()

    def file(self) -> Path:
        """The model file: model-resnet_custom_v3.pt, else the folder's first .pt. Raises
        InterrogateModelError naming the folder."""
        found = sorted(self.folder.glob("*.pt")) if self.folder and self.folder.is_dir() else []
        if not found:
            where = f"in {self.folder}" if self.folder else "(no models folder given)"
            raise InterrogateModelError(
                f"DeepDanbooru: no .pt file {where}; put the WebUI's {FILE_NAME} there "
                "(--deepdanbooru-dir, or the models folder's torch_deepdanbooru)")
        named = [path for path in found if path.name == FILE_NAME]
        return (named or found)[0]

    def model(self, device: Device | None = None) -> Any:
        """The network (diffusion.models.deepdanbooru.DeepDanbooru) on `device` (None: this
        interrogator's), read there on first use."""
        from ..loaders.formats.torch_file import TorchFile
        from ..models.deepdanbooru import DeepDanbooru

        path = self.file()

        def read(where: Device) -> Any:
            try:
                file = TorchFile(path)
                tags = file.objects.get("tags")
                if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
                    raise ValueError("it holds no list of tag names ('tags'); use the "
                                     f"WebUI's {FILE_NAME}")
                state = {key: file.read(key) for key in file.keys()}
                return DeepDanbooru.from_state_dict(state, tags, device=where)
            except (WeightsError, ValueError, OSError) as error:
                text = str(error)
                raise InterrogateModelError(
                    text if str(path) in text else f"{path}: {text}") from None
        return self._networks.get(self._device(device), read)

    def _device(self, device: Device | None) -> Device:
        return device or self.device or default_device()

    def scores(self, picture: Any, device: Device | None = None) -> np.ndarray:
        """The tags' scores for a PIL picture, prepared as the WebUI does (RGB, resized and
        filled to 512x512, 0..1), by the network on `device` (None: this interrogator's)."""
        from gpustd import Tensor

        model = self.model(device)
        # the WebUI's resize mode 2, "resize and fill"
        pixels = np.asarray(fit_picture(picture.convert("RGB"), SIZE, SIZE, 2), np.float32)
        tensor = Tensor.from_numpy(pixels[None] / np.float32(255), device=self._device(device))
        return model(tensor).numpy()

    def tag(self, picture: Any, options: Mapping[str, Any],
            device: Device | None = None) -> str:
        """The WebUI's tag text for a PIL picture under `options` (see format_tags), on
        `device` (None: this interrogator's; a server's worker names its own GPU)."""
        return format_tags(self.model(device).tags, self.scores(picture, device), options)
