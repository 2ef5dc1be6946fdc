"""`python -m diffusion txt2img|img2img|inpaint`: Stable Diffusion from the command line.

Sampling options left out (--steps, --cfg-scale, --sampler) come from the model folder's
defaults.json where it has one. Everything that can be checked without the model (sizes,
sampler, defaults.json, images, paths) is checked before it loads, and a bad input ends in
one `error: ...` line on stderr and exit status 2 (1 for a GPU failure), never a traceback.
Written paths go to stdout, one a line; the seed, notes and progress go to stderr.
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn, TextIO

import numpy as np

from ..infotext import save_images
from ..pipelines.sampling import sampler_label, sampler_names
from ..samplers import SCHEDULE_LABELS, schedules
from ..upscalers.interpolation import IMAGE_UPSCALERS, LATENT_UPSCALERS
from ..upscalers.models import MODEL_UPSCALERS, register_upscaler_dir

UPSCALERS = [*LATENT_UPSCALERS, *IMAGE_UPSCALERS]

__all__ = ["ProgressBar", "build_parser", "main"]

EPILOG = """examples:
  python -m diffusion txt2img --model ./stable-diffusion-v1-5 --prompt "a lighthouse at dusk"
  python -m diffusion txt2img --model sd15.safetensors --prompt "a red fox" \\
      --negative-prompt "blurry" --sampler "DPM++ 2M Karras" --steps 25 --seed 42 --fp16
  python -m diffusion img2img --model sd15.safetensors --init-image photo.png \\
      --prompt "watercolor painting" --strength 0.6 --out painted.png
  python -m diffusion inpaint --model sd15-inpainting --init-image room.png --mask mask.png \\
      --prompt "a green armchair"
  python -m diffusion txt2img --model sd_xl_base_1.0.safetensors --prompt "a red fox" \\
      --refiner sd_xl_refiner_1.0.safetensors --refiner-switch-at 0.8 --fp16
  python -m diffusion txt2img --model ./sdxl-turbo --prompt "a red fox"   # 1 step, no CFG

