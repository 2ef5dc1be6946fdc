"""Model upscalers (ESRGAN, Real-ESRGAN, SRVGGNetCompact, SwinIR, HAT) from `.pth`/`.safetensors`
files, under the names the WebUI gives them, and the registry hires fix and the Extras API look
names up in.

    register_upscaler_dir("models")          # models/ESRGAN/*.pth, models/RealESRGAN/*.pth
    upscaler = MODEL_UPSCALERS["R-ESRGAN 4x+"]
    big = upscaler.upscale(image, 4)          # (H, W, 3) uint8 -> (4H, 4W, 3) uint8

The architecture is detected from the state dict's keys as spandrel detects it; the weights are
read with the loaders (pickles without running them) when the upscaler is first used.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from gpucore import Device, default_device
from gpustd import Tensor

from ..loaders import WeightsError
from ..loaders.formats.torch_file import open_weights_file
from ..models.esrgan import RRDBNet
from ..models.hat import HAT, is_hat
from ..models.srvgg import SRVGGNetCompact
from ..models.swinir import SwinIR, is_swinir
from .tiled import run_tiled

__all__ = ["MODEL_UPSCALERS", "ModelUpscaler", "find_upscalers", "forget_upscalers",
           "load_upscaler_model", "register_upscaler_dir"]

SUFFIXES = (".pth", ".pt", ".safetensors")
# the WebUI's names for Real-ESRGAN's releases (modules/realesrgan_model.py)
WEBUI_NAMES = {
    "RealESRGAN_x4plus": "R-ESRGAN 4x+",
    "RealESRGAN_x4plus_anime_6B": "R-ESRGAN 4x+ Anime6B",
    "RealESRGAN_x2plus": "R-ESRGAN 2x+",
    "realesr-general-x4v3": "R-ESRGAN General 4xV3",
    "realesr-general-wdn-x4v3": "R-ESRGAN General WDN 4xV3",
    "realesr-animevideov3": "R-ESRGAN AnimeVideo",
    # modules/swinir_model.py's one model, under the name the WebUI downloads it as
    "SwinIR_4x": "SwinIR 4x",
    "003_realSR_BSRGAN_DFOWMFC_s64w8_SwinIR-L_x4_GAN": "SwinIR 4x",
}
Network = RRDBNet | SRVGGNetCompact | SwinIR | HAT


def load_upscaler_model(state: Any, *, dtype: Any = np.float32,
                        device: Device | None = None) -> Network:
    """The network a state dict (`{key: array}`, or a file path) holds, detected from its keys:
    RRDBNet (old/new/BSRGAN layouts), SRVGGNetCompact, SwinIR or HAT. dtype "auto": float16
    where the device has shader-f16, except the transformers (float32: spandrel marks SwinIR
    unsafe in half, and HAT's attention is SwinIR's).
    Raises WeightsError naming the file for anything else.
    torch: `spandrel.ModelLoader().load_from_file(path).model`."""
    device = device or default_device()
    chosen = not (isinstance(dtype, str) and dtype == "auto")
    if not chosen:
        dtype = np.float16 if device.has_f16 else np.float32
    where = "state dict"
    if isinstance(state, (str, os.PathLike)):
        where, file = str(state), open_weights_file(Path(state))
        state = {key: file.read(key) for key in file.keys()}
    keys = set(state)
    try:
        if {"model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight"} <= keys or \
                {"conv_first.weight", "body.0.rdb1.conv1.weight", "conv_last.weight"} <= keys or \
                {"conv_first.weight", "RRDB_trunk.0.RDB1.conv1.weight", "conv_last.weight"} <= keys:
            return RRDBNet.from_state_dict(state, dtype=dtype, device=device)
        if {"body.0.weight", "body.1.weight"} <= keys:
            return SRVGGNetCompact.from_state_dict(state, dtype=dtype, device=device)
        if is_hat(keys):
            return HAT.from_state_dict(state, dtype=dtype if chosen else np.float32,
                                       device=device)
        if is_swinir(keys):
            return SwinIR.from_state_dict(state, dtype=dtype if chosen else np.float32,
                                          device=device)
    except (ValueError, KeyError) as error:
        raise WeightsError(f"{where}: {error}") from None
    sample = ", ".join(sorted(keys)[:4]) or "no tensors"
    raise WeightsError(f"{where}: not an upscaler this program runs (ESRGAN/RRDBNet, Real-ESRGAN, "
                       f"SRVGGNetCompact, SwinIR, HAT); it holds {sample}")


@dataclass
class ModelUpscaler:
    """One upscaler file: `name` (the WebUI's), `path`; the network is built on first use on
    each device a call names (`device` where it names none; None: the default device), in
    `dtype` ("auto": float16 where the device has shader-f16, as the WebUI runs upscalers in
    half precision unless --no-half, SwinIR and HAT excepted; else float32). Safe to share
    between threads (the thread server's GPU workers, one device each): each device's network
    is read once, and each worker upscales on its own device's."""

    name: str
    path: Path
    device: Device | None = None  # where a call names none (None: the default device)
    dtype: Any = "auto"
    tile: int = 192  # the WebUI's ESRGAN_tile default
    pad: int = 16
    # id(device) -> (the device, its network): the device is held so that its id is not
    # taken by another device opened after it is freed
    _models: dict[int, tuple[Any, Network]] = field(default_factory=dict, init=False,
                                                   repr=False, compare=False)
    # held while a network is read or dropped: two threads read it once, and a forget()
    # between another thread's check and its return cannot hand that thread None
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False,
                                  compare=False)

    def model(self, device: Device | None = None) -> Network:
        """The network on `device` (None: the upscaler's own device), read there on first use."""
        device = device or self.device or default_device()
        with self._lock:
            held = self._models.get(id(device))
            if held is None:
                held = self._models[id(device)] = (device, load_upscaler_model(
                    self.path, dtype=self.dtype, device=device))
            return held[1]

    def forget(self) -> None:
        """Drop the networks of every device (their GPU memory goes once nothing else holds
        them); the next upscale reads them again."""
        with self._lock:
            self._models.clear()

    @property
    def scale(self) -> int:
        """The network's own factor (loads it on the upscaler's device)."""
        return self.model().scale

    def run(self, image: np.ndarray, device: Device | None = None) -> np.ndarray:
        """One pass of the network on `device` (None: the upscaler's) over (H, W, 3) uint8,
        tiled: (H*s, W*s, 3) uint8."""
        model = self.model(device)
        chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32) / 255.0
        # tiles on the network's grid (SwinIR's windows, a pixel-unshuffle's blocks): off it,
        # every window in a tile would differ from one pass's, and the seams would show
        step = _multiple(model)
        tile, pad = (-(-n // step) * step for n in (self.tile, self.pad))
        out = run_tiled(lambda part: _forward(model, part), chw, model.scale, tile=tile, pad=pad)
        return (np.clip(out, 0.0, 1.0) * 255.0).round().astype(np.uint8).transpose(1, 2, 0)

    def upscale(self, image: np.ndarray, scale: float, device: Device | None = None
                ) -> np.ndarray:
        """Upscale by `scale` as the WebUI does: the target is (W*scale, H*scale) rounded down
        to multiples of 8; the network runs up to 3 times until it is reached (at least once
        at scale 1: a 1x model, a denoiser, is asked for so), then Lanczos fits the exact size.
        On `device` (None: the upscaler's): the server's workers name their own."""
        height, width = image.shape[:2]
        if scale == 1:
            image = self.run(image, device)
        return self.upscale_to(image, (int(width * scale) // 8 * 8, int(height * scale) // 8 * 8),
                               device)

    def upscale_to(self, image: np.ndarray, size: tuple[int, int],
                   device: Device | None = None) -> np.ndarray:
        """(H, W, 3) uint8 -> (size[1], size[0], 3) uint8 (size is width, height), on `device`
        (None: the upscaler's)."""
        from PIL import Image

        for _ in range(3):
            if image.shape[1] >= size[0] and image.shape[0] >= size[1]:
                break
            before = image.shape
            image = self.run(image, device)
            if image.shape == before:  # a 1x model: once is enough
                break
        if (image.shape[1], image.shape[0]) != tuple(size):
            image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.LANCZOS))
        return image


def _forward(model: Network, part: np.ndarray) -> np.ndarray:
    """(C, h, w) -> (C, h*s, w*s): reflect-padded to the model's multiple, then cropped."""
    multiple = _multiple(model)
    _, h, w = part.shape
    padded = np.pad(part, ((0, 0), (0, -h % multiple), (0, -w % multiple)), mode="reflect")
    device = model.weights[next(iter(model.weights))].device
    x = Tensor.from_numpy(padded[None], dtype=model.dtype, device=device)
    out = model(x).numpy()[0].astype(np.float32)
    return out[:, :h * model.scale, :w * model.scale]


def _multiple(model: Network) -> int:
    """The side every input must be a multiple of: the window, or the unshuffle's block."""
    return getattr(model, "size_multiple", getattr(model, "shuffle_factor", 1))


def find_upscalers(folder: str | os.PathLike[str]) -> dict[str, Path]:
    """WebUI name -> file for the upscaler files under `folder` (searched recursively: pass the
    WebUI's models/ folder, or models/ESRGAN): Real-ESRGAN's releases under their WebUI names
    ("R-ESRGAN 4x+"), other files under their stem ("4x-UltraSharp")."""
    root = Path(folder)
    if not root.is_dir():
        problem = "is a file" if root.exists() else "does not exist"
        raise ValueError(f"upscaler folder {root} {problem}; pass the folder holding the .pth "
                         "files (the WebUI's models/ or models/ESRGAN)")
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.suffix.lower() in SUFFIXES and path.is_file() and not path.name.startswith("."):
            found.setdefault(WEBUI_NAMES.get(path.stem, path.stem), path)
    return found


MODEL_UPSCALERS: dict[str, ModelUpscaler] = {}


def register_upscaler_dir(folder: str | os.PathLike[str], *,
                          device: Device | None = None) -> list[str]:
    """Add the upscalers under `folder` to MODEL_UPSCALERS (hires fix, the Extras API and the CLI
    look names up there); returns the names found. A name registered already for the same file
    and device keeps its entry and the network it read: the server's loader registers its
    folder at every model load, on every worker, and a model switch (or a second worker) is
    no reason to read the upscalers again."""
    found = find_upscalers(folder)
    for name, path in found.items():
        known = MODEL_UPSCALERS.get(name)
        if known is None or known.path != path or known.device is not device:
            MODEL_UPSCALERS[name] = ModelUpscaler(name, path, device)
    return list(found)


def forget_upscalers() -> None:
    """Drop the networks of this process's registered upscalers (MODEL_UPSCALERS): the
    server's unload-checkpoint frees the GPU of them too."""
    for upscaler in MODEL_UPSCALERS.values():
        upscaler.forget()
