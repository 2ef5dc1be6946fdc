"""The WebUI's "Outpainting mk2" script (img2img) through the API: `script_args` are (the UI's
info text, ignored; pixels to expand, mask blur, directions, fall-off exponent, color
variation), e.g. ["", 64, 8, ["left"], 1.0, 0.05].

As the WebUI's script does it, one direction after the other (left, right, up, down), each one
request on the queue: the picture grown by that side's share of the pixels (the whole growth
rounded up to a multiple of 64), the new strip filled with noise shaped to the picture's
spectrum and matched to its colours (`matched_noise`), masked from `mask blur` px inside the
picture, and the strip's end of the picture (at most the request's width or height) inpainted
with "Masked content: original", the mask blurred by `4 * mask blur`, "Whole picture"; the
same seed for every direction. The WebUI's latent mask has no counterpart: the one mask does
both. One picture per call (batch_size and n_iter are taken as 1)."""

from __future__ import annotations

import json
import math
import secrets
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from ...images import ImageError, decode_image, encode_png
from ..generation import RequestError
from ..schemas import Img2ImgRequest, Txt2ImgRequest
from .outpaint import DIRECTIONS, Check, Generate, check_directions, whole

__all__ = ["ARG_LABELS", "matched_noise", "run_mk2"]

ARG_LABELS: tuple[tuple[str, Any], ...] = (
    ("Recommended settings", None), ("Pixels to expand", 128), ("Mask blur", 8),
    ("Outpainting direction", list(DIRECTIONS)),
    ("Fall-off exponent (lower=higher detail)", 1.0), ("Color variation", 0.05))


def _shifted_fft(data: np.ndarray, inverse: bool = False) -> np.ndarray:
    """Per channel: shift, orthonormal (inverse) FFT, shift back (the script's _fft2/_ifft2)."""
    transform = np.fft.ifft2 if inverse else np.fft.fft2
    return np.fft.ifftshift(transform(np.fft.fftshift(data, axes=(0, 1)), axes=(0, 1),
                                      norm="ortho"), axes=(0, 1))


def _matched_cdf(source: np.ndarray, template: np.ndarray) -> np.ndarray:
    """`source`'s values moved to `template`'s distribution by their quantiles (one channel,
    as scikit-image's match_histograms does it for floats)."""
    _, inverse, counts = np.unique(source, return_inverse=True, return_counts=True)
    t_values, t_counts = np.unique(template, return_counts=True)
    quantiles = np.cumsum(counts) / source.size
    t_quantiles = np.cumsum(t_counts) / template.size
    return np.interp(quantiles, t_quantiles, t_values)[inverse.reshape(-1)]


def matched_noise(image: np.ndarray, mask: np.ndarray, noise_q: float,
                  color_variation: float) -> np.ndarray:
    """The masked part of `image` (H, W, 3 floats in 0-1; `mask` the same shape, 1 = new)
    filled with noise of the unmasked part's spectrum and colours (parlance-zz's
    g-diffuser-bot shaping, as the WebUI's get_matched_noise)."""
    rows, cols = image.shape[:2]
    grey = mask.sum(axis=2) / 3.0
    fill, reference = grey > 1e-6, grey < 1e-3
    windowed = image * (1.0 - grey[..., None])
    windowed /= np.max(windowed)
    windowed += np.average(image) * mask
    spectrum = _shifted_fft(windowed)
    magnitude = np.absolute(spectrum)
    phase = spectrum / magnitude
    rng = np.random.default_rng(0)  # a fixed seed: only the request's seed varies the result
    scale = min(rows, cols)
    x = (np.arange(rows) / rows * 2.0 - 1.0) * (rows / scale)
    y = (np.arange(cols) / cols * 2.0 - 1.0) * (cols / scale)
    window = 1.0 / ((x[:, None] ** 2 + 1.0) * (y[None, :] ** 2 + 1.0))
    noise = rng.random((rows, cols, image.shape[2]))
    noise = noise * color_variation + (1.0 - color_variation) * (noise.sum(axis=2) / 3.0
                                                                 )[..., None]
    noise = np.real(_shifted_fft(_shifted_fft(noise) * window[..., None], inverse=True))
    shaped = np.absolute(_shifted_fft(noise)) ** 2 * magnitude ** noise_q * phase
    shaped = np.real(_shifted_fft(shaped, inverse=True))
    shaped -= np.min(shaped)
    shaped /= np.max(shaped)
    picked, kept = shaped[fill], image[reference]
    shaped[fill] = np.stack([_matched_cdf(picked[:, c], kept[:, c])
                             for c in range(picked.shape[1])], axis=1)
    return np.clip(image * (1.0 - mask) + shaped * mask, 0.0, 1.0)


