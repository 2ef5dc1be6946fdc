"""The video requests' models, from the models directory: a Wan diffusers folder, a Kandinsky 5
Video Lite, HunyuanVideo, FramePack, HunyuanVideo 1.5, LTX-2, Cosmos Predict2.5, Cosmos Predict2
Video2World or SANA-Video one (its parts all its own), or one
of ComfyUI's single Wan files (diffusion_models/: a transformer .safetensors or a GGUF of it) with a
Wan folder as its `base` (tokenizer, scheduler, configs, and the parts no file replaces) and the
files that stand in for the folder's other parts (text_encoders/: UMT5; vae/: Wan's VAE;
clip_vision/: Wan 2.1 I2V's CLIP), each named as GET /avx/video-models lists it. They resolve as
`txt2vid --model FILE --base FOLDER ...` does (loaders.wan.sources); a request never becomes a path,
and a missing part is a 422 in one line."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from ...loaders.cosmos import cosmos_family
from ...loaders.formats.diffusers_folder import pipeline_class
from ...loaders.formats.safetensors import SafetensorsFile
from ...loaders.helios import helios_family
from ...loaders.hunyuan_video.folder import I2V_CLASS as HUNYUAN_VIDEO_I2V
from ...loaders.hunyuan_video.folder import hunyuan_video_family
from ...loaders.hunyuan_video.framepack import FRAMEPACK_CLASS
from ...loaders.hunyuan_video15.folder import (
    hunyuan_video15_family,
    hunyuan_video15_image_to_video,
)
from ...loaders.kandinsky5 import kandinsky5_image_to_video, kandinsky5_video_family
from ...loaders.ltx2.folder import ltx2_family
from ...loaders.motif_video import motif_video_family
from ...loaders.sana.video import sana_video_family
from ...loaders.wan import wan_family, wan_file_family
from ...loaders.wan.sources import Names, WanSource
from ..catalog.models_dir import ModelRegistry
from .generation import RequestError

__all__ = ["REQUEST_NAMES", "video_listing", "video_source"]

REQUEST_NAMES = Names({"model": "model", "base": "base", "model_2": "model_2",
                       "text_encoder": "text_encoder", "vae": "vae",
                       "clip_vision": "clip_vision"}, value=": a file of the models directory")
# a tensor each kind of companion file holds (Wan's original VAE names; transformers' CLIP)
_MARKS = {"vae": "decoder.middle.0.residual.0.gamma",
          "clip_vision": "vision_model.embeddings.patch_embedding.weight"}


def _kind(path: Path) -> str | None:
    """"vae" or "clip_vision" for such a .safetensors file, else None (headers only)."""
    if path.suffix.lower() != ".safetensors":
        return None
    try:
        file = SafetensorsFile(path)
    except Exception:  # unreadable: not listed here; loading it as a model says what is wrong
        return None
    return next((kind for kind, mark in _MARKS.items() if mark in file), None)


def _first_frame(path: Path) -> str:
    """Whether a Wan folder's videos start from a picture: "required" (Wan 2.1 I2V,
    SkyReels V2 I2V), "optional" (Wan 2.2 TI2V, which also animates one; SkyReels V2
    diffusion forcing) or "none" (text-to-video only)."""
    from ...loaders.formats.diffusers_folder import read_json

    index = read_json(path / "model_index.json")
    if index.get("_class_name") == "LucyEditPipeline":  # it edits a video (init_video)
        return "none"
    if index.get("_class_name") in ("WanImageToVideoPipeline",
                                    "SkyReelsV2ImageToVideoPipeline"):
        return "required"
    forcing = str(index.get("_class_name")).startswith("SkyReelsV2DiffusionForcing")
    return "optional" if index.get("expand_timesteps") or forcing else "none"


def _family(family: str, path: Path | None = None) -> dict[str, Any]:
    """A listed model's family, its defaults (pipelines.video.models; a HunyuanVideo 1.5
    folder's, at `path`, its own) and samplers."""
    from ...pipelines.video import SAMPLERS
    from ...pipelines.video.models import KANDINSKY5_VIDEO, WAN, WAN_ANIMATE, video_defaults

    own = family in ("kandinsky-5-video", "hunyuan-video-1.5", "ltx-2", "hunyuan-video",
                     "framepack", "cosmos-predict2.5", "cosmos-predict2", "sana-video",
                     "helios", "motif-video")
    defaults = video_defaults(path) if path is not None else KANDINSKY5_VIDEO \
        if family == "kandinsky-5-video" else WAN_ANIMATE if family == "wan-animate" else WAN
    return {"family": family, "defaults": asdict(defaults),
            "samplers": ["diffusers"] if own else list(SAMPLERS)}


