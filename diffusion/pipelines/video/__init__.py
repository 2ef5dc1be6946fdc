"""Video pipelines: a family's networks behind one call that returns frames. Wan 2.1
text-to-video, Wan 2.2 TI2V 5B and Wan VACE (`wan.WanPipeline`), Wan 2.2 Animate
(`wan_animate.WanAnimatePipeline`), Lucy Edit's video edits on Wan 2.2 TI2V 5B
(`lucy_edit.LucyEditPipeline`), SkyReels V2 (its text- and image-to-video folders as
Wan's; diffusion forcing: `skyreels_v2_df.SkyReelsV2DiffusionForcingPipeline`), Kandinsky 5
Video Lite (`kandinsky5.Kandinsky5VideoPipeline`), HunyuanVideo 1.5
(`hunyuan_video15.HunyuanVideo15Pipeline`), the last two on `flow_video.FlowVideoPipeline`
(their memory modes, offloading, checks and decode), LTX-2 with its audio
(`ltx2.LTX2Pipeline`: frames and a waveform), and ChronoEdit, which edits pictures through
Wan 2.1 I2V (`chronoedit.ChronoEditPipeline`, a picture family: `chronoedit_model`); `models`
tells the families apart and holds their defaults. Frames are a latent axis: the VAE and
transformer work on (B, C, frames, H, W) latents (Kandinsky 5's transformer channels last,
LTX-2's as tokens), the pipeline returns (B, frames, H, W, 3); `files` writes them (MP4 with
an audio track, animated WebP, PNGs) and reads them (a VACE control, Animate's videos)."""

from .lucy_edit import LucyEditPipeline
from .wan import SAMPLERS, WanPipeline
from .wan_animate import WanAnimatePipeline
from .wan_cache import video_cache
from .wan_refuse import check_frame_count, refuse_pictures

__all__ = ["SAMPLERS", "LucyEditPipeline", "WanAnimatePipeline", "WanPipeline", "check_frame_count",
           "refuse_pictures", "video_cache"]
