"""`python -m diffusion txt2vid --model FOLDER --prompt TEXT -o out.mp4`: Wan, Kandinsky 5
Video Lite, HunyuanVideo, HunyuanVideo 1.5, LTX-2 (video with audio), Cosmos Predict2.5,
SkyReels V2, SANA-Video and Helios text-to-video from the command line (cli.txt2vid_kandinsky5,
cli.txt2vid_hunyuan_video, cli.txt2vid_hunyuan_video15, cli.txt2vid_ltx2, cli.txt2vid_cosmos25,
cli.txt2vid_skyreels: the others' runs), and `img2vid --image IN.png` (Wan 2.1 / 2.2 A14B I2V,
Wan 2.2 TI2V 5B, SkyReels V2 I2V, Kandinsky 5, HunyuanVideo-I2V, HunyuanVideo 1.5 I2V or
Cosmos Predict2.5 animating a picture); Wan VACE's control video, mask and reference pictures
on txt2vid (cli.vace), Wan's video-to-video (`--init-video`, `--denoising-strength`:
cli.init_video; Lucy Edit's video edits, `--init-video`), and Wan 2.2 Animate's picture,
pose, face, background and mask videos (cli.animate). `--model FILE --base FOLDER` runs
ComfyUI's split files (and GGUFs, and Wan 2.2 Animate's original single file) with a
diffusers folder giving the rest; `--model-2` is Wan 2.2 A14B's low-noise expert. The frame
count (1 + 4k), size (multiples of 16), fps, picture, files and output are checked before the
model loads, what is not given is the model family's default (pipelines.video.models); a bad
one ends in one `error: ...` line."""

from __future__ import annotations

import argparse
import secrets
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..pipelines.video.files import check_fps, check_output
from .animate import (
    add_animate_options,
    animate_pixels_of,
    check_animate,
    refuse_animate,
)
from .device import add_device_options, use_device_options
from .img2vid_framepack import add_framepack_options, refuse_hunyuan_only
from .init_video import add_init_video_options, init_video_of
from .memory import add_memory_options, memory_mode
from .options import number, whole
from .paths import check_output_file
from .progress import ProgressBar
from .txt2vid_ltx2 import add_ltx2_options, refuse_ltx2_only
from .txt2vid_skyreels import add_skyreels_options, refuse_skyreels_only, run_skyreels_df
from .vace import add_vace_options, check_vace, vace_control, vace_named
from .video_family import read_picture
from .video_lora import lora_spec, patch_loras
from .video_out import finish_video

if TYPE_CHECKING:
    from ..loaders.wan.sources import WanSource

__all__ = ["add_parsers", "run"]

# the largest frame count, side and guidance the CLI takes, as the server's /avx/txt2vid: a
# mistyped --width 100000 else took the memory until the OS ended the process
MAX_FRAMES, MAX_SIDE, MAX_CFG = 1001, 4096, 30.0

