"""Videos on the server's queue: POST /avx/txt2vid and /avx/img2vid (Wan, from a folder in the
models directory, or one of ComfyUI's single files with its `base` folder and companions:
video_sources; a Kandinsky 5 Video Lite folder by txt2vid, its image-to-video folder by img2vid,
from at least 17 frames; a HunyuanVideo 1.5 folder likewise, its image-to-video one at the
picture's bucket size; a HunyuanVideo folder by txt2vid; a FramePack folder by img2vid, with its
own fields: video_framepack; a Cosmos Predict2.5 or Predict2 Video2World folder: video_cosmos25;
a SANA-Video folder: video_sana; a Helios folder: video_helios; a Motif-Video folder:
video_motif; Wan's own fields refused: video_refusals). Settings a request
leaves out are the model family's defaults (pipelines.video.models). Neither the WebUI nor its
forks define a video API, so this one is the server's own: the CLI's txt2vid / img2vid settings
as JSON, the video back as base64 MP4 or animated WebP. A job runs on the worker's queue like a
picture's; /sdapi/v1/progress follows its steps and /sdapi/v1/interrupt stops it after the
current one (the frames are then decoded from where it stopped; with `force_task_id`,
/internal/progress and /interrupt know the job by it). Each worker keeps the last video model it
ran loaded beside its picture model, in the server's memory mode (serve's --medvram / --lowvram
/ --max-vram, as `txt2vid` takes them: each network loaded straight to host memory, the frames
the plain mode's; Wan 2.2 A14B's experts and Kandinsky 5 Video too; video_pipelines). The
answer: video_answer. A Wan VACE folder takes its control video, mask and reference pictures as
base64 pictures (`control_video`, `control_mask`: one per frame; `reference_images`) and
`control_scale`, as `txt2vid --control-video DIR ...` does; a Wan 2.2 Animate folder its
picture, pose, face, background and mask videos (video_animate); a Wan text-to-video model an
`init_video` to redraw and its `denoising_strength` (video_init; a Cosmos Predict2.5 or Predict2
Video2World folder continues it, a Lucy Edit folder edits it); a SkyReels V2 diffusion forcing
folder its `ar_step`, `causal_block_size`, `base_num_frames`, `overlap_history` and
`addnoise_condition`, and on /avx/img2vid FramePack's `last_image` (video_skyreels).
GET /avx/video-models lists the video folders and Wan files for the page's Video tab."""

from __future__ import annotations

import asyncio
import secrets
from dataclasses import replace
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

from ....loaders.cosmos import cosmos_family
from ....loaders.helios import helios_family
from ....loaders.hunyuan_video.folder import hunyuan_video_family
from ....loaders.hunyuan_video15.folder import hunyuan_video15_family
from ....loaders.kandinsky5 import kandinsky5_video_family
from ....loaders.ltx2.folder import ltx2_family
from ....loaders.motif_video import motif_video_family
from ....loaders.sana.video import sana_video_family
from ....loaders.wan import WanFiles, wan_family
from ....loaders.wan.sources import resolve_wan
from ....pipelines.video.files import check_fps
from ....pipelines.video.models import VideoDefaults
from ...images import decode_image
from ..generation import RequestError
from ..state import ServerState, State, submit, wait
from ..video_animate import animate_pixels_of, refuse_animate
from ..video_answer import video_answer
from ..video_cosmos25 import cosmos2_answer, cosmos25_answer, refuse_cosmos2, refuse_cosmos25
from ..video_framepack import FramepackFields, framepack_inputs
from ..video_helios import helios_answer, refuse_helios
from ..video_init import init_video_of, refuse_init_video
from ..video_ltx2 import ltx2_answer, refuse_ltx2
from ..video_motif import motif_video_answer, refuse_motif_video
from ..video_pipelines import video_pipeline
from ..video_refusals import refuse_hunyuan_video, refuse_hunyuan_video15, refuse_kandinsky5
from ..video_sana import refuse_sana_video, sana_video_answer
from ..video_skyreels import (
    forcing_inputs,
    last_image_of,
    refuse_forcing_fields,
    refuse_skyreels_df,
)
from ..video_sources import REQUEST_NAMES, video_listing, video_source