def _number(value: Any, name: str, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= high:
        raise RequestError(f"script_args: {name} must be a number from 0 to {high}, got "
                           f"{value!r}")
    return float(value)


def _arguments(args: list[Any]) -> tuple[int, int, list[str], float, float]:
    given = list(args) + [default for _, default in ARG_LABELS[len(args):]]
    pixels = whole(given[1], "Pixels to expand (script_args[1])", 8, 256)
    blur = whole(given[2], "Mask blur (script_args[2])", 0, 64)
    directions = check_directions(given[3], "script_args[3] (Outpainting direction)")
    noise_q = _number(given[4], "Fall-off exponent (script_args[4])", 4.0)
    color = _number(given[5], "Color variation (script_args[5])", 1.0)
    return pixels, blur, directions, noise_q, color


async def run_mk2(body: Txt2ImgRequest, args: list[Any], generate: Generate,
                  check: Check) -> dict[str, Any]:
    """The picture grown direction by direction, one inpaint request each."""
    if not isinstance(body, Img2ImgRequest) or not body.init_images:
        raise RequestError("Outpainting mk2 is an img2img script: send it to "
                           "/sdapi/v1/img2img with init_images")
    pixels, blur, directions, noise_q, color = _arguments(args)
    try:
        init = decode_image(body.init_images[0], "init_images[0]").convert("RGB")
    except ImageError as exc:
        raise RequestError(str(exc)) from None
    grows = dict.fromkeys(DIRECTIONS, 0)
    grows.update({d: pixels for d in directions})
    target_w = math.ceil((init.width + grows["left"] + grows["right"]) / 64) * 64
    target_h = math.ceil((init.height + grows["up"] + grows["down"]) / 64) * 64
    if grows["left"]:
        grows["left"] = grows["left"] * (target_w - init.width) // (
            grows["left"] + grows["right"])
    if grows["right"]:
        grows["right"] = target_w - init.width - grows["left"]
    if grows["up"]:
        grows["up"] = grows["up"] * (target_h - init.height) // (grows["up"] + grows["down"])
    if grows["down"]:
        grows["down"] = target_h - init.height - grows["up"]
    seed = body.seed if body.seed != -1 else secrets.randbelow(4294967294)
    base = body.model_copy(update={
        "script_name": None, "script_args": [], "send_images": True, "n_iter": 1,
        "batch_size": 1, "mask_blur": blur * 4, "inpainting_fill": 1,
        "inpaint_full_res": False, "inpainting_mask_invert": 0, "resize_mode": 0,
        "seed": seed})
    tile_w, tile_h = body.width or init.width, body.height or init.height
    check(base.model_copy(update={"init_images": [encode_png(np.asarray(init))],
                                  "width": tile_w, "height": tile_h}))
    picture, answers = init, []
    for side in (d for d in DIRECTIONS if grows[d]):
        grow, horizontal = grows[side], side in ("left", "right")
        res_w = picture.width + (grow if horizontal else 0)
        res_h = picture.height + (0 if horizontal else grow)
        width, height = math.ceil(res_w / 64) * 64, math.ceil(res_h / 64) * 64
        canvas = Image.new("RGB", (width, height))
        canvas.paste(picture, (grow if side == "left" else 0, grow if side == "up" else 0))
        mask = Image.new("RGB", (width, height), "white")
        ImageDraw.Draw(mask).rectangle((
            grow + blur if side == "left" else 0, grow + blur if side == "up" else 0,
            width - grow - blur if side == "right" else res_w,
            height - grow - blur if side == "down" else res_h), fill="black")
        noised = matched_noise(np.asarray(canvas) / 255.0, np.asarray(mask) / 255.0,
                               noise_q, color)
        out = Image.fromarray(np.clip(noised * 255.0, 0.0, 255.0).astype(np.uint8), "RGB")
        part_w = min(tile_w, picture.width + grow) if horizontal else width
        part_h = height if horizontal else min(tile_h, picture.height + grow)
        x0 = 0 if side == "left" else width - part_w
        y0 = 0 if side == "up" else height - part_h
        region = (x0, y0, x0 + part_w, y0 + part_h)
        cell = base.model_copy(update={
            "init_images": [encode_png(np.asarray(out.crop(region)))],
            "mask": encode_png(np.asarray(mask.crop(region))),
            "width": part_w, "height": part_h})
        answers.append(await generate(cell))
        drawn = decode_image(answers[-1]["images"][0], "a side's picture").convert("RGB")
        out.paste(drawn, (x0, y0))
        picture = out.crop((0, 0, res_w, res_h))
        if json.loads(answers[-1]["info"]).get("interrupted"):
            break
    info = json.loads(answers[0]["info"])
    text = f"{info['infotexts'][0]}, Script: Outpainting mk2"
    info.update({"infotexts": [text], "prompt": body.prompt, "all_seeds": [seed],
                 "interrupted": any(json.loads(a["info"]).get("interrupted")
                                    for a in answers)})
    parameters = {**answers[0]["parameters"], "script_name": body.script_name,
                  "script_args": body.script_args}
    image = encode_png(np.asarray(picture), text)
    return {"images": [image] if body.send_images else [], "parameters": parameters,
            "info": json.dumps(info)}
