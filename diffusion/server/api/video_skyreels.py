"""SkyReels V2 diffusion forcing on the server's /avx/txt2vid and /avx/img2vid: the request's
diffusion forcing fields (diffusers' argument names: `ar_step`, `causal_block_size`,
`base_num_frames`, `overlap_history`, `addnoise_condition`; `fps` is also the fps the model is
conditioned on), what such a folder does not take refused in one line before the queue (Wan's
own fields, a step cache); /avx/img2vid's picture is the first frame (and its `last_image`,
FramePack's field, the frame to end on, in one window), /avx/txt2vid's
`init_video` the video to extend (diffusers' SkyReelsV2DiffusionForcingVideoToVideoPipeline:
`frames` more from its last `overlap_history`, the answer the video then them), and those fields
refused for any other model. SkyReels V2's text- and image-to-video folders run as Wan's."""

from __future__ import annotations

from typing import Any

__all__ = ["FORCING_FIELDS", "forcing_inputs", "last_image_of", "refuse_forcing_fields",
           "refuse_skyreels_df", "video_to_extend"]

FORCING_FIELDS = ("ar_step", "causal_block_size", "base_num_frames", "overlap_history",
                  "addnoise_condition")


def refuse_forcing_fields(body: Any) -> None:
    """ValueError in one line for a diffusion forcing field sent to another model."""
    given = next((name for name in FORCING_FIELDS if getattr(body, name) is not None), None)
    if given:
        raise ValueError(f"{given} is for SkyReels V2 diffusion forcing models: leave it out")


def refuse_skyreels_df(body: Any, cache_kind: str | None, control: str | None) -> None:
    """ValueError in one line for what a SkyReels V2 diffusion forcing folder does not take:
    Wan's second guidance, VACE's control, a step cache (its frames are at different
    timesteps)."""
    given = next((name for name, sent in (
        ("cfg_scale_2", body.cfg_scale_2 is not None), (str(control), control is not None),
        ("sampling_type", getattr(body, "sampling_type", None) is not None),
        ("latent_window_size", getattr(body, "latent_window_size", None) is not None),
        (f"cache {body.cache!r}", cache_kind is not None)) if sent), None)
    if given:
        raise ValueError(f"{given} is not taken by SkyReels V2 diffusion forcing: it runs "
                         "without Wan 2.2 A14B's second expert, VACE, FramePack's sections "
                         "or a step cache")


def last_image_of(body: Any, frames: int) -> Any:
    """The picture a diffusion forcing run of `frames` ends on (/avx/img2vid's `last_image`,
    decoded before the queue), or None. ValueError in one line for a video longer than one
    window (diffusers' long-video path with a last frame freezes the wrong latent frames:
    SkyReelsV2DiffusionForcingPipeline refuses it)."""
    from ..images import decode_image

    if getattr(body, "last_image", None) is None:
        return None
    if body.overlap_history is not None and frames > (body.base_num_frames or 97):
        raise ValueError("last_image ends a video made in one window: ask for no more frames "
                         "than base_num_frames, or leave overlap_history out")
    return decode_image(body.last_image, "last_image").convert("RGB")


def video_to_extend(body: Any, frames: list[Any]) -> list[Any]:
    """The init video's frames (PIL images, or the request's base64 pictures, decoded here)
    the run extends. ValueError in one line for denoising_strength (Wan's redraw), a missing
    overlap_history or a video shorter than it."""
    from ...imaging import eight_bit
    from ..images import decode_image

    if body.denoising_strength is not None:
        raise ValueError("denoising_strength: SkyReels V2 does not redraw init_video, it "
                         "extends it; leave denoising_strength out")
    if body.overlap_history is None:
        raise ValueError("init_video: SkyReels V2 extends a video from its last "
                         "overlap_history frames; send overlap_history (e.g. 17)")
    if len(frames) < body.overlap_history:
        raise ValueError(f"init_video: {len(frames)} frames, fewer than overlap_history "
                         f"{body.overlap_history}; send a smaller one")
    return [frame if not isinstance(frame, str) else
            eight_bit(decode_image(frame, f"init_video[{i}]")).convert("RGB")
            for i, frame in enumerate(frames)]


def forcing_inputs(body: Any, fps: float, image: Any, video: Any = None,
                   last_image: Any = None) -> dict[str, Any]:
    """The SkyReelsV2DiffusionForcingPipeline arguments the request gives, its fps, its
    first frame (`image`, or None), the frame it ends on (`last_image`, or None) and the
    video it extends (`video`, or None)."""
    given = {name: getattr(body, name) for name in FORCING_FIELDS
             if getattr(body, name) is not None}
    return {"fps": round(fps), "image": image, "video": video, "last_image": last_image,
            **given}
