"""SkyReels V2 diffusion forcing on the server's /avx/txt2vid and /avx/img2vid: the request's
diffusion forcing fields (diffusers' argument names: `ar_step`, `causal_block_size`,
`base_num_frames`, `overlap_history`, `addnoise_condition`; `fps` is also the fps the model is
conditioned on), what such a folder does not take refused in one line before the queue (Wan's
own fields, a step cache); /avx/img2vid's picture is the first frame, and those fields refused
for any other model. SkyReels V2's text- and image-to-video folders run as Wan's."""

from __future__ import annotations

from typing import Any

__all__ = ["FORCING_FIELDS", "forcing_inputs", "refuse_forcing_fields", "refuse_skyreels_df"]

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
        (f"cache {body.cache!r}", cache_kind is not None)) if sent), None)
    if given:
        raise ValueError(f"{given} is not taken by SkyReels V2 diffusion forcing: it runs "
                         "without Wan 2.2 A14B's second expert, VACE or a step cache")


def forcing_inputs(body: Any, fps: float, image: Any) -> dict[str, Any]:
    """The SkyReelsV2DiffusionForcingPipeline arguments the request gives, its fps and its
    first frame (`image`, or None)."""
    given = {name: getattr(body, name) for name in FORCING_FIELDS
             if getattr(body, name) is not None}
    return {"fps": round(fps), "image": image, **given}
