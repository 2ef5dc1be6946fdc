"""Live previews while a job samples, as the WebUI's options choose them: `live_previews_enable`,
`show_progress_every_n_steps` and `show_progress_type`: "Approx cheap" (a fixed latent-to-RGB
matrix, 1/8 size), "Approx NN" (the WebUI's VAEApprox network, 1/4 size), "TAESD" (the tiny
autoencoder's decoder, full size) or "Full" (the model's own VAE, full size: the picture the
job would make of those latents, at the cost of one VAE decode per preview).

    previews = Previews(approx_dir="models/VAE-approx")
    previews.configure(options)                    # the /sdapi/v1/options dict
    if previews.due(step):
        picture = previews.picture(latents, latent_space="sd1", device=device,
                                   decode=decode)  # None: Approx cheap draws it

The latents shown are the model's prediction of the clean latents (x0) at that step where the
sampler reports one (the WebUI's k-diffusion and timestep samplers, most diffusers
schedulers), as the WebUI shows them; else the step's latents. Approx cheap maps them by the
model's latent space's matrix (diffusion.models.latent_rgb). TAESD files are looked up as
the WebUI names them, by the model's latent space (its `Capabilities.latent_space`):
`taesd_decoder` (SD 1/2), `taesdxl_decoder` (SDXL), `taesd3_decoder` (SD3), `taef1_decoder`
(FLUX.1, Chroma, Z-Image: FLUX.1's VAE), `.safetensors` or `.pth`; VAEApprox files as
`model.pt` (SD 1/2), `vaeapprox-sdxl.pt` (SDXL), `vaeapprox-sd3.pt` (SD3). A missing file,
or a model without one, falls back to Approx cheap and says so once in the log, naming the
file and where to put it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..pipelines.observer import Decode

__all__ = ["PREVIEW_OPTIONS", "PREVIEW_TYPES", "Previews", "check_preview_options",
           "taesd_name"]

_LOG = logging.getLogger(__name__)
PREVIEW_TYPES = ("Full", "Approx NN", "Approx cheap", "TAESD")
PREVIEW_OPTIONS = ("live_previews_enable", "show_progress_every_n_steps", "show_progress_type",
                   "live_preview_allow_lowvram_full")
_TAESD_NAMES = {"sd1": "taesd_decoder", "sd2": "taesd_decoder", "sdxl": "taesdxl_decoder",
                "sd3": "taesd3_decoder", "flux": "taef1_decoder", "chroma": "taef1_decoder"}
# (Z-Image's latent space is "flux": FLUX.1's VAE)


def taesd_name(latent_space: str) -> str | None:
    """The WebUI's TAESD decoder file stem for a latent space ("sdxl" -> taesdxl_decoder),
    None where TAESD has none."""
    return _TAESD_NAMES.get(latent_space)


def check_preview_options(body: Mapping[str, Any]) -> dict[str, Any]:
    """The preview options in an /options body, checked; ValueError in one line otherwise."""
    updates: dict[str, Any] = {}
    for name in ("live_previews_enable", "live_preview_allow_lowvram_full"):
        if name in body:
            if not isinstance(body[name], bool):
                raise ValueError(f"{name} must be true or false, got {body[name]!r}")
            updates[name] = body[name]
    if "show_progress_every_n_steps" in body:
        value = body["show_progress_every_n_steps"]
        if isinstance(value, bool) or not isinstance(value, int) or value < -1:
            raise ValueError("show_progress_every_n_steps must be a whole number, -1 or more "
                             f"(0 or -1: no preview while sampling), got {value!r}")
        updates["show_progress_every_n_steps"] = value
    if "show_progress_type" in body:
        if body["show_progress_type"] not in PREVIEW_TYPES:
            raise ValueError(f"show_progress_type must be one of {', '.join(PREVIEW_TYPES)}, "
                             f"got {body['show_progress_type']!r}")
        updates["show_progress_type"] = body["show_progress_type"]
    return updates


class Previews:
    """The server's preview settings and its preview networks (TAESD decoders and VAEApprox,
    loaded once per file and device). `approx_dir`: where their files are looked for (the
    WebUI's models/VAE-approx)."""

    def __init__(self, approx_dir: str | os.PathLike[str] | None = None) -> None:
        self.approx_dir = None if approx_dir is None else Path(approx_dir)
        self.enabled, self.every, self.kind = True, 1, "Approx cheap"
        self.lowvram_full = False  # Full under --lowvram too (else Approx NN, as the WebUI)
        self._networks: dict[tuple[Path, int], Any] = {}
        self._said: set[str] = set()
        self._lock = threading.Lock()

    def configure(self, options: Mapping[str, Any]) -> None:
        """Take PREVIEW_OPTIONS from the /options dict (missing ones keep their values)."""
        self.enabled = bool(options.get("live_previews_enable", self.enabled))
        self.every = int(options.get("show_progress_every_n_steps", self.every))
        self.kind = str(options.get("show_progress_type", self.kind))
        self.lowvram_full = bool(options.get("live_preview_allow_lowvram_full",
                                             self.lowvram_full))

    def settings(self) -> tuple[Path | None, bool, int, str, bool]:
        """(approx_dir, and the PREVIEW_OPTIONS' values): what a worker process is sent to
        make its own previews alike."""
        return self.approx_dir, self.enabled, self.every, self.kind, self.lowvram_full

    @property
    def decodes(self) -> bool:
        """Whether the type chosen draws on the device, between steps (all but Approx cheap,
        a matrix product on the CPU)."""
        return self.kind != "Approx cheap"

    def due(self, step: int) -> bool:
        """Whether sampling step `step` (from 1) shows a preview."""
        return self.enabled and self.every > 0 and step % self.every == 0

    def picture(self, latents: np.ndarray, *, latent_space: str, device: Any,
                decode: Decode | None = None,
                lowvram: bool = False) -> np.ndarray | None:
        """The first latent of `latents` (B, C, h, w) as an (H, W, 3) uint8 picture by the
        type chosen, or None where Approx cheap draws it (that type, or a missing file).
        `decode(latents)`: the pictures the model's own VAE makes of latents (for "Full");
        `lowvram`: the model runs under --lowvram, where Full draws as Approx NN (each decode
        would bring the VAE in and the denoiser's blocks out) unless
        live_preview_allow_lowvram_full is set, as in the WebUI."""
        if self.kind == "Full" and (self.lowvram_full or not lowvram):
            if decode is not None:  # the latents as they are, as the pipeline decodes them
                started = time.perf_counter()
                picture = np.asarray(decode(latents[:1])[0])
                _LOG.debug("Full live preview: one VAE decode, %.3f s",
                           time.perf_counter() - started)
                return picture
            self._say("this model's pipeline gives no VAE decode to preview with; live "
                      "previews use Approx cheap")
            return None
        first = np.ascontiguousarray(latents[:1], np.float32)
        if self.kind == "TAESD":
            return self._taesd(first, latent_space, device)
        if self.kind in ("Approx NN", "Full"):  # (Full here: under --lowvram)
            return self._approx_nn(first, latent_space, device)
        return None

    def forget(self) -> None:
        """Drop the preview networks loaded (unload-checkpoint: their GPU memory goes once
        nothing else holds them); the next preview that needs one loads it again."""
        with self._lock:
            self._networks.clear()

    def _taesd(self, first: np.ndarray, space: str, device: Any) -> np.ndarray | None:
        from gpustd import Tensor

        decoder = self._taesd_decoder(space, int(first.shape[1]), device)
        if decoder is None:
            return None
        image = decoder(Tensor.from_numpy(first, device=decoder.weights["1.weight"].device))
        pixels = np.nan_to_num(image.numpy()[0].transpose(1, 2, 0))  # NaN: black, no warning
        return np.clip(pixels * 255.0 + 0.5, 0, 255).astype(np.uint8)

    def _approx_nn(self, first: np.ndarray, space: str, device: Any) -> np.ndarray | None:
        from gpustd import Tensor

        from ..models.vae_approx import load_vae_approx, vae_approx_name

        name = vae_approx_name(space)
        if name is None:
            self._say(f"{space} models: the WebUI has no Approx NN (VAEApprox) network for "
                      "them; live previews use Approx cheap")
            return None
        if self.approx_dir is None or not (self.approx_dir / name).is_file():
            where = self.approx_dir if self.approx_dir is not None else \
                "a VAE-approx folder (--vae-approx-dir, or --models-dir's VAE-approx)"
            self._say(f"Approx NN previews need the WebUI's {name}: put it in {where}; live "
                      "previews use Approx cheap")
            return None
        network = self._network(self.approx_dir / name, device, load_vae_approx)
        if network is None or not self._fits(network, self.approx_dir / name,
                                             int(first.shape[1])):
            return None
        # the WebUI's picture of it: [-1, 1] to [0, 1], clamped, scaled and truncated to bytes
        image = network(Tensor.from_numpy(first, device=network.device)).numpy()[0]
        return (np.clip(image * 0.5 + 0.5, 0.0, 1.0) * 255.0).transpose(1, 2, 0).astype(
            np.uint8)

    def _taesd_decoder(self, space: str, channels: int, device: Any) -> Any:
        from ..models.taesd import load_taesd_decoder

        stem = taesd_name(space)
        files = [] if stem is None or self.approx_dir is None else [
            self.approx_dir / f"{stem}{suffix}" for suffix in (".safetensors", ".pth")]
        path = next((file for file in files if file.is_file()), None)
        if path is None:
            where = f" in {self.approx_dir}" if self.approx_dir is not None else \
                " (no --vae-approx-dir or models folder)"
            self._say(f"{space} models: no TAESD decoder file "
                      f"{f'{stem}.safetensors or {stem}.pth' if stem else 'exists for them'}"
                      f"{where}; live previews use Approx cheap")
            return None
        decoder = self._network(path, device, load_taesd_decoder)
        if decoder is None or not self._fits(decoder, path, channels):
            return None
        return decoder

    def _network(self, path: Path, device: Any, load: Callable[..., Any]) -> Any:
        """The network in `path` on `device`, loaded once (None, said once, for a bad file)."""
        with self._lock:
            key = (path, id(device))
            if key not in self._networks:
                from ..loaders import WeightsError

                try:
                    self._networks[key] = load(path, device=device)
                except WeightsError as error:
                    self._networks[key] = None
                    self._say(f"{error}; live previews use Approx cheap")
            return self._networks[key]

    def _fits(self, network: Any, path: Path, channels: int) -> bool:
        """Whether `network` (from `path`) reads latents of `channels` (else said once)."""
        if network.latent_channels != channels:
            self._say(f"{path} decodes {network.latent_channels}-channel latents, the model's "
                      f"have {channels}; live previews use Approx cheap")
            return False
        return True

    def _say(self, message: str) -> None:
        if message not in self._said:
            self._said.add(message)
            _LOG.warning(message)