__all__ = ["Img2VidRequest", "Txt2VidRequest", "avx"]

avx = APIRouter()
_SETTINGS = ("frames", "fps", "width", "height", "steps", "cfg_scale")  # family defaults


class Txt2VidRequest(BaseModel):
    model: str = Field(description="a video folder (Wan, Kandinsky 5 Video, HunyuanVideo, "
                                   "LTX-2, Cosmos, SANA-Video, ...: /avx/video-models), or a "
                                   "Wan transformer file (ComfyUI's, or a GGUF), of the models "
                                   "directory, by name or title")
    base: str | None = Field(None, description="for a transformer file: the Wan folder of the "
                                               "same model (its tokenizer, scheduler, configs)")
    model_2: str | None = Field(None, description="Wan 2.2 A14B: the low-noise expert's file")
    text_encoder: str | None = Field(None, description="UMT5 file in place of the base's")
    vae: str | None = Field(None, description="Wan's VAE file in place of the base's")
    clip_vision: str | None = Field(None, description="Wan 2.1 I2V: its CLIP vision file")
    prompt: str = ""
    negative_prompt: str = ""
    frames: int | None = Field(None, ge=1, le=1001, description="1 + 4k (Wan: 81; "
                               "Kandinsky 5 Video: 121; Wan 2.2 Animate: none, the pose "
                               "video's length)")
    fps: float | None = Field(None, description="Wan: 16; Kandinsky 5 Video: 24")
    width: int | None = Field(None, ge=16, le=4096, description="Wan: 832; Kandinsky 5: 768")
    height: int | None = Field(None, ge=16, le=4096, description="Wan: 480; Kandinsky 5: 512")
    steps: int | None = Field(None, ge=1, le=1000)  # the CLI's and the picture routes' limit
    cfg_scale: float | None = Field(None, ge=0.0, le=30.0, description="5")
    cfg_scale_2: float | None = Field(None, ge=0.0, le=30.0, description="Wan 2.2 A14B: the "
                                      "low-noise expert's guidance (cfg_scale unless given)")
    seed: int = -1
    sampler: str = "diffusers"
    cache: str | None = Field(None, description="First Block Cache, \"fbc:0.12\" (the "
                              "threshold; \"fbc\" alone: 0.12), TeaCache (Wan 2.1, Wan 2.2 "
                              "Animate), "
                              "\"teacache:0.2\", or its retention mode, \"teacache-ret:0.2\";"
                              " none: off")
    control_video: list[str] | None = Field(None, description="Wan VACE: the control video, "
                                            "one base64 picture a frame, `frames` of them")
    control_mask: list[str] | None = Field(None, description="Wan VACE: its mask, one base64 "
                                           "picture a frame (grey levels: white = regenerate)")
    reference_images: list[str] = Field([], description="Wan VACE: base64 pictures of a "
                                        "subject or style to keep")
    control_scale: float | None = Field(None, ge=0.0, le=10.0, description="Wan VACE: the "
                                        "control's weight (1 unless given)")
    animate_image: str | None = Field(None, description="Wan 2.2 Animate: the character, a "
                                      "base64 picture")
    pose_video: list[str] | None = Field(None, description="Wan 2.2 Animate: the pose video, "
                                         "one base64 picture a frame; its length is the video's")
    face_video: list[str] | None = Field(None, description="Wan 2.2 Animate: the face crops, "
                                         "one base64 picture per pose frame")
    background_video: list[str] | None = Field(None, description="Wan 2.2 Animate, replace: "
                                               "the video whose person the character replaces")
    mask_video: list[str] | None = Field(None, description="Wan 2.2 Animate, replace: the "
                                         "person's mask a frame (white = the character)")
    segment_frames: int | None = Field(None, ge=5, le=1001, description="Wan 2.2 Animate: "
                                       "frames made at a time, 1 + 4k (77, or fewer for a "
                                       "shorter pose video)")
    segment_overlap: int = Field(1, description="Wan 2.2 Animate: the previous segment's "
                                 "frames a segment continues from, 1 or 5")
    init_video: str | list[str] | None = Field(None, description="Wan video-to-video: the "
                                              "video to redraw (Cosmos Predict2.5: to "
                                              "continue), a base64 file (MP4, WebM, "
                                              "WebP, GIF) or base64 pictures, one a frame")
    denoising_strength: float | None = Field(None, gt=0.0, le=1.0, description="with "
                                             "init_video: how much of it is redrawn (0.8)")
    ar_step: int | None = Field(None, ge=0, le=1000, description="SkyReels V2 diffusion "
                                "forcing: 0 all frames together; N > 0 each causal block N "
                                "steps after the one before")
    causal_block_size: int | None = Field(None, ge=1, le=251, description="SkyReels V2 "
                                          "diffusion forcing: latent frames per causal block")
    base_num_frames: int | None = Field(None, ge=1, le=1001, description="SkyReels V2 "
                                        "diffusion forcing: frames made at once (97)")
    overlap_history: int | None = Field(None, ge=1, le=1001, description="SkyReels V2 "
                                        "diffusion forcing: frames a window takes over (17)")
    addnoise_condition: float | None = Field(None, ge=0, lt=1000, description="SkyReels V2 "
                                             "diffusion forcing: noise on those frames (20)")
    format: str = Field("mp4", pattern="^(mp4|webp)$")
    also_webp: bool = Field(False, description="the animated WebP too, as `webp` (beside an "
                                               "MP4 `video`)")
    force_task_id: str | None = Field(None, description="the id /internal/progress, "
                                                        "/interrupt and /skip know the job by")


