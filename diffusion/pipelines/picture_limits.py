"""The sizes of condition pictures an edit model reads: `PictureLimits`, the least side and
the largest aspect ratio, refused in one line (the family's `Capabilities.picture_limits`,
checked before the weights load, and its pipeline's own check). diffusers:
`Flux2ImageProcessor.check_image_input`'s `min_side_length` and `max_aspect_ratio`, which
ZImageOmniPipeline calls on every condition picture.

    FLUX2_PROCESSOR.check((48, 64), "reference picture 1", "Z-Image Omni models")  # ValueError
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["FLUX2_PROCESSOR", "PictureLimits"]


@dataclass(frozen=True)
class PictureLimits:
    """Pictures of `least_side` pixels a side or more, and of aspect ratios (the longer side
    over the shorter) up to `aspect`."""

    least_side: int
    aspect: float

    def check(self, size: tuple[int | None, int | None], what: str, models: str,
              fixes: tuple[str, str] = ("give a larger one", "crop it nearer square")
              ) -> None:
        """ValueError in one line where the picture `what` of `size` (width, height; None
        where not known yet, that side is not checked) is out of the limits; `fixes` say
        what to do about a short side and about a long aspect."""
        width, height = size
        shown = f"{what} is {width}x{height}"
        if any(side is not None and side < self.least_side for side in size):
            raise ValueError(f"{shown}: {models} read condition pictures of {self.least_side} "
                             f"pixels a side or more; {fixes[0]}")
        if width and height and max(width / height, height / width) > self.aspect:
            ratio = max(width / height, height / width)
            raise ValueError(f"{shown}: {models} read condition pictures of aspect ratios up "
                             f"to {self.aspect:g} (this one {ratio:.1f}); {fixes[1]}")

    def check_request(self, request: Any, models: str) -> None:
        """`check` on a request's condition pictures: its init image at the size it is fitted
        to (width x height, where given) and its further references as they are."""
        if request.init_image is None:
            return
        self.check((request.width, request.height), "the init image fitted to width x height",
                   models, ("raise width and height", "draw at a squarer width x height"))
        for k, picture in enumerate(request.references, 1):
            self.check(_size(picture), f"reference picture {k}", models)


# diffusers' Flux2ImageProcessor.check_image_input's defaults, which ZImageOmniPipeline runs
FLUX2_PROCESSOR = PictureLimits(least_side=64, aspect=8)


def _size(picture: Any) -> tuple[int, int]:
    """(width, height) of a PIL picture or an HxWxC array."""
    if hasattr(picture, "size") and isinstance(picture.size, tuple):
        return picture.size  # type: ignore[no-any-return]
    return int(picture.shape[1]), int(picture.shape[0])