def _own_video_family(path: Path) -> str | None:
    """"cosmos-predict2.5", "cosmos-predict2" (Video2World), "sana-video", "helios" or
    "motif-video" for such a folder (pipelines.video.models' names), None for anything else."""
    cosmos = {"cosmos25": "cosmos-predict2.5",
              "cosmos2-v2w": "cosmos-predict2"}.get(cosmos_family(path) or "")
    return cosmos or sana_video_family(path) or helios_family(path) or motif_video_family(path)


def video_listing(registry: ModelRegistry) -> dict[str, Any]:
    """The models directory as the Video tab reads it: `models` (Wan folders, Kandinsky 5
    Video folders and Wan transformer files, `kind` "folder" or "file"; whether each takes a
    first frame, which for a file its base decides: "optional", and a Kandinsky 5
    image-to-video folder: "required"; `vace`: a Wan VACE folder or transformer file, which
    takes a control; `animate`: a Wan 2.2 Animate folder or transformer file, which takes a
    picture, pose and face videos; `audio`: an LTX-2 folder, whose videos come with their
    audio; `family`, its `defaults` and `samplers`: _family), `bases`
    (the Wan folders a file takes as its base, Animate's too) and `files` by part
    (`text_encoder`: the UMT5 / T5 module files, `vae`, `clip_vision`, `model_2`: the
    non-Animate transformer files again, for Wan 2.2 A14B's low-noise expert)."""
    models: list[dict[str, Any]] = []
    files: dict[str, list[str]] = {"model_2": [], "text_encoder": [], "vae": [],
                                   "clip_vision": []}
    for entry in registry.entries:
        if (wan := wan_family(entry.path)) is not None:  # SkyReels V2's too
            forcing = wan in ("skyreels-v2-df", "lucy-edit")  # their own defaults
            models.append({"title": entry.title, "model_name": entry.model_name,
                           "kind": "folder", "first_frame": _first_frame(entry.path),
                           "vace": wan == "wan-vace", "animate": wan == "wan-animate",
                           **_family(wan if wan == "wan-animate" or forcing else "wan",
                                     entry.path if forcing else None)})
        elif kandinsky5_video_family(entry.path) is not None:  # image-to-video: a picture
            models.append({"title": entry.title, "model_name": entry.model_name,
                           "kind": "folder", "vace": False, "animate": False,
                           "first_frame": "required" if kandinsky5_image_to_video(entry.path)
                           else "none", **_family("kandinsky-5-video")})
        elif hunyuan_video15_family(entry.path) is not None:  # image-to-video: a picture
            models.append({"title": entry.title, "model_name": entry.model_name,
                           "kind": "folder", "vace": False, "animate": False,
                           "first_frame": "required"
                           if hunyuan_video15_image_to_video(entry.path) else "none",
                           **_family("hunyuan-video-1.5", entry.path)})
        elif ltx2_family(entry.path) is not None:  # text or image to video, with its audio
            models.append({"title": entry.title, "model_name": entry.model_name,
                           "kind": "folder", "vace": False, "animate": False,
                           "first_frame": "optional", "audio": True,
                           **_family("ltx-2", entry.path)})
        elif hunyuan_video_family(entry.path) is not None:  # text or (I2V, FramePack) image
            framepack = pipeline_class(Path(entry.path)) == FRAMEPACK_CLASS
            i2v = framepack or pipeline_class(Path(entry.path)) == HUNYUAN_VIDEO_I2V
            models.append({"title": entry.title, "model_name": entry.model_name,
                           "kind": "folder", "vace": False, "animate": False,
                           "first_frame": "required" if i2v else "none",
                           **_family("framepack" if framepack else "hunyuan-video",
                                     entry.path)})
        elif (family := _own_video_family(entry.path)) is not None:  # text or image to video
            # (Predict2 Video2World: a picture, or txt2vid's init_video, to continue; a
            # MotifVideoPipeline folder: text alone)
            text_only = pipeline_class(Path(entry.path)) == "MotifVideoPipeline"
            models.append({"title": entry.title, "model_name": entry.model_name,
                           "kind": "folder", "vace": False, "animate": False,
                           "first_frame": "none" if text_only else "optional",
                           **_family(family, entry.path)})
        elif (family := wan_file_family(entry.path)) is not None:
            animate = family == "wan-animate"
            models.append({"title": entry.title, "model_name": entry.model_name,
                           "kind": "file", "first_frame": "none" if animate else "optional",
                           "vace": family == "wan-vace", "animate": animate,
                           **_family("wan-animate" if animate else "wan")})
            if not animate:  # Animate has no second expert
                files["model_2"].append(entry.name)
        elif (kind := _kind(entry.path)) is not None:
            files[kind].append(entry.name)
    files["text_encoder"] = [m.name for m in registry.modules if "t5" in m.roles]
    # Wan's VAE files are module files too (the catalog lists them beside ae, flux2-vae)
    files["vae"] += [m.name for m in registry.modules
                     if "vae" in m.roles and _kind(m.path) == "vae"]
    bases = [m["title"] for m in models if m["kind"] == "folder"
             and m["family"] in ("wan", "wan-animate")]  # an Animate folder serves its file
    return {"models": models, "bases": bases, "files": files}


