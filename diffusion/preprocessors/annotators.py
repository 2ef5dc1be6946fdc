"""What the model-based preprocessors share: their networks, built once from the annotator
file (diffusion.loaders.control.annotator_file finds and reads it) and replayed per picture
size, and the way the extension hands them a picture and takes their map back.

A network's forward is dispatched op by op from Python the first time it sees an input shape;
the second time it is recorded (gpustd.capture) and from then on replayed: the same dispatches
on the same buffers, so the same map bit for bit, without the ops' Python. Between calls the
recording's scratch is lent to the device's pool (other work may use it; where it did, the
next call records again). A forward that reads a value back to the host cannot be replayed:
it stays eager. `REPLAY = False` keeps every network eager. `forget_networks` drops every
network kept (the server's unload-checkpoint)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import CaptureError, Device, default_device
from gpustd import Tensor, asarray, capture

from ..loaders.control.annotator_file import find_annotator, read_annotator
from ..loaders.errors import WeightsError
from ..models.resample import bilinear_matrix, resample

__all__ = ["REPLAY", "ReplayedNetwork", "annotator_model", "at_size", "forget_networks", "keep",
           "make_room", "network_cache", "picture_tensor", "release_networks", "to_uint8"]

REPLAY = True
_caches: list[dict[Any, ReplayedNetwork]] = []
_lock = threading.Lock()  # guards the caches' keys: a thread server's workers share them


class ReplayedNetwork:
    """`network` (a callable of one Tensor, returning Tensors) run eagerly on the first call
    per input shape, recorded on the second, replayed after that (see the module's
    docstring); called with anything but a Tensor, always eager. Its other attributes are
    the network's."""

    def __init__(self, network: Any, *, signatures: int = 2) -> None:
        self.network = network
        self.replayable = True
        self._seen: set[tuple[int, ...]] = set()
        self._captured = capture(network, max_signatures=signatures)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.network, name)

    def release(self) -> None:
        """Drop the recordings (their buffers go back to the pool)."""
        self._captured.reset()

    def reclaim(self) -> None:
        """Take the lent scratch back (before a call's own tensors are made, so that they
        cannot take it)."""
        self._captured.reclaim()

    def __call__(self, x: Any) -> Any:
        if not isinstance(x, Tensor):  # host arrays (the ONNX interpreter's input): eager
            return self.network(x)
        shape = tuple(x.shape)
        if not (REPLAY and self.replayable and shape in self._seen):
            self._seen.add(shape)
            return self.network(x)
        try:
            out = self._captured(x)
        except CaptureError:  # it reads back: eager from now on
            self.replayable = False
            self._captured.reset()
            return self.network(x)
        self._captured.lend()
        return out


def network_cache() -> dict[Any, ReplayedNetwork]:
    """A module's networks kept (by file and device), which `forget_networks` empties too."""
    cache: dict[Any, ReplayedNetwork] = {}
    _caches.append(cache)
    return cache


def release_networks(cache: dict[Any, ReplayedNetwork]) -> None:
    """Drop every network of `cache`, its recordings first (their buffers go back to the
    pool); the weights go once nothing else holds them."""
    for model in cache.values():
        model.release()
    cache.clear()


def forget_networks() -> None:
    """Drop every preprocessor network this process keeps (the annotator files' and
    depth_anything_v2's): the server's unload-checkpoint frees the GPU of them too; each is
    read again when next used."""
    for cache in _caches:
        release_networks(cache)


_models = network_cache()


def make_room(cache: dict[Any, ReplayedNetwork], device: Device, room: int) -> None:
    """Release `device`'s networks in `cache` (keyed (file, id(device))), the least recently
    used first, until at most `room` are left. Other devices' stay: on a thread server each
    is its own worker's, maybe replaying there (one cache for all devices made two workers
    release each other's networks, and read them again, in turn)."""
    with _lock:
        mine = [key for key in cache if key[1] == id(device)]
        for key in mine[:max(len(mine) - room, 0)]:
            cache.pop(key).release()


def keep(cache: dict[Any, ReplayedNetwork], key: Any, model: ReplayedNetwork) -> None:
    """`model` into `cache` as its most recently used (the worker threads share the dict)."""
    with _lock:
        cache.pop(key, None)
        cache[key] = model


def annotator_model(module: str, subfolder: str, filename: str,
                    build: Callable[..., Any], device: Device | None, *,
                    read: Callable[[Path], Any] = read_annotator) -> Any:
    """The network of `module` from its annotator file, read by `read` (the safe PyTorch
    reader; an .onnx file's: its graph) and built by `build(state, device=...)`
    on `device` (None: the default one, opened once the file is found) and kept (the last
    three files used on each device: openpose_full's three networks, or a user switching
    between two preprocessors, reload none)."""
    path = find_annotator(module, subfolder, filename)
    device = device or default_device()
    key = (str(path.resolve()), id(device))
    model = _models.get(key)
    if model is None:
        state = read(path)
        try:
            built = build(state, device=device)
        except ValueError as exc:
            raise WeightsError(f"{path}: {exc}") from None
        make_room(_models, device, 2)
        model = ReplayedNetwork(built)
    model.reclaim()
    keep(_models, key, model)
    return model


def picture_tensor(image: np.ndarray, device: Device, *, scale: float = 1 / 255,
                   bgr: bool = False) -> Tensor:
    """uint8 HxWx3 -> float32 [1, 3, H, W] times `scale` (channels reversed with bgr), as the
    annotators' `rearrange(torch.from_numpy(image).float() * scale, 'h w c -> 1 c h w')`."""
    pixels = image[:, :, ::-1] if bgr else image
    planes = np.ascontiguousarray(pixels.transpose(2, 0, 1)[None], np.float32)
    return asarray(planes * np.float32(scale) if scale != 1 else planes, device=device)


def at_size(x: Tensor, height: int, width: int) -> Tensor:
    """[N, C, h, w] resized to height x width as cv2.resize(INTER_LINEAR) resizes float maps
    (as it is where the sizes are equal)."""
    h, w = x.shape[2:]
    if (h, w) == (height, width):
        return x
    return resample(x, bilinear_matrix(h, height, align_corners=False),
                    bilinear_matrix(w, width, align_corners=False))


def to_uint8(values: np.ndarray, *, invert: bool = False) -> np.ndarray:
    """A float map in 0..255 as the annotators round it (clipped, then truncated), as uint8
    HxWx3 (255 - it with invert: lineart's white lines on black)."""
    gray = np.clip(values, 0, 255).astype(np.uint8)
    return np.repeat((255 - gray if invert else gray)[:, :, None], 3, axis=2)
