"""The WebUI's POST /sdapi/v1/interrogate: `{"image": base64, "model": "clip" |
"deepdanbooru"}` answered `{"caption": text}`, on the worker's queue.

"deepdanbooru" gives DeepDanbooru's tags as the WebUI formats them under the options'
`interrogate_deepbooru_score_threshold`, `deepbooru_sort_alpha`, `deepbooru_use_spaces`,
`deepbooru_escape`, `deepbooru_filter_tags` and `interrogate_return_ranks`, from
`--deepdanbooru-dir` (default: the models folder's torch_deepdanbooru); a missing file is a
422 naming the folder. "clip" gives BLIP's caption (`--blip-dir`, under the options'
`interrogate_clip_num_beams`, `interrogate_clip_min_length`, `interrogate_clip_max_length`),
then the CLIP interrogator's best terms of the WebUI's term lists (`--interrogate-dir`) by a
transformers CLIPModel (`--clip-models-path`), under `interrogate_clip_dict_limit`,
`interrogate_clip_skip_categories` and `interrogate_return_ranks`; missing files are a 422
naming what to add. Another model name is a 404, as in the WebUI.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException
from pydantic import BaseModel

from ....interrogate import CLIP_OPTIONS, DEEPBOORU_OPTIONS, InterrogateModelError
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
    """The caption of a PIL picture by `model`, run on the queue, on the device of the worker
    that takes the job (each of a thread server's GPUs its own networks); RequestError (422)
    for a missing or unreadable file."""
    options = {key: state.options.get(key, default)
               for key, default in {**DEEPBOORU_OPTIONS, **CLIP_OPTIONS}.items()}
    worker = state.worker  # what the job refers to travels to a worker process: not `state`
    try:
        if model == "clip":
            clip = state.clip_interrogator
            clip.check()
            return await wait(submit(state, lambda: clip.caption(
                picture, options, worker.device)), client)
        booru = state.deepbooru
        booru.file()
        return await wait(submit(state, lambda: booru.tag(picture, options, worker.device)),
                          client)
    except InterrogateModelError as error:
        raise RequestError(str(error)) from None


@api.post("/interrogate")
async def interrogate_image(request: InterrogateRequest, state: State) -> dict[str, Any]:
    if request.model not in INTERROGATE_MODELS:
        raise HTTPException(404, f"model {request.model!r} is not one of this server's "
                                 f"interrogators: {', '.join(INTERROGATE_MODELS)}")
    picture = decode_image(request.image, "image").convert("RGB")
    return {"caption": await interrogate(state, picture, request.model)}
