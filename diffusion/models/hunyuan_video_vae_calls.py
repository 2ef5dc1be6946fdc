"""What the HunyuanVideo VAEs (1.0's AutoencoderKLHunyuanVideo, 1.5's
AutoencoderKLHunyuanVideo15) do around their frame passes: the input's shape checked in one
line, and each video of a batch through `decode_frames` / `encode_frames` on its own, as
diffusers' `decode` and `encode` loop over the batch."""

from __future__ import annotations

from typing import Any

from gpustd import Tensor, take_slice

from .wan_vae_common import frames_video, video_frames

__all__ = ["VideoCalls"]


class VideoCalls:
    """`decode` and the batch loop of `moments` over a VAE's `decode_frames` and
    `encode_frames` (frames (T, C, H, W) of one video); `name` the VAE as its errors say.
    (The encoders' checks and noise differ: each VAE writes its own `moments` and `encode`.)"""

    name = ""
    config: dict[str, Any]

    def decode_frames(self, z: Tensor) -> Tensor:
        raise NotImplementedError  # the VAE's (its tiling's)

    def encode_frames(self, x: Tensor) -> Tensor:
        raise NotImplementedError  # the VAE's (its tiling's)

    def _check(self, x: Any, channels: int, what: str) -> None:
        if not isinstance(x, Tensor) or x.ndim != 5 or x.shape[1] != channels:
            shape = getattr(x, "shape", type(x).__name__)
            raise ValueError(f"{self.name} {what} must be a (batch, {channels}, frames, "
                             f"height, width) Tensor, got {shape}")

    def decode(self, latents: Tensor) -> Tensor:
        """(B, C, T, h, w) latents (the transformer's divided by `scaling_factor`) -> videos
        (B, 3, 1 + 4 (T - 1), r h, r w) for the config's spatial ratio r, not clamped (as
        diffusers' `decode(z).sample`)."""
        self._check(latents, self.config["latent_channels"], "latents")
        return frames_video([self.decode_frames(video_frames(latents, b))
                             for b in range(latents.shape[0])])

    def _moments(self, video: Tensor) -> tuple[Tensor, Tensor]:
        """The posterior's mean and log variance of each video of a checked batch, joined."""
        out = frames_video([self.encode_frames(video_frames(video, b))
                            for b in range(video.shape[0])])
        latent = self.config["latent_channels"]
        return take_slice(out, 0, latent, axis=1), take_slice(out, latent, 2 * latent, axis=1)