EXAMPLE = """example:
  python -m diffusion txt2vid --model ./Wan2.1-T2V-1.3B-Diffusers \\
      --prompt "a cat walks on the grass, realistic" --frames 33 --fps 16 \\
      --width 832 --height 480 --seed 42 -o cat.mp4
  python -m diffusion img2vid --model ./Wan2.2-TI2V-5B-Diffusers --image cat.png \\
      --prompt "the cat turns its head" --frames 33 -o cat.mp4
  python -m diffusion txt2vid --model wan2.2_t2v_high_noise_14B_fp8_scaled.safetensors \\
      --model-2 wan2.2_t2v_low_noise_14B_fp8_scaled.safetensors \\
      --text-encoder umt5_xxl_fp8_e4m3fn_scaled.safetensors \\
      --base ./Wan2.2-T2V-A14B-Diffusers --prompt "a cat walks on the grass" -o cat.mp4
  python -m diffusion txt2vid --model ./Wan2.1-VACE-1.3B-diffusers --prompt "a robot dances" \\
      --control-video pose.mp4 --reference-image robot.png --frames 33 -o robot.mp4
  python -m diffusion txt2vid --model ./Wan2.1-T2V-1.3B-Diffusers --prompt "a snowy street" \\
      --init-video street.mp4 --denoising-strength 0.7 -o snowy.mp4
  python -m diffusion txt2vid --model ./Lucy-Edit-Dev --init-video me.mp4 \\
      --prompt "change the shirt to a red leather jacket" -o jacket.mp4
  python -m diffusion txt2vid --model ./Wan2.2-Animate-14B-Diffusers --prompt "a dancer" \\
      --animate-image me.png --pose-video pose.mp4 --face-video face.mp4 \\
      --width 1280 --height 720 -o me.mp4
  python -m diffusion txt2vid --model ./Kandinsky-5.0-T2V-Lite-sft-5s-Diffusers \\
      --prompt "a cat and a dog baking a cake in a kitchen" --frames 121 -o cake.mp4
  python -m diffusion img2vid --model ./HunyuanVideo-1.5-Diffusers-480p_i2v --image cat.png \\
      --prompt 'the cat holds a sign that says "HELLO"' --frames 61 -o cat.mp4
  python -m diffusion txt2vid --model ./LTX-2 --prompt "waves roll onto a beach" -o waves.mp4

-o picks the format by its suffix: .mp4 (H.264, needs PyAV: the `video` extra), .webp
(animated) or a path without a suffix (a folder of numbered PNGs). On a GPU short of memory:
--lowvram (the transformer's and UMT5's blocks streamed) or --max-vram 12G."""


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """Add the `txt2vid` and `img2vid` sub-commands to `python -m diffusion`'s sub-parsers."""
    for name, text in (("txt2vid", "generate a video from a prompt (Wan 2.1, Wan 2.2 TI2V "
                                   "5B and A14B, SkyReels V2, Kandinsky 5 Video Lite, "
                                   "HunyuanVideo, HunyuanVideo 1.5, LTX-2 with its audio)"),
                       ("img2vid", "animate a picture as a prompt says (Wan 2.1 I2V, Wan "
                                   "2.2 TI2V 5B and I2V A14B, SkyReels V2 I2V, Kandinsky 5 "
                                   "I2V, HunyuanVideo-I2V, HunyuanVideo 1.5 I2V, LTX-2 with "
                                   "its audio)")):
        sub = subparsers.add_parser(name, help=text, description=text, epilog=EXAMPLE,
                                    formatter_class=argparse.RawDescriptionHelpFormatter)
        if name == "img2vid":
            sub.add_argument("--image", required=True, metavar="IN.png",
                             help="the first frame (resized to --width x --height)")
        _options(sub)
        add_ltx2_options(sub)
        add_skyreels_options(sub)
        if name == "txt2vid":
            add_vace_options(sub)
            add_animate_options(sub)
            add_init_video_options(sub)


