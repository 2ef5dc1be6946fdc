"""The WebUI's "Emphasis mode" setting, for the whole generation that runs under it.

    with emphasis_mode("No norm"):      # the request's (GenerationRequest.emphasis)
        conds = encode(...)             # every text encoder reads current_emphasis()

"Original" (the default): the weighted states scaled back to their mean before the weights;
"No norm": not scaled (Forge: "seems to work better for SDXL"); "Ignore": the brackets read as
syntax but their weights dropped; "None": the brackets read as text. The text modules
(`conditioning`, `flow_emphasis`) take it as their default, so the pipelines between the
request and the encoders pass nothing along.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["EMPHASIS_MODES", "check_emphasis", "current_emphasis", "emphasis_mode"]

EMPHASIS_MODES = ("Original", "No norm", "Ignore", "None")  # the WebUI's choices, in order

_MODE: ContextVar[str] = ContextVar("emphasis_mode", default="Original")


def check_emphasis(emphasis: str) -> str:
    """`emphasis` if it is one of EMPHASIS_MODES, else a ValueError naming them."""
    if emphasis not in EMPHASIS_MODES:
        raise ValueError(f"emphasis must be one of {', '.join(map(repr, EMPHASIS_MODES))}, "
                         f"got {emphasis!r}")
    return emphasis


def current_emphasis(emphasis: str | None = None) -> str:
    """`emphasis` where given, else the mode set by the innermost `emphasis_mode`."""
    return check_emphasis(_MODE.get() if emphasis is None else emphasis)


@contextmanager
def emphasis_mode(emphasis: str) -> Iterator[None]:
    """Encode every prompt inside with `emphasis`."""
    token = _MODE.set(check_emphasis(emphasis))
    try:
        yield
    finally:
        _MODE.reset(token)
