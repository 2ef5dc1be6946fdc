"""What Wan's video VAE (wan_vae) and Qwen-Image's (qwen_image_vae: Wan's on one frame) share
around their networks: the latents' per-channel statistics from the config and the view of a
diffusers state dict with the norms' gammas flattened; and what they share with HunyuanVideo's
(hunyuan_video_vae), which also runs a video as frames: `video_frames` / `frames_video`."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import numpy as np

from gpucore import Device
from gpustd import Tensor, asarray, concatenate, permute, take_slice

__all__ = ["FlatGammas", "LatentStatistics", "checked_config", "frames_video", "video_frames"]


class FlatGammas(Mapping[str, Any]):
    """A diffusers state dict (or a loader's lazy mapping) with the norms' (C, 1, 1[, 1])
    gammas seen as (C,): what Wan's VAE loads (Qwen-Image's cuts its kernels to one frame
too)."""

    def __init__(self, state: Mapping[str, Any]) -> None:
        self._state = state

    def __iter__(self) -> Iterator[str]:
        return iter(self._state)

    def __len__(self) -> int:
        return len(self._state)

    def __getitem__(self, key: str) -> Any:
        value = self._state[key]
        return np.asarray(value).reshape(-1) if key.endswith(".gamma") else value

    def shape(self, key: str) -> tuple[int, ...]:
        shape_of = getattr(self._state, "shape", None)
        shape = tuple(shape_of(key)) if callable(shape_of) else np.shape(self._state[key])
        return (shape[0],) if key.endswith(".gamma") else shape


def checked_config(cfg: dict[str, Any], model: str, supported: str) -> dict[str, Any]:
    """`cfg`, a `model` VAE's config; ValueError in one line where it has attention in its
    down/up blocks (what `supported` has none of) or latents_mean / latents_std without
    z_dim values."""
    if cfg["attn_scales"]:
        raise ValueError(f"this {model} VAE has attention in its down/up blocks (attn_scales), "
                         f"which is not supported; use {supported}")
    if len(cfg["latents_mean"]) != cfg["z_dim"] or len(cfg["latents_std"]) != cfg["z_dim"]:
        raise ValueError(f"latents_mean and latents_std must have z_dim = {cfg['z_dim']} "
                         "values each; fix the VAE's config.json")
    return cfg


class LatentStatistics:
    """`normalize` / `denormalize` by the config's per-channel `latents_mean` / `latents_std`
    for a VAE whose latents have `latent_rank` axes, channels the second: Qwen-Image's
    (B, C, h, w), Wan's (B, C, F, h, w) (wan_vae)."""

    config: dict[str, Any]
    post_quant_conv: Any
    latent_rank = 4

    @property
    def device(self) -> Device:
        return self.post_quant_conv.weight.device  # type: ignore[no-any-return]

    def _statistics(self, dtype: Any) -> tuple[Tensor, Tensor]:
        shape = (1, -1) + (1,) * (self.latent_rank - 2)
        mean_ = np.asarray(self.config["latents_mean"], np.float32).reshape(shape)
        std = np.asarray(self.config["latents_std"], np.float32).reshape(shape)
        return (asarray(mean_, dtype=dtype, device=self.device),
                asarray(std, dtype=dtype, device=self.device))

    def normalize(self, latents: Tensor) -> Tensor:
        """(z - latents_mean) / latents_std: what the transformer reads.
        QwenImagePipeline, WanPipeline: `(z - mean) * (1 / std)`."""
        mean_, std = self._statistics(latents.dtype)
        return (latents - mean_) * (1.0 / std)

    def denormalize(self, latents: Tensor) -> Tensor:
        """latents * latents_std + latents_mean: what `decode` reads.
        QwenImagePipeline, WanPipeline: `latents / (1 / std) + mean`."""
        mean_, std = self._statistics(latents.dtype)
        return latents / (1.0 / std) + mean_


def video_frames(video: Tensor, index: int) -> Tensor:
    """(B, C, T, H, W) -> video `index` as frames (T, C, H, W)."""
    _, channels, count, height, width = video.shape
    one = take_slice(video, index, index + 1, axis=0).reshape(channels, count, height, width)
    return permute(one, (1, 0, 2, 3))


def frames_video(frames: list[Tensor]) -> Tensor:
    """[frames (T, C, H, W) of each video] -> (B, C, T, H, W)."""
    out = [permute(f, (1, 0, 2, 3)).reshape(1, f.shape[1], f.shape[0], *f.shape[2:])
           for f in frames]
    return out[0] if len(out) == 1 else concatenate(out, axis=0)