class Img2VidRequest(Txt2VidRequest, FramepackFields):
    image: str = Field(description="the first frame, base64 (PNG, JPEG, WebP)")


def _check_settings(state: ServerState, body: Txt2VidRequest, s: VideoDefaults) -> None:
    """RequestError (422) in one line for frames, fps, a size, a cache or a sampler no video
    model runs."""
    from ....pipelines.video import SAMPLERS, check_frame_count, video_cache

    try:
        check_frame_count(s.frames)
        check_fps(s.fps)
        video_cache(body.cache)
    except ValueError as error:
        raise RequestError(str(error).replace("--fps", "fps")) from None
    if s.width % 16 or s.height % 16:
        raise RequestError(f"width and height must be multiples of 16, got "
                           f"{s.width}x{s.height}")
    if max(s.width, s.height) > state.max_size:  # as a picture's sides are held
        raise RequestError(f"{s.width}x{s.height} is above this server's limit of "
                           f"{state.max_size} px a side (serve --max-size); ask for a smaller "
                           "size, or start the server with a larger --max-size")
    if body.sampler not in SAMPLERS:
        raise RequestError(f"sampler {body.sampler!r} is not one Wan runs; use one of "
                           f"{', '.join(SAMPLERS)}")


def _check(state: ServerState, body: Txt2VidRequest
           ) -> tuple[tuple[Path, WanFiles], VideoDefaults]:
    """The request's model folder and the files in place of its parts, and its frames, fps,
    size, steps and CFG (what it leaves out: the family's defaults), after every check that
    needs no GPU (RequestError: 422): the settings it gives first, before the model is
    looked up."""
    from ....pipelines.video.models import WAN, video_defaults

    given = {name: value for name in _SETTINGS if (value := getattr(body, name)) is not None}
    _check_settings(state, body, replace(WAN, **given))
    source = video_source(state.registry, body)
    s = replace(video_defaults(source.model), **given)
    _check_settings(state, body, s)  # the family's defaults (a server's --max-size)
    if kandinsky5_video_family(source.model) or hunyuan_video15_family(source.model) \
            or ltx2_family(source.model) or hunyuan_video_family(source.model) \
            or cosmos_family(source.model) in ("cosmos25", "cosmos2-v2w") \
            or sana_video_family(source.model) or helios_family(source.model) \
            or motif_video_family(source.model):
        return (source.model, WanFiles()), s
    try:
        folder, files = resolve_wan(source, REQUEST_NAMES)
    except ValueError as error:  # a part missing or not what it should be
        raise RequestError(str(error)) from None
    return (folder, files), s


