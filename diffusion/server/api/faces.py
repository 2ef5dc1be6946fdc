"""Face restoration on the WebUI's API: txt2img/img2img's `restore_faces` with the options
`face_restoration_model` ("CodeFormer", the WebUI's default, or "GFPGAN") and
`code_former_weight` (from /sdapi/v1/options or the request's override_settings), and the
Extras' `gfpgan_visibility`, `codeformer_visibility`, `codeformer_weight`. The files come from
`--gfpgan-models-path`, `--codeformer-models-path` or the models folder's GFPGAN, Codeformer
and facexlib folders (diffusion.faces.models); a missing one refuses the request, naming where
it was looked for.
"""

from __future__ import annotations

import math
from typing import Any

from ...faces import FACE_RESTORERS, FaceModelError, FaceRestoration, FaceRestorers
from .generation import RequestError

__all__ = ["DEFAULT_OPTIONS", "check_restorer", "face_options", "face_restoration",
           "face_restorers"]

DEFAULT_MODEL = "CodeFormer"
DEFAULT_WEIGHT = 0.5
# the WebUI's options and their defaults, as GET /sdapi/v1/options shows them
DEFAULT_OPTIONS = {"face_restoration": False, "face_restoration_model": DEFAULT_MODEL,
                   "code_former_weight": DEFAULT_WEIGHT}


def check_restorer(restorers: FaceRestorers, name: str) -> None:
    """RequestError (422) unless restorer `name` and its detector and parser are found."""
    try:
        restorers.check(name)
    except FaceModelError as error:
        raise RequestError(str(error)) from None


def _weight(value: Any, field: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or not 0 <= value <= 1:
        raise RequestError(f"{field} must be a number from 0 to 1 (CodeFormer's fidelity: 0 "
                           f"the codebook's face, 1 the input's), got {value!r}")
    return float(value)


def face_options(body: dict[str, Any]) -> dict[str, Any]:
    """The face restoration options of a POST /sdapi/v1/options body, checked (RequestError)."""
    updates: dict[str, Any] = {}
    if "face_restoration" in body:
        if not isinstance(body["face_restoration"], bool):
            raise RequestError(f"face_restoration must be true or false, got "
                               f"{body['face_restoration']!r}")
        updates["face_restoration"] = body["face_restoration"]
    if "face_restoration_model" in body:
        name = body["face_restoration_model"]
        if name not in FACE_RESTORERS:
            raise RequestError(f"face_restoration_model {name!r} is not one of "
                               f"{', '.join(FACE_RESTORERS)}")
        updates["face_restoration_model"] = name
    if "code_former_weight" in body:
        updates["code_former_weight"] = _weight(body["code_former_weight"],
                                                "code_former_weight")
    return updates


def face_restoration(request: Any, options: dict[str, Any],
                     restorers: FaceRestorers) -> FaceRestoration | None:
    """What a txt2img/img2img request's `restore_faces` asks for (None: nothing; unset
    follows the `face_restoration` option), checked: RequestError for an unknown model, a
    weight outside 0..1 or a missing file."""
    overrides = {**options, **(getattr(request, "override_settings", None) or {})}
    wanted = request.restore_faces
    if wanted is None:
        wanted = bool(overrides.get("face_restoration", False))
    if not wanted:
        return None
    name = overrides.get("face_restoration_model") or DEFAULT_MODEL
    if name not in FACE_RESTORERS:
        raise RequestError(f"face_restoration_model {name!r} is not one of "
                           f"{', '.join(FACE_RESTORERS)}")
    weight = _weight(overrides.get("code_former_weight", DEFAULT_WEIGHT), "code_former_weight")
    check_restorer(restorers, name)
    return FaceRestoration(restorers, name, codeformer_weight=weight)


def face_restorers(restorers: FaceRestorers) -> list[dict[str, Any]]:
    """/sdapi/v1/face-restorers: the restorers whose file is found, with its folder."""
    return restorers.available()
