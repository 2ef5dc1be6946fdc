"""Video pipelines: a family's networks behind one call that returns frames. Wan 2.1
text-to-video (`wan.WanPipeline`). Frames are a latent axis: the VAE and transformer work on
(B, C, frames, H, W) latents, the pipeline returns (B, frames, H, W, 3)."""

from .wan import WanPipeline, check_frame_count, refuse_pictures

__all__ = ["WanPipeline", "check_frame_count", "refuse_pictures"]
