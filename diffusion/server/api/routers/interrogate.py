"""The WebUI's POST /sdapi/v1/interrogate: `{"image": base64, "model": "clip" |
"deepdanbooru"}` answered `{"caption": text}`, on the worker's queue.

"deepdanbooru" gives DeepDanbooru's tags as the WebUI formats them under the options'
`interrogate_deepbooru_score_threshold`, `deepbooru_sort_alpha`, `deepbooru_use_spaces`,
`deepbooru_escape`, `deepbooru_filter_tags` and `interrogate_return_ranks`, from
`--deepdanbooru-dir` (default: the models folder's torch_deepdanbooru); a missing file is a
422 naming the folder. "clip" (BLIP's caption and CLIP's ranking of the WebUI's term lists)
is not served yet: a 422 saying so. Another model name is a 404, as in the WebUI.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel

from ....interrogate import DEEPBOORU_OPTIONS, InterrogateModelError
from ...images import decode_image
from ..generation import RequestError
from ..state import ServerState, State, submit, wait

__all__ = ["INTERROGATE_MODELS", "InterrogateRequest", "api", "interrogate"]

api = APIRouter()
INTERROGATE_MODELS = ("clip", "deepdanbooru")


class InterrogateRequest(BaseModel):
    image: str = ""
    model: str = "clip"  # the WebUI's default


async def interrogate(state: ServerState, picture: Any, model: str,
                      client: Any = None) -> str:
    """The caption of a PIL picture by `model`, run on the queue; RequestError (422) for a
    missing or unreadable file, or the CLIP interrogator."""
    if model == "clip":
        raise RequestError("model 'clip' (the CLIP interrogator: a BLIP caption and CLIP's "
                           "ranking of term lists) is not served by this server; send "
                           "\"deepdanbooru\"")
    booru = state.deepbooru
    try:
        booru.file()
    except InterrogateModelError as error:
        raise RequestError(str(error)) from None
    options = {key: state.options.get(key, default)
               for key, default in DEEPBOORU_OPTIONS.items()}
    try:
        return await wait(submit(state, lambda: booru.tag(picture, options)), client)
    except InterrogateModelError as error:
        raise RequestError(str(error)) from None


@api.post("/interrogate")
async def interrogate_image(request: InterrogateRequest, state: State) -> dict[str, Any]:
    if request.model not in INTERROGATE_MODELS:
        raise HTTPException(404, f"model {request.model!r} is not one of this server's "
                                 f"interrogators: {', '.join(INTERROGATE_MODELS)}")
    picture = decode_image(request.image, "image").convert("RGB")
    return {"caption": await interrogate(state, picture, request.model)}