def _path(registry: ModelRegistry, name: str, field: str) -> Path:
    """The models directory's file or folder a request names in `field` (by its name, title,
    model_name or hash as listed; a module file by its name or file name)."""
    entry = registry.find(name)
    if entry is not None:
        return entry.path
    module = next((m for m in registry.modules if name.strip() in (m.name, m.path.name)), None)
    if module is not None:
        return module.path
    raise RequestError(f"{field} {name!r} is not in the models directory (/avx/video-models "
                       "lists what a video request may name)")


def video_source(registry: ModelRegistry, body: Any) -> WanSource:
    """The request's model and the parts it names, as paths of the models directory
    (RequestError: 422, naming the field; a Kandinsky 5 Video, HunyuanVideo (1.5) or LTX-2
    folder takes none)."""
    entry = registry.find(body.model)
    own = entry is not None and (kandinsky5_video_family(entry.path) is not None
                                 or hunyuan_video15_family(entry.path) is not None
                                 or ltx2_family(entry.path) is not None
                                 or hunyuan_video_family(entry.path) is not None
                                 or _own_video_family(entry.path) is not None)
    if entry is None or (wan_family(entry.path) is None and wan_file_family(entry.path) is None
                         and not own):
        raise RequestError(f"model {body.model!r} is not a Wan folder, Kandinsky 5 Video, "
                           "HunyuanVideo (1.5), LTX-2, Cosmos Predict2.5, Cosmos Predict2 "
                           "Video2World, SANA-Video, Helios or Motif-Video folder or Wan "
                           "transformer file of the models directory (/avx/video-models lists "
                           "them)")
    parts = {field: _path(registry, value, field) for field in REQUEST_NAMES.fields
             if field != "model" and (value := getattr(body, field, None))}
    if parts and own:
        raise RequestError(f"{next(iter(parts))} is for Wan models; a Kandinsky 5 Video, "
                           "HunyuanVideo (1.5), LTX-2, Cosmos or SANA-Video folder holds its "
                           "own text encoders and VAE (leave it out)")
    return WanSource(model=entry.path, **parts)