def _control_named(body: Txt2VidRequest) -> str | None:
    """The first Wan VACE field the request gives (None: none)."""
    return next((name for name in ("control_video", "control_mask", "reference_images",
                                   "control_scale") if getattr(body, name)), None)


def _control(body: Txt2VidRequest, s: VideoDefaults) -> Any:
    """The request's VACE control decoded and fitted to the video (vace_inputs.VacePixels),
    None where it gives no video or pictures; ValueError (ImageError) in one line."""
    from ....imaging import eight_bit
    from ....pipelines.video.vace_inputs import vace_pixels

    if not (body.control_video or body.control_mask or body.reference_images):
        return None

    def pictures(texts: list[str] | None, field: str, mode: str | None) -> Any:
        """Each picture decoded (a reference as it is: transparency goes on white), a video
        or mask frame 8-bit in `mode` as the CLI reads them (files.read_frames)."""
        decoded = [decode_image(text, f"{field}[{i}]") for i, text in enumerate(texts or [])]
        return [p if mode is None else eight_bit(p).convert(mode) for p in decoded] or None

    if body.control_video and len(body.control_video) != s.frames:
        raise ValueError(f"control_video has {len(body.control_video)} frames but frames is "
                         f"{s.frames}: send one picture per frame")
    return vace_pixels(s.height, s.width, s.frames,
                       video=pictures(body.control_video, "control_video", "RGB"),
                       mask=pictures(body.control_mask, "control_mask", "L"),
                       references=pictures(body.reference_images, "reference_images",
                                           None) or [])