def _options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--model", required=True, metavar="FOLDER|FILE",
                     help="a Wan diffusers folder (Wan 2.1 T2V or I2V, Wan 2.2 TI2V 5B or "
                          "A14B), a Kandinsky 5 Video Lite, HunyuanVideo, HunyuanVideo 1.5 or "
                          "LTX-2 one, or a Wan "
                          "transformer file with --base: ComfyUI's "
                          "(wan2.1_t2v_1.3B_bf16, *_fp8_e4m3fn, *_fp8_scaled .safetensors; "
                          "Wan 2.2 A14B's high-noise expert; Wan VACE's "
                          "wan2.1_vace_14B_fp16.safetensors) or a GGUF of it; a FramePack "
                          "transformer file (FramePackI2V_HY_bf16.safetensors) with --base")
    sub.add_argument("--base", metavar="FOLDER",
                     help="for a transformer file: the Wan diffusers folder of the same model "
                          "giving the tokenizer, scheduler, configs and every part no file "
                          "replaces (it may hold only those); FramePack's: a FramePack folder")
    sub.add_argument("--model-2", metavar="FILE",
                     help="Wan 2.2 A14B: the low-noise expert's file "
                          "(wan2.2_*_low_noise_14B_*.safetensors or .gguf); needs --base")
    sub.add_argument("--text-encoder", metavar="FILE",
                     help="UMT5 in place of the folder's (umt5_xxl_fp16.safetensors, "
                          "umt5_xxl_fp8_e4m3fn_scaled.safetensors, or a UMT5 .gguf)")
    sub.add_argument("--vae", metavar="FILE",
                     help="Wan's VAE in place of the folder's (wan_2.1_vae.safetensors; Wan 2.2 "
                          "TI2V 5B: wan2.2_vae.safetensors)")
    sub.add_argument("--clip-vision", metavar="FILE",
                     help="Wan 2.1 I2V: its CLIP vision encoder in place of the folder's "
                          "(clip_vision_h.safetensors)")
    sub.add_argument("--prompt", required=True, metavar="TEXT", help="what the video shows")
    sub.add_argument("--negative-prompt", default=None, metavar="TEXT",
                     help="what to steer away from (Wan: none; Kandinsky 5 Video: its "
                          "pipeline's \"Static, 2D cartoon, ...\"; LTX-2: none)")
    sub.add_argument("--frames", type=whole, default=None, metavar="N",
                     help=f"frame count, 1 + 4k: 1, 5, ..., {MAX_FRAMES} (Wan: 81; Kandinsky "
                          "5 Video, LTX-2: 121, which takes 1 + 8k)")
    sub.add_argument("--fps", type=number, default=None,
                     help="frames per second of the written video, 0.01 to 240 (Wan: 16; "
                          "Kandinsky 5 Video, LTX-2: 24; LTX-2's audio lasts as long)")
    sub.add_argument("--width", type=whole, default=None, metavar="PX",
                     help=f"multiple of 16, at most {MAX_SIDE} (Wan: 832; Kandinsky 5 Video: "
                          "768)")
    sub.add_argument("--height", type=whole, default=None, metavar="PX",
                     help=f"multiple of 16, at most {MAX_SIDE} (Wan: 480; Kandinsky 5 Video: "
                          "512)")
    sub.add_argument("--steps", type=whole, default=None, metavar="N",
                     help="sampling steps, 1 to 1000 (50; Wan Animate: 20; LTX-2: 30)")
    sub.add_argument("--cfg-scale", type=number, default=None, metavar="SCALE",
                     help=f"classifier-free guidance scale, 0 to {MAX_CFG:g}; 1 turns it off "
                          "(5; Wan Animate: 1; LTX-2: 3, the video's)")
    sub.add_argument("--cfg-scale-2", type=number, default=None, metavar="SCALE",
                     help="Wan 2.2 A14B: the low-noise expert's guidance scale (--cfg-scale)")
    sub.add_argument("--true-cfg-scale", type=number, default=None, metavar="SCALE",
                     help="HunyuanVideo: true classifier-free guidance against "
                          "--negative-prompt above 1, beside --cfg-scale, the guidance its "
                          "distilled transformer reads (off)")
    add_framepack_options(sub)
    sub.add_argument("--seed", type=whole, default=-1,
                     help="random seed; -1 (the default) picks one and prints it")
    sub.add_argument("--sampler", default="diffusers", choices=("diffusers", "UniPC", "Euler"),
                     help="diffusers: the folder's scheduler (Wan's UniPC); UniPC or Euler "
                          "on flow sigmas with the folder's shift (diffusers)")
    sub.add_argument("--rng", default="torch", choices=("torch", "numpy"),
                     help="the noise's random source; torch gives diffusers' video for a "
                          "seed (torch)")
    sub.add_argument("--cache", default=None, metavar="fbc|teacache|teacache-ret[:THRESHOLD]",
                     help="step caching: First Block Cache (a step whose first block's "
                          "residual changed by at most THRESHOLD, relative, since the last "
                          "computed step skips the other blocks; 0.12 unless given; "
                          "Wan, HunyuanVideo 1.5, Kandinsky 5, LTX-2) or "
                          "TeaCache (Wan 2.1, and Wan 2.2 Animate with Wan 2.1 I2V's tables; 0.2 "
                          "unless given, about 3x; 0.1 about 2x); "
                          "teacache-ret: TeaCache's retention mode (the first 5 steps "
                          "always computed, its own tables; 0.2 unless given); none: off "
                          "(off)")
    sub.add_argument("--lora", action="append", default=[], metavar="FILE[:WEIGHT]",
                     help="a LoRA patched into the transformer (diffusers/PEFT, ComfyUI or "
                          "kohya keys, e.g. a step-distillation LoRA), WEIGHT 1 unless given; "
                          "repeat for several; Wan 2.2 A14B: into the high-noise expert; "
                          "Kandinsky 5 Video: its LoRAs, keyed as Kandinsky 5's")
    sub.add_argument("--lora-2", action="append", default=[], metavar="FILE[:WEIGHT]",
                     help="Wan 2.2 A14B: a LoRA patched into the low-noise expert (the "
                          "low-noise file of a LoRA pair); repeat for several")
    sub.add_argument("-o", "--out", default=None, metavar="FILE.mp4|FILE.webp|DIR",
                     help="the output (default: outputs/COMMAND-SEED.mp4)")
    sub.add_argument("--offload", action="store_true",
                     help="one network on the GPU at a time (text encoder, transformer, VAE in "
                          "turn), the others in host memory: for small GPUs, slower")
    add_memory_options(sub)
    sub.add_argument("--dtype", choices=("auto", "float32", "float16"), default="auto",
                     help="weights: float16 where the adapter has shader-f16; auto: float16 "
                          "on matrix units, else float32 (auto)")
    sub.add_argument("--fp16-accumulation", action="store_true",
                     help="the transformer's float16 GEMMs accumulate in float16 on the "
                          "matrix units (ComfyUI's --fast fp16_accumulation; see txt2img "
                          "--help)")
    sub.add_argument("--no-half-vae", action="store_true",
                     help="the VAE in float32 under a float16 model (the WebUI's flag); "
                          "without it a float16 VAE whose frames come out NaN is made float32 "
                          "and decodes again, with a warning")
    add_device_options(sub)
    sub.set_defaults(run=run)