Images are numbered like the WebUI (outputs/00000-42.png, ...) and carry their settings in
the PNG text chunk "parameters" (the WebUI's PNG Info reads them).
"""


# What --steps, --cfg-scale and --sampler default to when the model's folder has no
# defaults.json (or it leaves the setting out); StableDiffusion.generate's own defaults.
SAMPLING_DEFAULTS: dict[str, Any] = {"steps": 20, "cfg_scale": 7.0, "sampler": "Euler a"}
_FROM_MODEL = "default: the model's defaults.json, else"


class _UsageError(Exception):
    """Raised by the parser instead of argparse's print-usage-and-exit."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise _UsageError(message)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _image_size(text: str) -> int:
    value = _positive_int(text)
    if value % 8:
        lower = max(8, value // 8 * 8)
        raise argparse.ArgumentTypeError(
            f"must be a multiple of 8 (the VAE works on 8x8 pixel blocks), got {value}; "
            f"try {lower} or {lower + 8}")
    return value


def _finite(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not np.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def _strength(text: str) -> float:
    value = _finite(text)
    if not 0.0 < value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {value}")
    return value


def _sampler(text: str) -> str:
    try:
        return sampler_label(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _size_pair(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 1024x768") from None
    for value in (width, height):
        _image_size(str(value))
    return width, height


def _schedule(text: str) -> str:
    try:
        return schedules.lookup(text).label
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _unit(text: str) -> float:
    value = _finite(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = _seed(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def _switch_at(text: str) -> float:
    value = _finite(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), e.g. 0.8; got "
                                          f"{value:g}")
    return value


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < -1:
        raise argparse.ArgumentTypeError(f"must be -1 (random) or >= 0, got {value}")
    return value


def add_network_options(parser: argparse.ArgumentParser) -> None:
    """--lora-dir and --embeddings-dir: the folders prompts name LoRAs and embeddings from
    (generation commands and `serve` alike)."""
    parser.add_argument("--lora-dir", metavar="DIR",
                        help="where <lora:NAME:WEIGHT> tags in the prompt find NAME.safetensors "
                             "(kohya/WebUI, diffusers/PEFT, LyCORIS LoCon/LoHa)")
    parser.add_argument("--upscaler-dir", metavar="DIR",
                        help="ESRGAN/Real-ESRGAN .pth files for --hr-upscaler and Extras (the "
                             "WebUI's models/ folder, or models/ESRGAN)")
    parser.add_argument("--embeddings-dir", metavar="DIR",
                        help="textual-inversion embeddings (.safetensors, .pt), used wherever a "
                             "prompt or negative prompt names one (file name = name)")


def _add_common(parser: argparse.ArgumentParser, *, strength: float | None) -> None:
    parser.add_argument("--model", metavar="PATH",
                        help="a diffusers model folder or a single-file .safetensors checkpoint "
                             "(default: the bundled shapes-128 model, which draws coloured "
                             "shapes: 'a red circle on a blue background')")
    parser.add_argument("--prompt", metavar="TEXT",
                        help="what to draw, in the WebUI's prompt syntax: (emphasis:1.2), "
                             "[de-emphasis], [from:to:step] editing, [a|b] alternation, BREAK; "
                             "longer than 75 tokens is fine (required unless --from-infotext)")
    parser.add_argument("--from-infotext", metavar="FILE.png",
                        help="start from the settings in another PNG's infotext (prompt, "
                             "seed, sampler, size, hires fix, ...); options given here win")
    parser.add_argument("--negative-prompt", default="", metavar="TEXT",
                        help="what to steer away from (default: none)")
    # None: filled in by _fill_sampling_defaults once the model is known
    parser.add_argument("--steps", type=_positive_int,
                        help=f"sampling steps ({_FROM_MODEL} {SAMPLING_DEFAULTS['steps']})")
    parser.add_argument("--cfg-scale", type=_finite, metavar="SCALE",
                        help=f"classifier-free guidance scale ({_FROM_MODEL} "
                             f"{SAMPLING_DEFAULTS['cfg_scale']:g}); 1 disables guidance")
    parser.add_argument("--sampler", type=_sampler, metavar="NAME",
                        help=f"sampler, by its WebUI or ComfyUI name, any case ({_FROM_MODEL} "
                             f"{SAMPLING_DEFAULTS['sampler']!r}): {', '.join(sampler_names())}."
                             " 'diffusers' runs the model folder's own scheduler as diffusers "
                             "does; old names like 'DPM++ 2M Karras' set --scheduler too")
    parser.add_argument("--scheduler", type=_schedule, default="Automatic", metavar="TYPE",
                        help="the WebUI's schedule type (default Automatic: the sampler's "
                             f"own): {', '.join(SCHEDULE_LABELS)}")
    parser.add_argument("--seed", type=_seed, default=-1,
                        help="random seed; -1 or omitted picks one and prints it. Image k of a "
                             "batch gets seed + k, as in the WebUI (DDIM, PLMS, UniPC and "
                             "'diffusers' draw the whole batch from the one seed)")
    parser.add_argument("--subseed", type=_seed, default=-1, metavar="SEED",
                        help="the WebUI's variation seed (-1: random); used with "
                             "--subseed-strength")
    parser.add_argument("--subseed-strength", type=_unit, default=0.0, metavar="S",
                        help="how far towards the variation seed's noise, 0..1 (0: off)")
    parser.add_argument("--seed-resize-from", type=_size_pair, metavar="WxH",
                        help="draw the seed's noise at this size and centre it (keeps a "
                             "seed's composition at another --width/--height)")
    parser.add_argument("--eta", type=_finite, default=1.0,
                        help="noise of the ancestral/SDE samplers (the WebUI's 'Eta', 1)")
    parser.add_argument("--s-churn", type=_finite, default=0.0, metavar="X",
                        help="Euler/Heun/DPM2 churn (the WebUI's 'sigma churn', 0)")
    parser.add_argument("--s-noise", type=_finite, default=1.0, metavar="X",
                        help="scale of sampler noise (the WebUI's 'sigma noise', 1)")
    parser.add_argument("--ensd", type=_non_negative_int, default=0, metavar="N",
                        help="the WebUI's eta noise seed delta: ancestral samplers draw their "
                             "step noise from seed + N (0: from the seed's own generator)")
    parser.add_argument("--rng", choices=("numpy", "torch"), default="numpy",
                        help="what the seed drives: numpy's generator (default) or torch's CPU "
                             "generator, which gives diffusers' noise for the seed (its "
                             "generator=torch.Generator('cpu').manual_seed(seed); the WebUI's "
                             "'RNG: CPU') without needing torch")
    parser.add_argument("--width", type=_image_size,
                        help="multiple of 8 (default: the model's own size, 512 for SD 1.x)")
    parser.add_argument("--height", type=_image_size,
                        help="multiple of 8 (default: the model's own size, 512 for SD 1.x)")
    parser.add_argument("--n-iter", type=_positive_int, default=1, metavar="N",
                        help="batch count: batches generated one after another, seeds counting "
                             "on as in the WebUI (1)")
    parser.add_argument("--batch-size", type=_positive_int, default=1, metavar="N",
                        help="images generated together (1)")
    parser.add_argument("--clip-skip", type=_positive_int, default=1, metavar="N",
                        help="WebUI's Clip skip: 1 uses the text encoder's last layer (default), "
                             "2 the penultimate (common for anime models), ...")
    if strength is not None:
        parser.add_argument("--init-image", required=True, metavar="PATH",
                            help="the starting picture (resized to --width x --height)")
        parser.add_argument("--strength", type=_strength, default=strength,
                            help=f"denoising strength in (0, 1]: how much of the schedule "
                                 f"re-noises the image ({strength:g})")
    if strength is None:
        hires = parser.add_argument_group(
            "hires fix", "a second img2img pass at a larger size (on with --hr-scale or "
            "--hr-resize), as the WebUI's")
        hires.add_argument("--hr-scale", type=_finite, metavar="S",
                           help="size of the second pass as a multiple of --width/--height")
        hires.add_argument("--hr-resize", type=_size_pair, metavar="WxH",
                           help="size of the second pass (instead of --hr-scale)")
        hires.add_argument("--hr-upscaler", default="Latent", metavar="NAME",
                           help=f"how the first pass is enlarged (Latent): {', '.join(UPSCALERS)}")
        hires.add_argument("--hr-steps", type=_non_negative_int, default=0, metavar="N",
                           help="steps of the second pass (0: as many as --steps)")
        hires.add_argument("--hr-denoise", type=_strength, default=0.7, metavar="D",
                           help="denoising strength of the second pass, in (0, 1] (0.7)")
    parser.add_argument("--refiner", metavar="PATH",
                        help="a model that takes over the sampling at --refiner-switch-at "
                             "(the SDXL refiner after an SDXL model), as the WebUI's Refiner")
    parser.add_argument("--refiner-switch-at", type=_switch_at, default=0.8, metavar="F",
                        help="fraction of the sampling after which the refiner runs, in (0, 1) "
                             "(0.8; with --sampler diffusers: diffusers' denoising_end)")
    parser.add_argument("--vae", metavar="PATH",
                        help="a VAE in place of the model's own: a diffusers VAE folder or a "
                             ".safetensors file (e.g. vae-ft-mse-840000-ema-pruned)")
    add_network_options(parser)
    parser.add_argument("--out", default="outputs", metavar="DIR|FILE.png",
                        help="a folder (numbered files, created if missing) or a .png file "
                             "(default: ./outputs)")
    parser.add_argument("--dtype", choices=("auto", "float32", "float16"), default="auto",
                        help="weights and activations: float16 (half the memory) where the "
                             "adapter has shader-f16, otherwise a note and float32; auto: "
                             "float16 where the adapter multiplies it on matrix units (tensor "
                             "cores, through the Dawn runtime), else float32 (default: auto)")
    parser.add_argument("--fp16", dest="dtype", action="store_const", const="float16",
                        help="same as --dtype float16")
    parser.add_argument("--prediction-type", choices=("epsilon", "v_prediction"),
                        help="override the detected model type (SD2 768px models are "
                             "v_prediction)")
    parser.add_argument("--backend", metavar="NAME",
                        help="GPU API: vulkan, metal, dx12 or gl (sets GPUCORE_BACKEND)")
    parser.add_argument("--adapter", metavar="INDEX|NAME",
                        help="adapter index or name substring, see `python -m gpucore info` "
                             "(sets GPUCORE_ADAPTER)")


def build_parser() -> argparse.ArgumentParser:
    """The argparse parser of `python -m diffusion` (a sub-command per pipeline)."""
    parser = _Parser(prog="python -m diffusion", epilog=EPILOG,
                     description="Stable Diffusion 1.x/2.x, SDXL and Turbo on any GPU (WebGPU).",
                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command",
                                     metavar="{txt2img,img2img,inpaint,png-info,serve,quantize,"
                                             "convert,upscale}")
    for name, strength, text in (("txt2img", None, "generate images from a prompt"),
                                 ("img2img", 0.75, "redraw an image following a prompt"),
                                 ("inpaint", 1.0, "repaint the white part of a mask")):
        sub = commands.add_parser(name, help=text, description=text, epilog=EPILOG,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_common(sub, strength=strength)
        if name == "inpaint":
            sub.add_argument("--mask", required=True, metavar="PATH",
                             help="white = repaint, black = keep (resized like the image)")
    info = commands.add_parser("png-info", help="print the settings a PNG was made with",
                               description="print the infotext (the WebUI's 'parameters') a "
                                           "PNG carries, or with --json the settings read "
                                           "from it")
    info.add_argument("file", metavar="FILE.png")
    info.add_argument("--json", action="store_true", help="the parsed settings as JSON")
    from ..server.serve import add_serve_parser

    add_serve_parser(commands, _positive_int)
    from . import convert, quantize, upscale

    quantize.add_parser(commands)
    convert.add_parser(commands)
    upscale.add_parser(commands)
    return parser


class ProgressBar:
    """A `progress(done, total)` callback for `StableDiffusion.generate`.

    On a terminal it redraws `label  45%|#####      | 9/20 [00:05<00:06, 1.80it/s]` in place;
    elsewhere (a log, a pipe) it stays quiet until the last step and then writes one line:
    `label: 20 steps in 11.1s (1.80it/s)`.
    """

    def __init__(self, label: str, *, stream: TextIO | None = None, width: int = 24,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.width = width
        self.clock = clock
        self.start = clock()
        self._first: float | None = None  # when step 1 ended
        self._shown = 0  # length of the line on screen

    def rate(self, done: int, now: float) -> float:
        """Steps per second, leaving out step 1: it includes compiling the GPU pipelines."""
        if self._first is None or done < 2 or now <= self._first:
            return done / max(now - self.start, 1e-9)
        return (done - 1) / (now - self._first)

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if self._first is None:
            self._first = now
        rate = self.rate(done, now)
        if self.tty:
            filled = self.width * done // max(total, 1)
            bar = "#" * filled + " " * (self.width - filled)
            eta = (total - done) / rate if rate > 0 else 0.0
            line = (f"{self.label} {100 * done // max(total, 1):3d}%|{bar}| {done}/{total} "
                    f"[{_clock(now - self.start)}<{_clock(eta)}, {_speed(rate)}]")
            # pad over the previous line's tail: the ETA can get shorter
            self.stream.write("\r" + line.ljust(self._shown))
            self._shown = len(line)
            if done >= total:
                self.stream.write("\n")
                self._shown = 0
        elif done >= total:
            self.stream.write(f"{self.label}: {total} steps in {now - self.start:.1f}s "
                              f"({_speed(rate)})\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _speed(rate: float) -> str:
    return f"{rate:.2f}it/s" if rate >= 1 or rate <= 0 else f"{1 / rate:.2f}s/it"


def _open_image(path: str, what: str, mode: str) -> Any:
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except FileNotFoundError:
        raise ValueError(f"{what} {path!r} does not exist") from None
    except (OSError, Image.DecompressionBombError) as exc:
        raise ValueError(f"{what} {path!r} is not a readable image ({exc})") from None


def _check_model(args: argparse.Namespace) -> None:
    if args.model is not None and not Path(args.model).exists():
        raise ValueError(f"model path {args.model!r} does not exist; give a diffusers folder "
                         "(with model_index.json) or a .safetensors checkpoint")


def _fill_sampling_defaults(args: argparse.Namespace) -> None:
    """Set the sampling options left out: the model folder's defaults.json (read without
    loading the model), then a Turbo model's (diffusion.pipelines.load.TURBO_DEFAULTS), else
    SAMPLING_DEFAULTS. Notes on stderr what came from where."""
    from ..pipelines.load import DEFAULT_MODEL, DEFAULTS_FILE, model_defaults

    model = DEFAULT_MODEL if args.model is None else Path(args.model)
    recommended, turbo = model_defaults(model)
    taken: dict[bool, list[str]] = {False: [], True: []}
    for name, fallback in SAMPLING_DEFAULTS.items():
        if getattr(args, name) is not None:
            continue  # given on the command line: it wins
        value = getattr(recommended, name)
        setattr(args, name, fallback if value is None else value)
        if value is not None:
            shown = repr(value) if isinstance(value, str) else f"{value:g}"
            taken[name in turbo].append(f"--{name.replace('_', '-')} {shown}")
    if taken[False]:
        print(f"from {model / DEFAULTS_FILE}: {', '.join(taken[False])}", file=sys.stderr)
    if taken[True]:
        print(f"turbo model ({model.name}): {', '.join(taken[True])} (1-4 steps without "
              "guidance; give them to choose otherwise)", file=sys.stderr)


def _check_paths(args: argparse.Namespace) -> None:
    if args.command != "txt2img" and int(args.steps * args.strength) < 1:
        raise ValueError(f"--strength {args.strength:g} with --steps {args.steps} leaves no "
                         "step to run; raise one of them")
    out = Path(args.out)
    folder = out.parent if out.suffix.lower() == ".png" else out
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise ValueError(f"--out {args.out!r}: {str(existing)!r} is a file; give a folder or "
                         "a .png path")
    if folder != out and existing != folder:
        raise ValueError(f"output folder {str(folder)!r} does not exist")


def _dtype_and_device(choice: str) -> tuple[Any, Any]:
    """--dtype's weights dtype and the device it was decided for (None: load_pipeline's)."""
    if choice == "float32":
        return np.float32, None
    import gpucore

    from ..pipelines.load import auto_dtype

    device = gpucore.default_device()
    if choice == "auto":
        return auto_dtype(device), device
    if device.has_f16:
        return np.float16, device
    print(f"note: {device.name} has no shader-f16; using float32 weights", file=sys.stderr)
    return np.float32, device


# infotext setting -> (our option, how to convert it); the settings --from-infotext takes
_FROM_INFOTEXT: dict[str, tuple[str, Callable[[Any], Any]]] = {
    "prompt": ("prompt", str), "negative_prompt": ("negative_prompt", str),
    "steps": ("steps", int), "cfg_scale": ("cfg_scale", float), "seed": ("seed", int),
    "width": ("width", int), "height": ("height", int), "rng": ("rng", str),
    "clip_skip": ("clip_skip", lambda v: int(v) + 1), "subseed": ("subseed", int),
    "subseed_strength": ("subseed_strength", float), "ensd": ("ensd", int),
    "scheduler": ("scheduler", str), "strength": ("strength", float),
    "hires_scale": ("hr_scale", float), "hires_resize": ("hr_resize", tuple),
    "hires_upscaler": ("hr_upscaler", str), "hires_steps": ("hr_steps", int),
    "hires_denoise": ("hr_denoise", float), "seed_resize_from": ("seed_resize_from", tuple),
    "eta": ("eta", float), "s_churn": ("s_churn", float), "s_noise": ("s_noise", float),
    "refiner_switch_at": ("refiner_switch_at", float),
}


def _apply_infotext(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Fill the options left at their defaults from --from-infotext's PNG (given ones win)."""
    from ..infotext import parse_infotext, read_infotext

    text = read_infotext(_existing(args.from_infotext, "--from-infotext"))
    if text is None:
        raise ValueError(f"--from-infotext {args.from_infotext!r}: the PNG has no parameters "
                         "(infotext) to start from")
    settings = parse_infotext(text)
    required = {"img2img": ["--init-image", "x"], "inpaint": ["--init-image", "x", "--mask", "x"]}
    defaults = parser.parse_args([args.command, *required.get(args.command, [])])
    for key, (option, convert) in _FROM_INFOTEXT.items():
        left_out = getattr(args, option, None) == getattr(defaults, option, None)
        if key in settings and hasattr(args, option) and left_out:
            setattr(args, option, convert(settings[key]))
    if args.sampler is None and "sampler" in settings:
        args.sampler = _sampler(str(settings["sampler"]))


def _existing(path: str, flag: str) -> Path:
    if not Path(path).is_file():
        raise ValueError(f"{flag} {path!r} does not exist or is not a file")
    return Path(path)


def _hires(args: argparse.Namespace) -> Any:
    """The HiresFix --hr-* ask for, or None when neither --hr-scale nor --hr-resize is given."""
    if getattr(args, "hr_scale", None) is None and getattr(args, "hr_resize", None) is None:
        return None
    from ..upscalers.interpolation import HiresFix

    return HiresFix(scale=args.hr_scale or 2.0, resize=args.hr_resize,
                    upscaler=_upscaler(args.hr_upscaler), steps=args.hr_steps,
                    denoise=args.hr_denoise)


def _sampler_options(args: argparse.Namespace) -> Any:
    """The --eta/--s-churn/--s-noise settings, None when all are the WebUI's defaults (so
    the timestep samplers, which take none, accept the call)."""
    from ..pipelines.sampling import SamplerOptions

    options = SamplerOptions(eta=args.eta, s_churn=args.s_churn, s_noise=args.s_noise)
    return None if options == SamplerOptions() else options


def _upscaler(name: str) -> str:
    by_lower = {u.lower(): u for u in [*UPSCALERS, *MODEL_UPSCALERS]}
    if name.strip().lower() not in by_lower:
        raise ValueError(f"--hr-upscaler {name!r} is not one of: {', '.join(UPSCALERS)}")
    return by_lower[name.strip().lower()]


def run(args: argparse.Namespace) -> list[Path]:
    """Generate and save as `args` (from `build_parser`) say; returns the written paths."""
    if args.from_infotext:
        _apply_infotext(args, build_parser())
    if args.prompt is None:
        raise ValueError("--prompt is required (or --from-infotext with a PNG to start from)")
    _check_model(args)
    _fill_sampling_defaults(args)
    _check_paths(args)
    if args.upscaler_dir:  # model upscalers' names, before --hr-upscaler is checked
        register_upscaler_dir(args.upscaler_dir)
    hires = _hires(args)
    if args.backend:
        os.environ["GPUCORE_BACKEND"] = args.backend
    if args.adapter:
        os.environ["GPUCORE_ADAPTER"] = args.adapter
    options: dict[str, Any] = {}
    if args.command != "txt2img":
        options["init_image"] = _open_image(args.init_image, "--init-image", "RGB")
        options["strength"] = args.strength
    if args.command == "inpaint":
        options["mask"] = _open_image(args.mask, "--mask", "L")
    seed = secrets.randbelow(2**32) if args.seed == -1 else args.seed
    print(f"seed: {seed}", file=sys.stderr)
    subseed = secrets.randbelow(2**32) if args.subseed == -1 else args.subseed
    dtype, device = _dtype_and_device(args.dtype)
    if args.vae and not Path(args.vae).exists():
        raise ValueError(f"--vae {args.vae!r} does not exist; give a VAE folder or a "
                         ".safetensors file")
    if args.refiner and not Path(args.refiner).exists():
        raise ValueError(f"--refiner {args.refiner!r} does not exist; give the refiner's "
                         "diffusers folder or .safetensors file")
    if args.lora_dir and not Path(args.lora_dir).is_dir():
        raise ValueError(f"--lora-dir {args.lora_dir!r} is not a folder")
    embeddings = None
    if args.embeddings_dir:  # checked before the model loads
        from ..text.embeddings import EmbeddingDatabase

        embeddings = EmbeddingDatabase(args.embeddings_dir)

    from diffusion import load_pipeline

    pipe = load_pipeline(args.model, dtype=dtype, device=device,
                         prediction_type=args.prediction_type)
    if hires is not None:
        options["hires"] = hires
    if args.refiner:
        options["refiner"] = load_pipeline(args.refiner, dtype=dtype, device=device,
                                           prediction_type=args.prediction_type)
        options["refiner_switch_at"] = args.refiner_switch_at
    if getattr(pipe, "is_turbo", False) and args.width is None and args.height is None:
        size = pipe.native_size
        print(f"turbo model: --width {size} --height {size}", file=sys.stderr)
    if embeddings is not None:
        pipe.embeddings = embeddings
    pipe.lora_dir = args.lora_dir
    if args.vae:
        from ..loaders.vae_file import load_vae

        # an SDXL model's VAE kept in float32 (force_upcast) stays so when replaced
        vae_dtype = (pipe.vae.decoder.conv_in.weight.dtype if getattr(pipe, "is_sdxl", False)
                     else dtype)
        pipe.vae = load_vae(args.vae, dtype=vae_dtype, device=pipe.unet.conv_in.weight.device,
                            config=pipe.vae.config)
        pipe.vae_path = args.vae
    written = []
    for batch in range(args.n_iter):  # the WebUI's batch count: seeds count on over batches
        label = args.command if args.n_iter == 1 else f"{args.command} {batch + 1}/{args.n_iter}"
        result = pipe.generate(args.prompt, negative_prompt=args.negative_prompt,
                               steps=args.steps, cfg_scale=args.cfg_scale, sampler=args.sampler,
                               scheduler=args.scheduler, seed=seed + batch * args.batch_size,
                               subseed=subseed + batch * args.batch_size,
                               subseed_strength=args.subseed_strength,
                               eta_noise_seed_delta=args.ensd, width=args.width,
                               seed_resize_from=args.seed_resize_from,
                               sampler_options=_sampler_options(args),
                               height=args.height, batch_size=args.batch_size,
                               clip_skip=args.clip_skip - 1, rng=args.rng,
                               progress=ProgressBar(label), **options)
        written += save_images(result.images, result.settings, args.out)
    return written


def png_info(args: argparse.Namespace) -> None:
    """`png-info FILE`: the PNG's infotext, or its parsed settings as JSON."""
    import json

    from ..infotext import parse_infotext, read_infotext

    text = read_infotext(_existing(args.file, "png-info"))
    if text is None:
        raise ValueError(f"{args.file} carries no parameters (no WebUI infotext)")
    print(json.dumps(parse_infotext(text), indent=2, ensure_ascii=False) if args.json else text)


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m diffusion`; returns the exit status."""
    import gpucore

    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        if args.command is None:
            parser.print_usage(sys.stderr)
            raise _UsageError("choose a command: txt2img, img2img, inpaint, png-info or serve")
        if args.command == "serve":
            from ..server.serve import serve

            return serve(args)
        if hasattr(args, "run"):  # sub-commands in their own modules (quantize, convert, upscale)
            return args.run(args)
        if args.command == "png-info":
            png_info(args)
            return 0
        for path in run(args):
            print(path, flush=True)
    except (_UsageError, ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except gpucore.GpuError as exc:
        print(f"error: GPU: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted (no partial files are left)", file=sys.stderr)
        return 130
    return 0