async def _run(state: ServerState, body: Txt2VidRequest, image: Any) -> dict[str, Any]:
    from ....pipelines.video import video_cache
    from ....pipelines.video.wan_refuse import wan_refusals_of

    try:  # the init video decoded first: its frames and size are the request's
        init, body = await asyncio.to_thread(init_video_of, body, state.registry)
    except ValueError as error:
        raise RequestError(str(error)) from None
    (model, s), memory, no_half_vae = _check(state, body), state.memory, state.no_half_vae
    cache = video_cache(body.cache, "cache", s.steps)  # checked by _check
    k5 = kandinsky5_video_family(model[0]) is not None
    hv15 = hunyuan_video15_family(model[0]) is not None
    ltx2 = ltx2_family(model[0]) is not None
    hv1 = hunyuan_video_family(model[0]) is not None
    cosmos = cosmos_family(model[0]) == "cosmos25"
    cosmos2 = cosmos_family(model[0]) == "cosmos2-v2w"
    sana = sana_video_family(model[0]) is not None
    helios = helios_family(model[0]) is not None
    motif = motif_video_family(model[0]) is not None
    forcing = wan_family(model[0]) == "skyreels-v2-df"
    kind_of = None if cache is None else cache.spec.kind
    try:  # what the model does not take, from its configs and a file's header, before it loads
        refuse_init_video(body, model, s.steps, image=image is not None,
                          control=_control_named(body))
        animate = refuse_animate(body, model, image is not None, _control_named(body))
        if not forcing:
            refuse_forcing_fields(body)
        if forcing:
            refuse_skyreels_df(body, kind_of, _control_named(body))
        elif k5:
            refuse_kandinsky5(model[0], body, s, image, kind_of, _control_named(body))
        elif hv15:
            refuse_hunyuan_video15(model[0], body, image, kind_of, _control_named(body))
        elif hv1:
            refuse_hunyuan_video(model[0], body, image, kind_of, _control_named(body))
        elif ltx2:
            refuse_ltx2(model[0], body, s, image, kind_of, _control_named(body))
        elif cosmos:
            refuse_cosmos25(body, kind_of, _control_named(body), memory)
        elif cosmos2:
            refuse_cosmos2(body, image, init, kind_of, _control_named(body), memory)
        elif sana:
            refuse_sana_video(model[0], body, s, kind_of, _control_named(body), memory)
        elif helios:
            refuse_helios(body, kind_of, _control_named(body))
        elif motif:
            refuse_motif_video(model[0], body, s, image, kind_of, _control_named(body))
        elif not animate:
            await asyncio.to_thread(wan_refusals_of, *model, image=image is not None,
                                    cache_kind=kind_of, guidance_scale_2=body.cfg_scale_2,
                                    control=_control_named(body))
        control = await asyncio.to_thread(_control, body, s)  # decoded before the queue
        framepack = framepack_inputs(model[0], body) if not forcing else {}  # {}: others
        last = last_image_of(body, s.frames) if forcing else None
        pixels, segment = await asyncio.to_thread(animate_pixels_of, body, model, s)
    except ValueError as error:
        raise RequestError(str(error)) from None
    seed = body.seed if body.seed != -1 else secrets.randbelow(2**32)
    kind = "img2vid" if image is not None else "txt2vid"
    worker = state.worker  # what job() takes along, not the state (a worker process's own)

    def job() -> dict[str, Any]:
        observer, device = worker.begin_job(kind)
        pipe = video_pipeline(model, memory, device, no_half_vae)
        if ltx2:
            return ltx2_answer(pipe, body, s, seed, observer, image)
        if cosmos:
            return cosmos25_answer(pipe, body, s, seed, observer, image, init)
        if cosmos2:
            return cosmos2_answer(pipe, body, s, seed, observer, init or [image])
        if sana:
            return sana_video_answer(pipe, body, s, seed, observer, image)
        if helios:
            return helios_answer(pipe, body, s, seed, observer, image, init)
        if motif:
            return motif_video_answer(pipe, body, s, seed, observer, image)
        cache = video_cache(body.cache, "cache", s.steps)  # each run's own
        size = {"height": s.height, "width": s.width} if not hv15 or image is None else {}
        inputs = {"image": image, **framepack} if k5 or hv15 or hv1 else \
            forcing_inputs(body, s.fps, image, init, last) if forcing else {
            "image": image, "guidance_scale_2": body.cfg_scale_2, "control": control,
            "conditioning_scale": body.control_scale, "video": init,
            "strength": body.denoising_strength}  # (video_init's; None: Lucy Edit's)
        if pixels is not None:  # Wan 2.2 Animate: the pose video's length
            videos = pipe(body.prompt, pixels=pixels, segment_frames=segment,
                          overlap=body.segment_overlap, negative_prompt=body.negative_prompt,
                          num_inference_steps=s.steps, guidance_scale=s.cfg_scale, seed=seed,
                          sampler=body.sampler, callback=observer.step, cache=cache)
        else:
            videos = pipe(body.prompt, negative_prompt=body.negative_prompt,
                          num_frames=s.frames, num_inference_steps=s.steps,
                          guidance_scale=s.cfg_scale, seed=seed, sampler=body.sampler,
                          callback=observer.step, cache=cache, **size, **inputs)
        return {**video_answer(videos, body, s, seed, observer, pipe, cache),
                "denoising_strength": body.denoising_strength}

    try:
        return await wait(submit(state, job, task=body.force_task_id))  # type: ignore[no-any-return]
    except ValueError as error:  # the model's own refusals (img2vid on Wan 2.1, sizes, a
        # --max-vram below its largest part)
        raise RequestError(str(error)) from None


@avx.post("/txt2vid")
async def txt2vid(body: Txt2VidRequest, state: State) -> dict[str, Any]:
    return await _run(state, body, None)


@avx.post("/img2vid")
async def img2vid(body: Img2VidRequest, state: State) -> dict[str, Any]:
    return await _run(state, body, decode_image(body.image, "image").convert("RGB"))


@avx.get("/video-models")
def video_models(state: State) -> dict[str, Any]:
    """The Wan folders and Wan transformer files of the models directory (the page shows its
    Video tab when there is one), whether each takes a first frame, the folders a file takes
    as its `base` and the files for its other parts (video_sources.video_listing), and the
    samplers Wan runs."""
    from ....pipelines.video import SAMPLERS

    return {**video_listing(state.registry), "samplers": list(SAMPLERS)}