def _check(args: argparse.Namespace) -> Path:
    """Everything that needs no model, in one line each (what is not given: the family's
    default); the output path."""
    from ..pipelines.video import check_frame_count, video_cache
    from ..pipelines.video.models import video_defaults, video_family_name

    refuse_hunyuan_only(args, video_family_name(args.model))
    defaults = video_defaults(args.model)
    for name in ("frames", "fps", "width", "height", "steps", "cfg_scale"):
        if getattr(args, name) is None:
            setattr(args, name, getattr(defaults, name))
    check_frame_count(args.frames)
    for name in ("width", "height"):
        value = getattr(args, name)
        if value < 16 or value % 16:
            raise ValueError(f"--{name} must be a multiple of 16, got {value}")
    if args.frames > MAX_FRAMES:
        raise ValueError(f"--frames must be at most {MAX_FRAMES}, got {args.frames}")
    for name in ("width", "height"):
        if getattr(args, name) > MAX_SIDE:
            raise ValueError(f"--{name} must be at most {MAX_SIDE}, got {getattr(args, name)}")
    if not 1 <= args.steps <= 1000:
        raise ValueError(f"--steps must be from 1 to 1000, got {args.steps}")
    for name in ("cfg_scale", "cfg_scale_2", "true_cfg_scale"):
        value = getattr(args, name)
        if value is not None and not 0 <= value <= MAX_CFG:  # NaN too
            raise ValueError(f"--{name.replace('_', '-')} must be a number from 0 to {MAX_CFG:g}, "
                             f"got {value}")
    if not -1 <= args.seed < 2**64:  # torch's generator's range
        raise ValueError(f"--seed must be -1 (random) or a whole number >= 0 (below 2**64), got "
                         f"{args.seed}")
    check_fps(args.fps)
    video_cache(args.cache, "--cache")
    for spec in (*args.lora, *args.lora_2):
        lora_spec(spec)
    _check_files(args)
    check_vace(args)
    check_animate(args)
    out = Path(args.out) if args.out else Path("outputs") / f"{args.command}-{args.seed}.mp4"
    if check_output(out) == "frames":  # a folder of PNGs, made with the folders above it
        if out.exists() and not out.is_dir():
            raise ValueError(f"--out {str(out)!r} is a file; give a new folder for the frames, "
                             "or a .mp4 / .webp name")
        check_output_file(out / "00000.png", "--out", ".png", make_folders=True)
    else:
        check_output_file(out, "--out", out.suffix, make_folders=True)
    return out


