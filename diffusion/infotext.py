"""Generation parameters as WebUI "infotext", and PNGs that carry it, written atomically.

The AUTOMATIC1111 WebUI stores how an image was made in the PNG text chunk `parameters`::

    a lighthouse at dusk, oil painting
    Negative prompt: blurry
    Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 42, Size: 512x512, Model: sd15

The WebUI (PNG Info tab), civitai and most image browsers read it back. Values holding a comma,
colon or newline are JSON-quoted; a field that does not apply is left out.

What `Seed` means: with the WebUI's samplers image k of a batch has its own seed (seed + k,
the settings' `seeds`), as in the WebUI. DDIM, PLMS, UniPC and "diffusers" draw the noise of a
whole batch from one seed, so those images carry the batch's seed plus `Batch size` /
`Batch pos` (the WebUI's own fields for this, from before it gave each image seed + k): image i
is reproduced by the same settings with that seed and batch size, not by that seed alone.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "WEBUI_FIELDS",
    "format_infotext",
    "next_sequence_number",
    "parse_infotext",
    "read_infotext",
    "save_images",
    "save_png",
]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# The mode open() would give a new file (0o666 less the umask): mkstemp's temporary file is
# 0o600, which a renamed picture would keep. Read once, at import: os.umask can only be read
# by setting it, which must not race with threads creating files.
_FILE_MODE = 0o666 & ~_umask()

PNG_KEY = "parameters"

# `Key: value` pairs of the last line; a value is a JSON string or runs to the next comma
_PARAM = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')
_SIZE = re.compile(r"^(\d+)x(\d+)$")


def _number(value: float) -> str:
    """7.0 -> "7", 7.5 -> "7.5": as the WebUI shows its sliders; repr keeps every digit."""
    value = float(value)
    return str(int(value)) if value.is_integer() else repr(value)


def _quote(value: Any) -> str:
    text = str(value)
    if "," in text or ":" in text or "\n" in text:
        return json.dumps(text, ensure_ascii=False)
    return text


def format_infotext(settings: Mapping[str, Any], *, batch_pos: int | None = None) -> str:
    """The WebUI infotext for one image made with `settings` (a `GenerationResult.settings`
    dict: prompt, negative_prompt, steps, sampler, cfg_scale, seed, width, height, and optional
    scheduler, seeds (one per image), model, batch_size, clip_skip, strength, subseed(s),
    subseed_strength, ensd, rng, refiner, refiner_switch_at, mask_mode, mask_blur,
    inpaint_area, inpaint_full_res_padding, masked_content and face_restoration). `batch_pos`
    is the image's index in its batch.

    Field order and formatting follow the WebUI's `create_infotext`. Our `clip_skip` (layers
    skipped, diffusers' convention) is written as the WebUI's `Clip skip` = clip_skip + 1, and
    only when it is not the default. `rng="torch"` (torch's CPU generator) is written as the
    WebUI writes its CPU generator, `RNG: CPU`; numpy's generator has no WebUI name and no field.
    """
    pos = batch_pos or 0
    seeds = settings.get("seeds")
    per_image = seeds is not None and len(seeds) > pos  # the WebUI's seed + k per image
    batch_size = 1 if per_image else int(settings.get("batch_size", 1))
    clip_skip = int(settings.get("clip_skip", 0) or 0)
    strength = settings.get("strength")
    varied = float(settings.get("subseed_strength") or 0) != 0
    subseeds = settings.get("subseeds") or [settings.get("subseed")]
    params: dict[str, Any] = {
        "Steps": int(settings["steps"]),
        "Sampler": settings["sampler"],
        "Schedule type": settings.get("scheduler") or None,
        "CFG scale": _number(settings["cfg_scale"]),
        "Distilled CFG Scale": _number(settings["distilled_cfg_scale"])
        if settings.get("distilled_cfg_scale") is not None else None,
        "Seed": int(seeds[pos] if per_image and seeds is not None else settings["seed"]),
        "Face restoration": settings.get("face_restoration") or None,
        "Size": f"{int(settings['width'])}x{int(settings['height'])}",
        "Model": settings.get("model") or None,
        "VAE hash": settings.get("vae_hash") or None,
        "VAE": settings.get("vae") or None,
        "Variation seed": subseeds[min(pos, len(subseeds) - 1)] if varied else None,
        "Variation seed strength": _number(settings["subseed_strength"]) if varied else None,
        "Seed resize from": "{}x{}".format(*settings["seed_resize_from"])
        if settings.get("seed_resize_from") else None,
        "Batch size": batch_size if batch_size > 1 else None,
        "Batch pos": pos if batch_size > 1 else None,
        "Denoising strength": None if strength is None else _number(strength),
        "Reference images": int(settings["references"]) if settings.get("references") else None,
        "Clip skip": clip_skip + 1 if clip_skip > 0 else None,
        "Refiner": settings.get("refiner") or None,
        # (none for a refiner that runs after the sampling: HunyuanImage 2.1's)
        "Refiner switch at": _number(settings["refiner_switch_at"])
        if settings.get("refiner") and settings.get("refiner_switch_at") is not None else None,
        "Hires refiner": settings.get("hires_refiner_pass") or None,
        "ENSD": int(settings["ensd"]) if settings.get("ensd") else None,
        "RNG": "CPU" if settings.get("rng") == "torch" else None,
        "Tiling": "True" if settings.get("tiling") else None,  # the WebUI's, after RNG
        "Emphasis": settings.get("emphasis") or None,  # the WebUI's mode where not Original
        "Cache": settings.get("cache") or None,  # step caching: kind, threshold, steps run
        "Int8": settings.get("int8") or None,  # W8A8 linear layers (--int8)
        # the denoiser's f16 GEMMs summed in f16 (--fp16-accumulation)
        "FP16 accumulation": "True" if settings.get("fp16_accumulation") else None,
        **_hires_fields(settings),
        # inpainting (diffusion.pipelines.inpaint_plan), in the order the WebUI adds them:
        # "Inpaint not masked", the blur, "Only masked" with its padding (even at 0), the
        # masked content but "original"
        "Mask mode": settings.get("mask_mode") or None,
        "Mask blur": int(settings["mask_blur"]) if settings.get("mask_blur") else None,
        "Inpaint area": settings.get("inpaint_area") or None,
        "Masked area padding": int(settings.get("inpaint_full_res_padding") or 0)
        if settings.get("inpaint_area") else None,
        "Masked content": settings.get("masked_content") or None,
        # img2img's initial_noise_multiplier, where not 1 (as the WebUI adds it when sampling)
        "Noise multiplier": _number(settings["noise_multiplier"])
        if settings.get("noise_multiplier") not in (None, 1.0) else None,
        "Lora hashes": settings.get("lora_hashes") or None,
        "TI hashes": settings.get("ti_hashes") or None,
        # the ControlNet extension's units (diffusion.pipelines.control_spec)
        **{f"ControlNet {i}": text for i, text in enumerate(settings.get("controlnet") or [])},
        # ADetailer's units' fields (diffusion.server.api.adetailer_pass)
        **(settings.get("adetailer") or {}),
        **{key: _number(value) for key, value in (settings.get("sampler_fields") or {}).items()},
        # Forge's separately loaded VAE / text encoder files, by file stem
        **{f"Module {k}": name for k, name in enumerate(settings.get("modules") or (), 1)},
    }
    line = ", ".join(f"{key}: {_quote(value)}" for key, value in params.items()
                     if value is not None)
    negative = settings.get("negative_prompt") or ""
    negative_line = f"\nNegative prompt: {negative}" if negative else ""
    return f"{settings.get('prompt', '')}{negative_line}\n{line}".strip()


def _hires_fields(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The WebUI's hires fix fields; its second pass's strength is the "Denoising strength"."""
    if not settings.get("hires_upscaler"):
        return {}
    resize = settings.get("hires_resize")
    distilled = settings.get("hires_distilled_cfg")
    return {"Denoising strength": _number(settings["hires_denoise"]),
            "Hires Distilled CFG Scale": None if distilled is None else _number(distilled),
            # the second pass's own sampler, schedule type and prompts, where they differ
            "Hires sampler": settings.get("hires_sampler") or None,
            "Hires schedule type": settings.get("hires_scheduler") or None,
            "Hires prompt": settings.get("hires_prompt") or None,
            "Hires negative prompt": settings.get("hires_negative_prompt") or None,
            "Hires upscale": None if resize else _number(settings.get("hires_scale", 2.0)),
            "Hires resize": f"{resize[0]}x{resize[1]}" if resize else None,
            "Hires steps": settings.get("hires_steps") or None,
            "Hires upscaler": settings["hires_upscaler"],
            # Forge's hr_additional_modules: file stems, "Built-in" or "Use same choices"
            **{f"Hires Module {k}": name
               for k, name in enumerate(settings.get("hires_modules") or (), 1)}}


def parse_infotext(text: str) -> dict[str, Any]:
    """Read a WebUI infotext back into a settings dict (the inverse of `format_infotext`):
    prompt, negative_prompt, steps, sampler, cfg_scale, seed, width, height, and where present
    model, batch_size, batch_pos, strength, clip_skip (ours: WebUI's Clip skip - 1) and
    rng ("torch" for `RNG: CPU`; the WebUI's GPU and NV generators stay as `RNG` strings).
    Fields we do not use ("Model hash", "Schedule type", ...) are kept as strings under their
    WebUI names. Like the WebUI's `parse_generation_parameters`, the last line holds the
    parameters only when at least three `Key: value` pairs are found there.
    """
    *lines, last = text.strip().split("\n")
    if len(_PARAM.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt: list[str] = []
    negative: list[str] = []
    for raw in lines:
        line = raw.strip()
        if line.startswith("Negative prompt:"):
            negative.append(line[len("Negative prompt:"):].strip())
        elif negative:
            negative.append(line)
        else:
            prompt.append(line)
    out: dict[str, Any] = {"prompt": "\n".join(prompt), "negative_prompt": "\n".join(negative)}
    for key, value in _PARAM.findall(last):
        if len(value) >= 2 and value[0] == value[-1] == '"':
            try:
                value = json.loads(value)
            except ValueError:
                pass  # not JSON after all: keep the text as the WebUI does
        out[key] = value
    return _typed(out)


def _rng_source(value: str) -> str:
    if value != "CPU":
        raise ValueError(f"no equivalent of the WebUI's {value!r} generator")
    return "torch"


# WebUI field -> (our setting name, type)
_CONVERSIONS: dict[str, tuple[str, Callable[[str], Any]]] = {
    "Steps": ("steps", int), "Sampler": ("sampler", str), "CFG scale": ("cfg_scale", float),
    "Distilled CFG Scale": ("distilled_cfg_scale", float), "Seed": ("seed", int),
    "Model": ("model", str), "Batch size": ("batch_size", int),
    "Batch pos": ("batch_pos", int), "Denoising strength": ("strength", float),
    "Clip skip": ("clip_skip", lambda v: int(v) - 1), "RNG": ("rng", _rng_source),
    "Schedule type": ("scheduler", str), "Variation seed": ("subseed", int),
    "Face restoration": ("face_restoration", str),
    "Variation seed strength": ("subseed_strength", float), "ENSD": ("ensd", int),
    "Hires upscale": ("hires_scale", float), "Hires steps": ("hires_steps", int),
    "Hires upscaler": ("hires_upscaler", str),
    "Hires Distilled CFG Scale": ("hires_distilled_cfg", float),
    "Hires sampler": ("hires_sampler", str), "Hires schedule type": ("hires_scheduler", str),
    "Hires prompt": ("hires_prompt", str), "Hires negative prompt": ("hires_negative_prompt", str),
    "Noise multiplier": ("noise_multiplier", float),
    "Hires resize": ("hires_resize", lambda v: tuple(int(n) for n in v.split("x"))),
    "Lora hashes": ("lora_hashes", str), "TI hashes": ("ti_hashes", str),
    "VAE hash": ("vae_hash", str), "VAE": ("vae", str), "Refiner": ("refiner", str),
    "Refiner switch at": ("refiner_switch_at", float), "Cache": ("cache", str),
    "Hires refiner": ("hires_refiner_pass", str),
    "Tiling": ("tiling", lambda v: v == "True"), "Emphasis": ("emphasis", str),
    "Reference images": ("references", int),
    "Seed resize from": ("seed_resize_from", lambda v: tuple(int(n) for n in v.split("x"))),
    "Mask mode": ("mask_mode", str), "Mask blur": ("mask_blur", int),
    "Inpaint area": ("inpaint_area", str),
    "Masked area padding": ("inpaint_full_res_padding", int),
    "Masked content": ("masked_content", str),
    "Eta": ("eta", float), "Sigma churn": ("s_churn", float), "Sigma tmin": ("s_tmin", float),
    "Sigma tmax": ("s_tmax", float), "Sigma noise": ("s_noise", float)}


# our setting name -> the WebUI's infotext field (the inverse of _CONVERSIONS)
WEBUI_FIELDS: dict[str, str] = {name: field for field, (name, _) in _CONVERSIONS.items()}


def _typed(raw: dict[str, Any]) -> dict[str, Any]:
    """WebUI keys and strings -> our setting names and types (unknown keys stay as they are)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        size = _SIZE.match(value) if key == "Size" else None
        if size is not None:
            out["width"], out["height"] = int(size.group(1)), int(size.group(2))
        elif key in _CONVERSIONS:
            name, convert = _CONVERSIONS[key]
            try:
                out[name] = convert(value)
            except ValueError:
                out[key] = value  # a malformed number stays visible under its WebUI name
        else:
            out[key] = value
    if "hires_upscaler" in out and "strength" in out:  # a txt2img's hires pass strength
        out["hires_denoise"] = out.pop("strength")
    return _split_old_sampler(out)


def _split_old_sampler(settings: dict[str, Any]) -> dict[str, Any]:
    """An infotext from before the WebUI 1.9 named the schedule type apart ("Sampler: DPM++ 2M
    Karras") gives the pair ("DPM++ 2M", "Karras"), as the WebUI reads it."""
    from .sampling.samplers import resolve

    sampler = settings.get("sampler")
    if isinstance(sampler, str) and "scheduler" not in settings:
        try:
            name, schedule = resolve(sampler)
        except ValueError:
            return settings  # a sampler we do not know stays as written
        if schedule != "Automatic":
            settings["sampler"], settings["scheduler"] = name, schedule
    return settings


def read_infotext(path: str | os.PathLike[str]) -> str | None:
    """The `parameters` text of a PNG, or None when it has none."""
    from PIL import Image

    with Image.open(path) as image:
        return image.info.get(PNG_KEY)


def save_png(image: np.ndarray, path: str | os.PathLike[str], *, infotext: str | None = None,
             overwrite: bool = True) -> bool:
    """Write an (H, W, 3) uint8 image as PNG, with `infotext` in its `parameters` chunk.

    Atomic: the PNG is written to a temporary file in the same directory, flushed to disk and
    then renamed into place, so `path` is either absent, the old file, or the complete new one
    — never a partial file, even if the process dies mid-write. With `overwrite=False` an
    existing `path` is left alone and False is returned (hard links claim the name atomically,
    so two processes numbering into one directory cannot overwrite each other).
    """
    from PIL import Image, PngImagePlugin

    array = np.asarray(image)
    if array.dtype != np.uint8 or array.ndim != 3 or array.shape[2] not in (3, 4):
        raise ValueError(f"image must be an HxWx3 (or 4) uint8 array, got {array.dtype} "
                         f"{array.shape}")
    target = Path(path)
    info = PngImagePlugin.PngInfo()
    if infotext is not None:
        info.add_text(PNG_KEY, infotext)  # tEXt, or iTXt (UTF-8) when not Latin-1
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as file:
            Image.fromarray(array).save(file, format="PNG", pnginfo=info)
            file.flush()
            os.fchmod(file.fileno(), _FILE_MODE)  # as an ordinary new file, not mkstemp's 0o600
            os.fsync(file.fileno())  # else a crash after the rename can leave an empty file
        if overwrite:
            os.replace(tmp, target)
            return True
        return _claim(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _claim(tmp: str, target: Path) -> bool:
    try:
        os.link(tmp, target)
    except FileExistsError:
        return False
    except OSError:  # file system without hard links: a (racy) check is the best left
        if target.exists():
            return False
        os.replace(tmp, target)
    return True


def next_sequence_number(directory: str | os.PathLike[str]) -> int:
    """One more than the highest leading number of a file name in `directory` (0 when there is
    none, or no directory), as the WebUI numbers `00000-<seed>.png`, `00001-<seed>.png`, ..."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return 0
    numbers = [int(head) for head in (os.path.splitext(name)[0].split("-")[0] for name in names)
               if head.isascii() and head.isdigit()]
    return max(numbers, default=-1) + 1


def save_images(images: list[np.ndarray], settings: Mapping[str, Any],
                out: str | os.PathLike[str], *, first: int | None = None) -> list[Path]:
    """Save a batch with its infotext; returns the paths written.

    `out` ending in `.png` names the file (a batch of N > 1 becomes `name-0.png` ...
    `name-{N-1}.png`; existing files are replaced). `first`, for one of several batches saved
    to one `.png` name: the run's number of the batch's first image, which numbers every image
    (`name-{first}.png` ...), so that a later batch does not replace an earlier one. Otherwise
    `out` is a directory (created if missing) and images are numbered like the WebUI,
    `00007-<seed>.png`, after the highest number already there, never replacing a file.
    """
    out = Path(out)
    seeds = settings.get("seeds") or [settings["seed"]] * len(images)
    written: list[Path] = []
    if out.suffix.lower() == ".png":
        if not out.parent.is_dir():
            raise FileNotFoundError(f"output folder {str(out.parent)!r} does not exist")
        for pos, image in enumerate(images):
            path = out if first is None and len(images) == 1 else out.with_name(
                f"{out.stem}-{(first or 0) + pos}{out.suffix}")
            save_png(image, path, infotext=format_infotext(settings, batch_pos=pos))
            written.append(path)
        return written
    out.mkdir(parents=True, exist_ok=True)
    number = next_sequence_number(out)
    for pos, image in enumerate(images):
        text = format_infotext(settings, batch_pos=pos)
        while not save_png(image, path := out / f"{number:05d}-{int(seeds[pos])}.png",
                           infotext=text, overwrite=False):
            number += 1  # another writer took this number meanwhile
        written.append(path)
        number += 1
    return written
