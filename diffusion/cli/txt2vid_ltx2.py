"""`txt2vid --model FOLDER` for an LTX-2 folder (an LTX2Pipeline's), and `img2vid --model
FOLDER --image IN.png` for its image to video (the picture, resized to --width x --height,
is the first frame): cli.txt2vid checks the settings and fills in the family's defaults (121
frames of 768 x 512, 30 steps, video CFG 3, 24 fps), then hands over here. The video is
written with its audio (an MP4's AAC track; a WebP's or a frames folder's WAV beside it);
--no-audio leaves the audio undecoded. The audio's own guidance (--audio-cfg-scale, 7) and
STG's blocks (--stg-blocks, 28) are LTX-2's options; STG and modality guidance run at
diffusers' scales; --cache fbc[:THRESHOLD] runs First Block Cache (in two stages, the first's
steps). --upsampler PATH (a folder with latent_upsampler/, or Lightricks'
ltx-2-spatial-upscaler-x2 file) makes it in two stages (pipelines.video.ltx2_two_stage): half
the size, the latents upsampled, three unguided steps at the full size. What LTX-2 does not
take here (Wan's files, VACE, other step caches, LoRAs, other samplers) is refused in one line
before the weights load; frames must be 1 + 8k and sides multiples of the VAE's 32 (64 in two
stages). --medvram, --lowvram and --max-vram run as for the flow families (flow_memory)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

from .memory import memory_mode
from .options import number
from .progress import ProgressBar
from .vace import vace_named
from .video_family import flow_video_cache
from .video_out import finish_video

__all__ = ["add_ltx2_options", "refuse_ltx2_only", "run_ltx2"]

# the options LTX-2 does not take (argparse field -> the flag as typed)
_REFUSED = {"base": "--base", "model_2": "--model-2", "text_encoder": "--text-encoder",
            "vae": "--vae", "clip_vision": "--clip-vision", "cfg_scale_2": "--cfg-scale-2",
            "lora_2": "--lora-2", "lora": "--lora", "no_half_vae": "--no-half-vae"}


def add_ltx2_options(sub: argparse.ArgumentParser) -> None:
    """txt2vid's LTX-2 options."""
    sub.add_argument("--no-audio", action="store_true",
                     help="LTX-2: write the video without its audio (the audio is still "
                          "denoised with it, not decoded)")
    sub.add_argument("--audio-cfg-scale", type=number, default=None, metavar="SCALE",
                     help="LTX-2: the audio's classifier-free guidance scale (7)")
    sub.add_argument("--stg-blocks", default=None, metavar="N[,N...]",
                     help="LTX-2: the transformer blocks whose self-attention STG perturbs, "
                          "on models that take it (LTX-2.3's; 28)")
    sub.add_argument("--upsampler", default=None, metavar="FOLDER|FILE",
                     help="LTX-2: generate in two stages, half the size then the latents "
                          "upsampled x2 by this latent upsampler (a folder with "
                          "latent_upsampler/, or ltx-2-spatial-upscaler-x2-1.0.safetensors) "
                          "and refined in three steps")


def refuse_ltx2_only(args: argparse.Namespace) -> None:
    """ValueError in one line for an LTX-2 option given to another family's model."""
    flags = {"no_audio": "--no-audio", "audio_cfg_scale": "--audio-cfg-scale",
             "stg_blocks": "--stg-blocks", "upsampler": "--upsampler"}
    given = [flag for field, flag in flags.items() if getattr(args, field, None)]
    if given:
        raise ValueError(f"{given[0]} is an LTX-2 option (its audio, STG, latent upsampler); "
                         f"{args.model} is another family's model: leave it out")


