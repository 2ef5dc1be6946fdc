"""A finished txt2img/img2img job -> the WebUI's response: {images, parameters, info}."""

from __future__ import annotations

import json
from typing import Any

from ...infotext import format_infotext
from ..images import encode_png
from ..jobs.worker import JobResult
from .schemas import Img2ImgRequest, Txt2ImgRequest

__all__ = ["build_response"]


def build_response(request: Txt2ImgRequest, result: JobResult,
                   facts: dict[str, Any]) -> dict[str, Any]:
    """The WebUI's {images, parameters, info} for a finished job."""
    texts = [format_infotext(settings) for settings in result.settings]
    first = result.settings[0] if result.settings else {}
    count = len(result.settings)
    seeds = [int(s["seed"]) for s in result.settings]
    clip_skip = int(first.get("clip_skip", 0)) + 1 if first else None
    info = {
        # the prompts as sent; each picture's as drawn, with the request's styles applied
        "prompt": request.prompt, "all_prompts": [facts.get("prompt", request.prompt)] * count,
        "negative_prompt": request.negative_prompt or "",
        "all_negative_prompts": [facts.get("negative_prompt",
                                           request.negative_prompt or "")] * count,
        "seed": facts["seed"], "all_seeds": seeds, "subseed": facts["subseed"],
        "all_subseeds": [facts["subseed"] + k for k in range(count)],
        "subseed_strength": request.subseed_strength,
        "width": first.get("width", request.width), "height": first.get("height",
                                                                          request.height),
        "sampler_name": facts["sampler"], "scheduler": facts["scheduler"],
        "cfg_scale": first.get("cfg_scale", request.cfg_scale),
        "distilled_cfg_scale": first.get("distilled_cfg_scale"),
        "steps": request.steps, "batch_size": request.batch_size, "n_iter": request.n_iter,
        "restore_faces": bool(first.get("face_restoration")),
        "face_restoration_model": first.get("face_restoration") or None,
        "sd_model_name": result.model.model_name if result.model else None,
        "sd_model_hash": result.model.hash if result.model else None,
        "sd_vae_name": first.get("vae"), "sd_vae_hash": first.get("vae_hash"),
        "seed_resize_from_w": request.seed_resize_from_w,
        "seed_resize_from_h": request.seed_resize_from_h,
        "denoising_strength": first.get("strength", request.denoising_strength),
        "extra_generation_params": {**{f"ControlNet {i}": text for i, text in enumerate(
            first.get("controlnet") or [])}, **(first.get("adetailer") or {})},
        "index_of_first_image": 0, "infotexts": texts,
        "styles": request.styles or [], "job_timestamp": result.job_timestamp,
        "clip_skip": clip_skip, "is_using_inpainting_conditioning": False,
        "interrupted": result.interrupted, "saved_paths": [str(p) for p in result.saved],
        "version": "avx-gpu",
    }
    parameters = request.model_dump(include=set(type(request).model_fields))
    if isinstance(request, Img2ImgRequest) and not request.include_init_images:
        parameters["init_images"] = None
        parameters["mask"] = None
    images = [encode_png(image, text) for image, text in zip(result.images, texts, strict=True)]
    return {"images": images if request.send_images else [], "parameters": parameters,
            "info": json.dumps(info)}
