"""Request and response bodies of the WebUI's `/sdapi/v1` API (pydantic).

Field names and defaults are the AUTOMATIC1111 WebUI's (`StableDiffusionProcessingTxt2Img` /
`...Img2Img` plus the API's extra keys). Fields the WebUI has and we do not implement
(image_cfg_scale) are accepted and ignored, as are unknown keys (kept
aside for GenerationRequest's `api` settings), so a client written for the WebUI sends its
usual body unchanged. Deviations: `width`/`height` default to the loaded model's native size
rather than 512 (None here), and `sampler_name` defaults to "Euler" through `sampler_index` as
in the WebUI, save on a family that runs only its own sampler (family_sampler).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "ImageResponse",
    "Img2ImgRequest",
    "InterruptRequest",
    "PNGInfoRequest",
    "PNGInfoResponse",
    "ProgressResponse",
    "SDModelItem",
    "SamplerItem",
    "SchedulerItem",
    "TaskProgressRequest",
    "TaskProgressResponse",
    "Txt2ImgRequest",
]


class _Lenient(BaseModel):
    # extra keys are kept (model_extra): a GenerationRequest field's `api` key is read from
    # them when no field here declares it; the echo of the request leaves them out
    model_config = ConfigDict(extra="allow", populate_by_name=True,
                              protected_namespaces=())


class Txt2ImgRequest(_Lenient):
    """POST /sdapi/v1/txt2img."""

    prompt: str = ""
    negative_prompt: str | None = ""
    styles: list[str] | None = None  # names of --styles-file's styles, applied in order
    seed: int = -1
    subseed: int = -1
    subseed_strength: float = 0.0
    seed_resize_from_h: int = -1
    seed_resize_from_w: int = -1
    sampler_name: str | None = None
    sampler_index: str = "Euler"  # the WebUI's fallback when sampler_name is not given
    scheduler: str | None = None
    batch_size: int = 1
    n_iter: int = 1
    steps: int = 50
    cfg_scale: float = 7.0
    width: int | None = None  # WebUI: 512; here the model's native size
    height: int | None = None
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool = False
    do_not_save_grid: bool = False
    eta: float | None = None
    denoising_strength: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool = True
    enable_hr: bool = False  # hires fix (txt2img): the hr_* fields and denoising_strength
    hr_scale: float = 2.0
    hr_upscaler: str | None = None  # None: "Latent"
    hr_second_pass_steps: int = 0
    hr_resize_x: int = 0
    hr_resize_y: int = 0
    # the second pass's own sampler, schedule type and prompts: None, "" or "Use same
    # sampler" / "Use same scheduler": the first pass's, as in the WebUI
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str | None = ""
    hr_negative_prompt: str | None = ""
    # Forge's: the hires pass on the first pass's checkpoint only (None / "Use same
    # checkpoint" / its name); its VAE / text encoder files (["Use same choices"]: the first
    # pass's; a list of names as /sdapi/v1/sd-modules lists them; []: the model's own).
    # Typed loosely so that a wrong type gets our message, which says what to send.
    hr_checkpoint_name: str | None = None
    hr_additional_modules: Any = None
    script_name: str | None = None  # a selectable script (diffusion.server.api.scripts)
    script_args: list[Any] = Field(default_factory=list)
    send_images: bool = True
    save_images: bool = False
    alwayson_scripts: dict[str, Any] = Field(default_factory=dict)
    force_task_id: str | None = None
    infotext: str | None = None
    # a model of the server's list (title, name or hash) taking over at refiner_switch_at
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None


class Img2ImgRequest(Txt2ImgRequest):
    """POST /sdapi/v1/img2img: `init_images` (base64, with or without a data: prefix)."""

    init_images: list[str] | None = None
    resize_mode: int = 0  # 0 stretch, 1 crop, 2 fill, 3 latent upscale (img2img only)
    denoising_strength: float | None = 0.75
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur: int | None = None
    mask_blur_x: int = 4
    mask_blur_y: int = 4
    mask_round: bool = True
    # "Masked content" (diffusion.pipelines.masked_content): 0 fill, the API's default;
    # 1 original, the WebUI page's; 2 latent noise; 3 latent nothing
    inpainting_fill: int = 0
    # "Inpaint area: Only masked", the API's default (diffusion.pipelines.inpaint_area)
    inpaint_full_res: bool = True
    inpaint_full_res_padding: int = 0
    inpainting_mask_invert: int = 0
    initial_noise_multiplier: float | None = None
    include_init_images: bool = Field(default=False, exclude=True)


class ImageResponse(BaseModel):
    """txt2img/img2img response: base64 PNGs, the request as understood, and `info` (JSON)."""

    images: list[str] | None = None
    parameters: dict[str, Any]
    info: str


class PNGInfoRequest(_Lenient):
    image: str


class PNGInfoResponse(BaseModel):
    info: str
    items: dict[str, Any]
    parameters: dict[str, Any]


class ProgressResponse(BaseModel):
    progress: float
    eta_relative: float
    state: dict[str, Any]
    current_image: str | None = None
    textinfo: str | None = None
    current_task: str | None = None  # the running job's task id, as the WebUI's api.py sends


class TaskProgressRequest(_Lenient):
    """POST /internal/progress (the WebUI's page polls it with the id_task it generates with)."""

    id_task: str | None = None
    id_live_preview: int = -1  # the last preview received: no new one until the next step
    live_preview: bool = True


class InterruptRequest(_Lenient):
    """POST /sdapi/v1/interrupt and /skip, whose WebUI versions take no body: with the page's
    `id_task`, only that task's job stops (a page stops its own, not another tab's); without,
    every running job, as the WebUI stops the one it runs."""

    id_task: str | None = None


class TaskProgressResponse(BaseModel):
    """The WebUI's /internal/progress answer, for one task; `state` is ours (as
    /sdapi/v1/progress's: its image and step numbers)."""

    active: bool
    queued: bool
    completed: bool
    progress: float | None = None
    eta: float | None = None
    live_preview: str | None = None  # a data: URL
    id_live_preview: int | None = None
    textinfo: str | None = None
    state: dict[str, Any] | None = None


class SamplerItem(BaseModel):
    name: str
    aliases: list[str]
    options: dict[str, Any]


class SchedulerItem(BaseModel):
    name: str
    label: str
    aliases: list[str] | None = None
    default_rho: float | None = None
    need_inner_model: bool | None = None


class SDModelItem(BaseModel):
    model_config = ConfigDict(protected_namespaces=())

    title: str
    model_name: str
    hash: str | None = None
    sha256: str | None = None
    filename: str
    config: str | None = None
