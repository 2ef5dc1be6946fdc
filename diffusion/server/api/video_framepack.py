"""FramePack on the server's /avx/img2vid: a HunyuanVideoFramepackPipeline folder of the models
directory (lllyasviel's FramePackI2V_HY or F1 transformer), run as `img2vid --model FOLDER`
runs it. Its own request fields (`last_image`, `sampling_type`, `latent_window_size`, as
diffusers' HunyuanVideoFramepackPipeline names them) are refused in one line for any other
model, `last_image` with F1's forwards sampling too; `framepack_inputs` gives the pipeline's
keywords, the last frame decoded before the job is queued."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from ...loaders.hunyuan_video.framepack import framepack_family
from ..images import decode_image

__all__ = ["FramepackFields", "framepack_inputs"]

_FIELDS = ("last_image", "sampling_type", "latent_window_size")


class FramepackFields(BaseModel):
    """/avx/img2vid's FramePack fields (unset: FramePackI2V_HY's backwards sampling in
    sections of 9 latent frames, 33 frames each, no frame to end on)."""

    last_image: str | None = Field(None, description="FramePack (with sampling_type "
                                   "inverted_anti_drifting only) and SkyReels V2 diffusion "
                                   "forcing (one window): the frame to end on, base64")
    sampling_type: Literal["inverted_anti_drifting", "vanilla"] | None = Field(
        None, description="FramePack: sections made backwards (FramePackI2V_HY's, the "
                          "default) or forwards (vanilla: F1's)")
    latent_window_size: int | None = Field(None, ge=1, le=33, description="FramePack: the "
                                           "latent frames a section makes (9: 33 frames)")


def framepack_inputs(folder: Path, body: Any) -> dict[str, Any]:
    """The FramePack pipeline's keywords of the request (`last_image` decoded), {} for a
    model other than FramePack; ValueError in one line for a FramePack field another model
    is given, or a last frame with forwards sampling."""
    given = [name for name in _FIELDS if getattr(body, name, None) is not None]
    if framepack_family(folder) is None:
        if given:
            raise ValueError(f"{given[0]} is for FramePack models; {folder.name} is not one")
        return {}
    sampling = body.sampling_type or "inverted_anti_drifting"
    if body.last_image is not None and sampling != "inverted_anti_drifting":
        raise ValueError("last_image needs sampling_type \"inverted_anti_drifting\" (the video "
                         "made backwards from its end); leave it out for F1's \"vanilla\"")
    last = None if body.last_image is None else \
        decode_image(body.last_image, "last_image").convert("RGB")
    return {"sampling_type": sampling, "latent_window_size": body.latent_window_size or 9,
            "last_image": last}