def _source(args: argparse.Namespace) -> WanSource:
    """--model, --base and the files that replace the folder's parts, as a WanSource."""
    from ..loaders.wan.sources import WanSource

    def path(value: str | None) -> Path | None:
        return None if value is None else Path(value)

    return WanSource(model=Path(args.model), base=path(args.base), model_2=path(args.model_2),
                     text_encoder=path(args.text_encoder), vae=path(args.vae),
                     clip_vision=path(args.clip_vision),
                     vace_module=path(getattr(args, "vace_module", None)))


def _check_files(args: argparse.Namespace) -> None:
    """--model, --base and the files that replace the folder's parts, in one line each."""
    from ..loaders.wan.sources import check_wan_paths

    check_wan_paths(_source(args))


def _dtype(choice: str) -> object:
    if choice == "float32":
        return np.float32
    import gpucore

    from ..pipelines.load import auto_dtype

    device = gpucore.default_device()
    if choice == "auto":
        return auto_dtype(device)
    if device.has_f16:
        return np.float16
    print(f"note: {device.name} has no shader-f16; using float32 weights", file=sys.stderr)
    return np.float32


def run(args: argparse.Namespace) -> int:
    """Generate and write the video as `args` say; prints the written path."""
    from ..loaders.wan.sources import is_wan_animate

    if args.seed == -1:
        args.seed = secrets.randbelow(2**32)
    sized = args.width is not None or args.height is not None  # before the defaults fill in
    animate = is_wan_animate(Path(args.model))  # an Animate folder or transformer file
    if animate and args.frames is not None:
        raise ValueError("Wan Animate makes as many frames as --pose-video has: leave --frames "
                         "out")
    init = init_video_of(args, animate, MAX_FRAMES)  # read: its frames and size the run's
    out = _check(args)
    refuse_animate(args, animate)  # (Kandinsky 5 Video too)
    image = read_picture(args.image) if args.command == "img2vid" else None
    use_device_options(args)
    from ..pipelines.video.models import video_family_name

    family = video_family_name(args.model)
    if family != "ltx-2":
        refuse_ltx2_only(args)
    if family == "skyreels-v2-df":
        return run_skyreels_df(args, out, _dtype(args.dtype), image, init)
    refuse_skyreels_only(args)
    if family == "framepack":
        from .img2vid_framepack import run_framepack  # its options refused first
        return run_framepack(args, out, _dtype(args.dtype), image)
    if family == "hunyuan-video":
        from .txt2vid_hunyuan_video import refuse_hunyuan_video_options, run_hunyuan_video
        refuse_hunyuan_video_options(args)
        return run_hunyuan_video(args, out, _dtype(args.dtype), image)
    if family == "kandinsky-5-video":
        from .txt2vid_kandinsky5 import run_kandinsky5
        return run_kandinsky5(args, out, _dtype(args.dtype), image)
    if family == "hunyuan-video-1.5":
        from .txt2vid_hunyuan_video15 import refuse_hunyuan_video15_options, run_hunyuan_video15
        refuse_hunyuan_video15_options(args, sized)
        return run_hunyuan_video15(args, out, _dtype(args.dtype), image)
    if family in ("cosmos-predict2.5", "cosmos-predict2"):
        from .txt2vid_cosmos25 import run_cosmos25
        return run_cosmos25(args, out, _dtype(args.dtype), image, init)
    if family == "sana-video":
        from .txt2vid_sana_video import run_sana_video
        return run_sana_video(args, out, _dtype(args.dtype), image)
    if family == "helios":
        from .txt2vid_helios import run_helios
        return run_helios(args, out, _dtype(args.dtype), image, init)
    if family == "motif-video":
        from .txt2vid_motif_video import run_motif_video
        return run_motif_video(args, out, _dtype(args.dtype), image)
    if family == "ltx-2":
        from .txt2vid_ltx2 import run_ltx2

        return run_ltx2(args, out, _dtype(args.dtype), image)
    from ..loaders.wan.sources import animate_face_size, resolve_wan
    from ..pipelines.video import LucyEditPipeline, WanAnimatePipeline, WanPipeline, video_cache
    from ..pipelines.video.wan_refuse import wan_refusals_of

    folder, files = resolve_wan(_source(args))
    cache = video_cache(args.cache, "--cache", args.steps)
    # what the model does not take, from its configs and a file's header, before it loads
    if not animate:
        wan_refusals_of(folder, files, image=image is not None,
                        cache_kind=None if cache is None else cache.spec.kind,
                        guidance_scale_2=args.cfg_scale_2, control=vace_named(args))
    elif vace_named(args):
        raise ValueError(f"{vace_named(args)} needs a Wan VACE model; Wan Animate reads "
                         "--pose-video and --face-video")
    control = vace_control(args)  # read and fitted before the model loads
    pixels = animate_pixels_of(args, animate_face_size(folder, files), MAX_FRAMES) \
        if animate else None
    mode = memory_mode(args)  # a memory mode loads each network straight to host memory
    network = WanAnimatePipeline if animate else LucyEditPipeline if family == "lucy-edit" \
        else WanPipeline  # (Lucy Edit: the --init-video it edits beside the noise)
    pipe = network.from_pretrained(folder, dtype=_dtype(args.dtype),
                                   offload=args.offload or bool(mode), files=files)
    pipe.set_memory_mode(mode)
    if args.fp16_accumulation:
        from ..pipelines.fp16_accumulation import use_fp16_accumulation

        print(use_fp16_accumulation(pipe), file=sys.stderr)
    if args.no_half_vae:
        from ..pipelines.vae_float32 import use_float32_vae

        print(use_float32_vae(pipe), file=sys.stderr)
    for low_noise, specs in ((False, args.lora), (True, args.lora_2)):
        if specs:
            patch_loras(pipe.lora_targets(low_noise=low_noise), specs)
    print(f"seed: {args.seed}", file=sys.stderr)
    bar = ProgressBar(args.command)
    sampling = dict(negative_prompt=args.negative_prompt, num_inference_steps=args.steps,
                    guidance_scale=args.cfg_scale, seed=args.seed, rng=args.rng,
                    sampler=args.sampler, callback=bar.step)
    if pixels is not None:
        assert isinstance(pipe, WanAnimatePipeline)
        videos = pipe(args.prompt, pixels=pixels, segment_frames=args.segment_frames,
                      overlap=args.segment_overlap, cache=cache, **sampling)
    else:
        videos = pipe(args.prompt, height=args.height, width=args.width,
                      num_frames=args.frames, image=image, guidance_scale_2=args.cfg_scale_2,
                      cache=cache, control=control,
                      conditioning_scale=getattr(args, "control_scale", None), video=init,
                      strength=args.denoising_strength, **sampling)
    return finish_video(pipe, videos, cache, out, args.fps, args.verbose)
