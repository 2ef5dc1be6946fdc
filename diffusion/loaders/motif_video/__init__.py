"""Motif-Video (Motif Technologies' 2B text/image-to-video DiT): diffusers folders of a
`MotifVideoPipeline` or `MotifVideoImage2VideoPipeline` (folder.py).
Builds on formats/; imports neither sd/ nor flow/."""

from .folder import MotifVideoWeights, load_motif_video_folder, motif_video_family

__all__ = ["MotifVideoWeights", "load_motif_video_folder", "motif_video_family"]