def _blocks(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--stg-blocks must be block numbers separated by commas (e.g. 28 or "
                         f"28,29), got {text!r}") from None


def refuse_ltx2_options(args: argparse.Namespace) -> None:
    """ValueError in one line for a setting LTX-2 does not take, before the weights load."""
    from ..loaders.formats.diffusers_folder import component_config
    from ..pipelines.video.wan_refuse import check_frame_count

    given = [flag for field, flag in _REFUSED.items() if getattr(args, field, None)]
    if vace_named(args):
        given.append(str(vace_named(args)))
    if given:
        raise ValueError(f"{given[0]} is not taken by LTX-2 here: its folder holds every part "
                         "(LoRAs and a float32 VAE are not wired for it); leave it out")
    if args.sampler != "diffusers":
        raise ValueError(f"--sampler {args.sampler}: LTX-2 runs its folder's flow-match Euler "
                         "scheduler (--sampler diffusers)")
    vae = component_config(Path(args.model), "vae") or {}
    check_frame_count(args.frames, int(vae.get("temporal_compression_ratio") or 8))
    multiple = int(vae.get("spatial_compression_ratio") or 32) * (2 if args.upsampler else 1)
    for name in ("width", "height"):
        if getattr(args, name) % multiple:
            raise ValueError(f"--{name} must be a multiple of {multiple} for LTX-2"
                             f"{' in two stages' if args.upsampler else ''}, got "
                             f"{getattr(args, name)}")
    if args.upsampler and not Path(args.upsampler).exists():
        raise ValueError(f"--upsampler {args.upsampler}: no such folder or file")
    if args.audio_cfg_scale is not None and not 0 <= args.audio_cfg_scale <= 30:
        raise ValueError(f"--audio-cfg-scale must be a number from 0 to 30, got "
                         f"{args.audio_cfg_scale}")
    _blocks(args.stg_blocks)


def run_ltx2(args: argparse.Namespace, out: Path, dtype: Any, image: Any = None) -> int:
    """Generate and write the video and its audio as `args` say (checked and completed by
    cli.txt2vid) with the LTX-2 folder `args.model`, its weights in `dtype`; `image`:
    img2vid's first frame; prints the path."""
    from ..pipelines.video.ltx2 import LTX2Pipeline
    from ..pipelines.video.ltx2_guidance import LTX2Guidance

    refuse_ltx2_options(args)
    cache = flow_video_cache(args, "LTX-2")
    guidance = LTX2Guidance(guidance_scale=args.cfg_scale)
    if args.audio_cfg_scale is not None:
        guidance = replace(guidance, audio_guidance_scale=args.audio_cfg_scale)
    blocks = _blocks(args.stg_blocks)
    if blocks is not None:
        guidance = replace(guidance, stg_blocks=blocks)
    mode = memory_mode(args)  # a memory mode loads each network straight to host memory
    pipe = LTX2Pipeline.from_pretrained(args.model, dtype=dtype,
                                        offload=args.offload or bool(mode))
    pipe.set_memory_mode(mode)
    if args.fp16_accumulation:
        from ..pipelines.fp16_accumulation import use_fp16_accumulation

        print(use_fp16_accumulation(pipe), file=sys.stderr)
    print(f"seed: {args.seed}", file=sys.stderr)
    bar = ProgressBar(args.command)
    settings = {"negative_prompt": args.negative_prompt, "num_frames": args.frames,
                "frame_rate": args.fps, "num_inference_steps": args.steps,
                "guidance": guidance, "seed": args.seed, "rng": args.rng,
                "callback": bar.step, "cache": cache}
    if args.upsampler:
        from ..pipelines.video.ltx2_two_stage import load_upsampler, two_stage

        upsampler = load_upsampler(args.upsampler, dtype=dtype)
        result = two_stage(pipe, upsampler, args.prompt, height=args.height, width=args.width,
                           image=image, audio=not args.no_audio, **settings)
    else:
        result = pipe(args.prompt, height=args.height, width=args.width, image=image,
                      audio=not args.no_audio, **settings)
    return finish_video(pipe, result.frames, cache, out, args.fps, args.verbose,
                        result.audio, result.sample_rate)
