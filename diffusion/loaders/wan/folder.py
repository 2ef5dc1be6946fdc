"""Diffusers folders of Wan 2.1 text-to-video (`WanPipeline`): transformer/
(WanTransformer3DModel), text_encoder/ (transformers' UMT5EncoderModel), tokenizer/ (UMT5's
tokenizer.json), vae/ (AutoencoderKLWan) and scheduler/ (UniPC on flow sigmas, or flow-match
Euler). A Wan 2.1 image-to-video folder (`WanImageToVideoPipeline`) adds image_encoder/
(transformers' CLIPVisionModel) and image_processor/ (its CLIPImageProcessor config). A Wan 2.2
A14B folder adds transformer_2/ (the low-noise expert) and `boundary_ratio` to model_index.json.
A Wan VACE folder (`WanVACEPipeline`) is a text-to-video folder whose transformer/ is a
WanVACETransformer3DModel (the control branch: models.wan_vace). A Wan 2.2 Animate folder
(`WanAnimatePipeline`) is laid out as an image-to-video one, its transformer/ a
WanAnimateTransformer3DModel (models.wan_animate). NVIDIA's ChronoEdit folder
(`ChronoEditPipeline`, an image editor) is laid out as an image-to-video one, its transformer/
a ChronoEditTransformer3DModel (models.chronoedit). SkyReels V2's text- and image-to-video
folders (`SkyReelsV2Pipeline`, `SkyReelsV2ImageToVideoPipeline`) are Wan 2.1's, their
transformer/ a SkyReelsV2Transformer3DModel (models.skyreels_v2) and the I2V image_encoder/ a
CLIPVisionModelWithProjection (its projection not read); a diffusion forcing folder
(`SkyReelsV2DiffusionForcingPipeline`, or its ImageToVideo one) is laid out as a text-to-video
one. Decart's Lucy Edit (`LucyEditPipeline`, a video editor on Wan 2.2 TI2V 5B) is laid out as
a text-to-video folder, its transformer reading twice the VAE's latent channels.

Each component goes through the safetensors walk (`.fp16` variants, sharded
`.safetensors.index.json`) into lazy `ComponentWeights`; the models' own `load_state_dict`
checks the keys.

    weights = load_wan_folder("Wan2.1-T2V-1.3B-Diffusers")
    transformer = WanTransformer3DModel(weights.transformer.config)
    transformer.load_state_dict(weights.transformer)
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import WeightsError
from ..formats.diffusers_folder import pipeline_class, pipeline_index, read_json, weight_refs
from ..weights import ComponentWeights, resolve_dtype

__all__ = ["FILE_EXAMPLES", "WanWeights", "chronoedit_family", "load_wan_folder", "missing_parts",
           "wan_family", "wan_layout"]

_CLASS = "WanPipeline"
_I2V_CLASS = "WanImageToVideoPipeline"
_VACE_CLASS = "WanVACEPipeline"
_ANIMATE_CLASS = "WanAnimatePipeline"
# NVIDIA's ChronoEdit: laid out as an image-to-video folder, its transformer/ a
# ChronoEditTransformer3DModel (Wan 2.1 I2V's, models.chronoedit)
_CHRONOEDIT_CLASS = "ChronoEditPipeline"
# SkyReels V2: text-to-video, image-to-video, diffusion forcing
_SKYREELS_DF = ("SkyReelsV2DiffusionForcingPipeline",
                "SkyReelsV2DiffusionForcingImageToVideoPipeline")
_SKYREELS = {"SkyReelsV2Pipeline": _CLASS, "SkyReelsV2ImageToVideoPipeline": _I2V_CLASS,
             **dict.fromkeys(_SKYREELS_DF, _CLASS)}
# Lucy Edit: the input video's latents beside the noise (pipelines.video.lucy_edit)
_LUCY_CLASS = "LucyEditPipeline"
_STEMS = {"text_encoder": "model", "image_encoder": "model"}


# the single file that stands in for a component a --base folder holds no weights of: its
# option, and the file people have
FILE_EXAMPLES = {
    "transformer": ("--model", "e.g. wan2.1_t2v_1.3B_bf16.safetensors"),
    "transformer_2": ("--model-2", "the low-noise expert, e.g. "
                                   "wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors"),
    "vae": ("--vae", "wan_2.1_vae.safetensors; TI2V 5B: wan2.2_vae.safetensors"),
    "text_encoder": ("--text-encoder", "umt5_xxl_fp8_e4m3fn_scaled.safetensors"),
    "image_encoder": ("--clip-vision", "clip_vision_h.safetensors")}
_FILES = {name: f"{flag} FILE ({example})" for name, (flag, example) in FILE_EXAMPLES.items()}


@dataclass
class WanWeights:
    """A Wan folder's lazy component weights (None where `skip`ped), its scheduler config and
    tokenizer folder; `expand_timesteps`: timesteps per token (Wan 2.2 TI2V 5B, which also
    animates a picture); `transformer_2` and `boundary_ratio`: Wan 2.2 A14B's low-noise expert
    and the fraction of the 1000 training timesteps below which it takes over."""

    transformer: ComponentWeights | None
    vae: ComponentWeights | None
    text_encoder: ComponentWeights | None
    scheduler_config: dict[str, Any]
    tokenizer_dir: Path
    expand_timesteps: bool = False
    image_encoder: ComponentWeights | None = None
    transformer_2: ComponentWeights | None = None
    boundary_ratio: float | None = None
    # Wan VACE: the transformer(s) read control latents (WanVACETransformer3DModel)
    vace: bool = False
    # Wan 2.2 Animate: the transformer reads pose latents and face crops
    animate: bool = False
    # ChronoEdit: the transformer's two-frame edit spreads its rotary frame positions
    chronoedit: bool = False
    # SkyReels V2: the transformer is a SkyReelsV2Transformer3DModel; `diffusion_forcing`: a
    # SkyReelsV2DiffusionForcingPipeline folder (a timestep per latent frame)
    skyreels: bool = False
    diffusion_forcing: bool = False


def wan_family(path: str | os.PathLike[str]) -> str | None:
    """"wan" for a diffusers folder whose model_index.json names a WanPipeline or a
    WanImageToVideoPipeline (or SkyReels V2's text- or image-to-video pipeline), "wan-vace"
    for a WanVACEPipeline, "wan-animate" for a WanAnimatePipeline, "skyreels-v2-df" for a
    SkyReels V2 diffusion forcing pipeline, "lucy-edit" for a LucyEditPipeline, None for
    anything else."""
    name = str(pipeline_class(Path(path)))
    if name in _SKYREELS_DF:
        return "skyreels-v2-df"
    return {_CLASS: "wan", _I2V_CLASS: "wan", _VACE_CLASS: "wan-vace",
            _ANIMATE_CLASS: "wan-animate", _LUCY_CLASS: "lucy-edit"}.get(
        _SKYREELS.get(name, name))


def chronoedit_family(path: str | os.PathLike[str]) -> str | None:
    """"chronoedit" for a diffusers folder whose model_index.json names a ChronoEditPipeline,
    None for anything else."""
    return "chronoedit" if pipeline_class(Path(path)) == _CHRONOEDIT_CLASS else None


def _listed(index: dict[str, Any], name: str) -> bool:
    entry = index.get(name)
    return isinstance(entry, list) and bool(entry) and entry[0] is not None


def wan_layout(path: str | os.PathLike[str]) -> tuple[bool, bool]:
    """(a second expert, timesteps per token) of the Wan folder `path`, as `load_wan_folder`
    reads them from its model_index.json: Wan 2.2 A14B's transformer_2 listed, Wan 2.2 TI2V
    5B's expand_timesteps; no weights read."""
    index = read_json(Path(path) / "model_index.json")
    return _listed(index, "transformer_2"), bool(index.get("expand_timesteps"))


def _component(root: Path, name: str, variant: str | None, dtype: Any) -> ComponentWeights:
    """Component `name` of the folder `root`; WeightsError naming the single file that can
    stand in for it when the folder holds no weights of it."""
    try:
        config = read_json(root / name / "config.json")
        refs, _where = weight_refs(root / name, _STEMS.get(name, "diffusion_pytorch_model"),
                                   variant)
    except WeightsError as error:
        raise WeightsError(f"{error}; give its weights as {_FILES[name]}") from None
    return ComponentWeights(name, config, refs, dtype=dtype)


def _wanted(index: dict[str, Any]) -> list[str]:
    """The weighted components a Wan folder's model_index.json asks for."""
    return ["transformer", "vae", "text_encoder", *(
        name for name in ("transformer_2", "image_encoder") if _listed(index, name))]


def missing_parts(path: str | os.PathLike[str], given: tuple[str, ...] = (),
                  needed: tuple[str, ...] = ()) -> list[str]:
    """The components of the Wan folder `path` (those its index asks for, and `needed`) that
    hold no weights and are not `given` as files (the names FILE_EXAMPLES keys), read from the
    file names alone."""
    root = Path(path)
    index, missing = read_json(root / "model_index.json"), []
    for name in dict.fromkeys([*_wanted(index), *needed]):
        if name not in given:
            try:
                weight_refs(root / name, _STEMS.get(name, "diffusion_pytorch_model"), None)
            except WeightsError:
                missing.append(name)
    return missing


def load_wan_folder(path: str | os.PathLike[str], *, dtype: Any = None,
                    variant: str | None = None, skip: tuple[str, ...] = ()) -> WanWeights:
    """Lazy weights of the Wan diffusers folder `path`. `dtype`: None (as stored; bfloat16
    read as float32), "float16" or "float32"; `variant`: e.g. "fp16"; `skip`: components
    (transformer, transformer_2, vae, text_encoder, image_encoder) that single files replace,
    left out (None) and not needed in the folder. WeightsError naming the file or folder when
    it is not a Wan pipeline or a component is missing (and which file can stand in)."""
    root = Path(path)
    found = pipeline_class(root)
    index = pipeline_index(root, found if found in (_I2V_CLASS, _VACE_CLASS, _ANIMATE_CLASS,
                                                    _CHRONOEDIT_CLASS, _LUCY_CLASS,
                                                    *_SKYREELS)
                           else _CLASS,
                           ("vae", "tokenizer", "scheduler"))
    resolved = resolve_dtype(dtype)
    parts: dict[str, Any] = dict.fromkeys(skip)
    for name in _wanted(index):
        if name not in skip:
            parts[name] = _component(root, name, variant, resolved)
    if parts.get("image_encoder") is not None:
        # transformers 5 saves a CLIPVisionModel's keys without the `vision_model.` prefix
        encoder = parts["image_encoder"]
        # (SkyReels V2's CLIPVisionModelWithProjection: its projection is not read)
        parts["image_encoder"] = encoder.with_refs({
            key if key.startswith("vision_model.") else f"vision_model.{key}": ref
            for key, ref in encoder.refs.items() if not key.startswith("visual_projection.")})
    tokenizer = root / "tokenizer"
    if not (tokenizer / "tokenizer.json").is_file():
        raise WeightsError(f"{tokenizer / 'tokenizer.json'}: required file is missing (UMT5's "
                           "tokenizer the text encoder reads prompts with)")
    ratio = index.get("boundary_ratio")
    return WanWeights(scheduler_config=read_json(root / "scheduler" / "scheduler_config.json"),
                      tokenizer_dir=tokenizer, expand_timesteps=bool(
                          index.get("expand_timesteps")),
                      boundary_ratio=None if ratio is None else float(ratio),
                      vace=found == _VACE_CLASS, animate=found == _ANIMATE_CLASS,
                      chronoedit=found == _CHRONOEDIT_CLASS, skyreels=found in _SKYREELS,
                      diffusion_forcing=found in _SKYREELS_DF, **parts)
