"""ChronoEdit's temporal reasoning settings as GenerationRequest fields (diffusion.pipelines.
request), named as diffusers' ChronoEditPipeline names its arguments: the edit is drawn as a
video of `num_frames` frames from the picture to its edit for the first
`num_temporal_reasoning_steps` steps, then as its two ends alone. Families without it refuse
them (Capabilities.temporal_reasoning); ChronoEdit's pipeline checks the frame count against
its VAE (1 + 4k)."""

from __future__ import annotations

from typing import Any

from .request_checks import whole

__all__ = ["DEFAULT_FRAMES", "FIELDS", "check_temporal_reasoning", "reasoning_asked"]

DEFAULT_FRAMES = 81  # diffusers' num_frames default

# the fields' metadata (request._label's keys): the infotext label (ChronoEdit writes the
# steps and frames among its sampler fields where reasoning ran, which says it was on), the
# CLI option's help, the API's body key
FIELDS: tuple[dict[str, str | None], ...] = (
    {"infotext": "Temporal reasoning steps", "api": "enable_temporal_reasoning",
     "cli": "ChronoEdit: reason through a video from the picture to its edit (--num-frames "
            "frames) for the first --num-temporal-reasoning-steps steps, then draw the edit "
            "alone; slower, for edits that move things"},
    {"infotext": "Temporal reasoning steps", "api": "num_temporal_reasoning_steps",
     "cli": "ChronoEdit with --enable-temporal-reasoning: the steps that draw the reasoning "
            "video (0, the default, cuts it to its ends at once)"},
    {"infotext": "Temporal reasoning frames", "api": "num_frames",
     "cli": f"ChronoEdit with --enable-temporal-reasoning: the reasoning video's frames, "
            f"1 + 4k ({DEFAULT_FRAMES}, the default; 29 is quicker)"})


def check_temporal_reasoning(request: Any) -> None:
    """ValueError in one line for a temporal reasoning setting of `request` out of range."""
    if not isinstance(request.enable_temporal_reasoning, bool):
        raise ValueError("enable_temporal_reasoning must be True or False, got "
                         f"{request.enable_temporal_reasoning!r}")
    whole("num_temporal_reasoning_steps", request.num_temporal_reasoning_steps, 0, 1000)
    whole("num_frames", request.num_frames, 1, 1001)


def reasoning_asked(request: Any) -> bool:
    """Whether `request` sets any temporal reasoning setting to other than its default."""
    return bool(request.enable_temporal_reasoning or request.num_temporal_reasoning_steps
                or request.num_frames != DEFAULT_FRAMES)
