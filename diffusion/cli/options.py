"""The generation commands' options, in the groups `--help` shows them.

The types here read syntax only (a whole number, a number, WIDTHxHEIGHT): whether a value is
allowed is for `GenerationRequest` to say (diffusion.pipelines.request), with the one message
every door gives. Most options are a GenerationRequest field of the same name
(`--cfg-scale` -> `cfg_scale`); `diffusion.cli.generate` builds the request from them.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..pipelines.masked_content import masked_content
from ..pipelines.request import door_fields
from ..sampling.kdiffusion import sampler_names
from ..sampling.samplers import SCHEDULE_LABELS
from ..upscalers.interpolation import IMAGE_UPSCALERS, LATENT_UPSCALERS
from .before_load import DISTILLED_GUIDANCE
from .device import add_device_options
from .redux import add_redux_options

__all__ = ["SAMPLING_DEFAULTS", "UPSCALERS", "add_generation_options", "add_mask_options",
           "add_network_options", "add_request_options", "masked_content_choice", "number",
           "resize_mode_choice",
           "size_pair", "whole"]

UPSCALERS = [*LATENT_UPSCALERS, *IMAGE_UPSCALERS]
# What --steps, --cfg-scale and --sampler default to when the model's folder has no
# defaults.json (or it leaves the setting out); GenerationRequest's own defaults.
SAMPLING_DEFAULTS: dict[str, Any] = {"steps": 20, "cfg_scale": 7.0, "sampler": "Euler a"}
# img2img's "Resize mode" as the WebUI's page names it, by its API's number (resize_mode)
RESIZE_MODES = ("just resize", "crop and resize", "resize and fill",
                "just resize (latent upscale)")
_FROM_MODEL = "default: the model's defaults.json, else"


def whole(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None


def size_pair(text: str) -> tuple[int, int]:
    try:
        width, height = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not WIDTHxHEIGHT, e.g. 1024x768") from None
    return width, height


def add_network_options(parser: argparse.ArgumentParser) -> None:
    """--lora-dir, --upscaler-dir, --embeddings-dir, --controlnet-dir and --annotator-dir: the
    folders prompts, hires fix and control units name LoRAs, upscalers, embeddings, control
    models and preprocessors' files from (generation commands and `serve` alike)."""
    parser.add_argument("--lora-dir", metavar="DIR",
                        help="where <lora:NAME:WEIGHT> tags in the prompt find NAME.safetensors "
                             "(kohya/WebUI, diffusers/PEFT, LyCORIS LoCon/LoHa)")
    parser.add_argument("--upscaler-dir", metavar="DIR",
                        help="ESRGAN/Real-ESRGAN/SwinIR/HAT .pth files for --hr-upscaler and "
                             "Extras (the WebUI's models/ folder, or models/ESRGAN)")
    parser.add_argument("--embeddings-dir", metavar="DIR",
                        help="textual-inversion embeddings (.safetensors, .pt), used wherever a "
                             "prompt or negative prompt names one (file name = name)")
    parser.add_argument("--controlnet-dir", metavar="DIR",
                        help="ControlNet / T2I-Adapter models (files and diffusers folders, the "
                             "WebUI's models/ControlNet) that units name, as "
                             "'control_v11p_sd15_canny' or with its [hash]")
    parser.add_argument("--annotator-dir", metavar="DIR",
                        help="the model-based preprocessors' annotator files (lineart, "
                             "softedge, mlsd, normal_bae, depth_midas, openpose: "
                             "lllyasviel/Annotators' files, or the extension's "
                             "annotator/downloads); default: "
                             "$CONTROLNET_ANNOTATOR_DIR, else models/ControlNetPreprocessor")


def _prompt(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="PATH",
                        help="a diffusers model folder, a single-file .safetensors checkpoint "
                             "or a .gguf (a whole model from `python -m diffusion quantize`; a "
                             "UNet-only one takes the other parts from --base or --vae and "
                             "--text-encoder) (default: the bundled shapes-128 model, which "
                             "draws coloured shapes: 'a red circle on a blue background')")
    parser.add_argument("--prompt", metavar="TEXT",
                        help="what to draw, in the WebUI's prompt syntax: (emphasis:1.2), "
                             "[de-emphasis], [from:to:step] editing, [a|b] alternation, BREAK; "
                             "longer than 75 tokens is fine (required unless --from-infotext)")
    parser.add_argument("--from-infotext", metavar="FILE.png",
                        help="start from the settings in another PNG's infotext (prompt, "
                             "seed, sampler, size, hires fix, ...); options given here win")
    parser.add_argument("--negative-prompt", default="", metavar="TEXT",
                        help="what to steer away from (default: none)")
    parser.add_argument("--style", action="append", metavar="NAME",
                        help="a prompt style of --styles-file applied to the prompt and "
                             "negative prompt, as the WebUI's styles (its {prompt} replaced by "
                             "the prompt, else appended after ', '); repeat for several, "
                             "applied in order")
    parser.add_argument("--styles-file", action="append", metavar="PATH",
                        help="the WebUI's styles.csv (name,prompt,negative_prompt) --style "
                             "names; a glob (quoted) or repeat for several (default: "
                             "styles.csv in the current folder)")


def _sampling(parser: argparse.ArgumentParser) -> None:
    # None: filled in by generate.fill_sampling_defaults once the model is known
    parser.add_argument("--steps", type=whole,
                        help=f"sampling steps ({_FROM_MODEL} {SAMPLING_DEFAULTS['steps']})")
    parser.add_argument("--cfg-scale", type=number, metavar="SCALE",
                        help=f"classifier-free guidance scale ({_FROM_MODEL} "
                             f"{SAMPLING_DEFAULTS['cfg_scale']:g}); 1 disables guidance")
    parser.add_argument("--sampler", metavar="NAME",
                        help=f"sampler, by its WebUI or ComfyUI name, any case ({_FROM_MODEL} "
                             f"{SAMPLING_DEFAULTS['sampler']!r}): {', '.join(sampler_names())}."
                             " 'diffusers' runs the model folder's own scheduler as diffusers "
                             "does; old names like 'DPM++ 2M Karras' set --scheduler too")
    parser.add_argument("--scheduler", default="Automatic", metavar="TYPE",
                        help="the WebUI's schedule type (default Automatic: the sampler's "
                             f"own): {', '.join(SCHEDULE_LABELS)}")
    parser.add_argument("--eta", type=number, default=1.0,
                        help="noise of the ancestral/SDE samplers (the WebUI's 'Eta', 1)")
    parser.add_argument("--s-churn", type=number, default=0.0, metavar="X",
                        help="Euler/Heun/DPM2 churn (the WebUI's 'sigma churn', 0)")
    parser.add_argument("--s-noise", type=number, default=1.0, metavar="X",
                        help="scale of sampler noise (the WebUI's 'sigma noise', 1)")


def _seeds(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seed", type=whole, default=-1,
                        help="random seed; -1 or omitted picks one and prints it. Image k of a "
                             "batch gets seed + k, as in the WebUI (DDIM, PLMS, UniPC and "
                             "'diffusers' draw the whole batch from the one seed)")
    parser.add_argument("--subseed", type=whole, default=-1, metavar="SEED",
                        help="the WebUI's variation seed (-1: random); used with "
                             "--subseed-strength")
    parser.add_argument("--subseed-strength", type=number, default=0.0, metavar="S",
                        help="how far towards the variation seed's noise, 0..1 (0: off)")
    parser.add_argument("--seed-resize-from", type=size_pair, metavar="WxH",
                        help="draw the seed's noise at this size and centre it (keeps a "
                             "seed's composition at another --width/--height)")
    parser.add_argument("--ensd", type=whole, default=0, metavar="N",
                        help="the WebUI's eta noise seed delta: ancestral samplers draw their "
                             "step noise from seed + N (0: from the seed's own generator)")
    parser.add_argument("--rng", choices=("numpy", "torch"), default="numpy",
                        help="what the seed drives: numpy's generator (default) or torch's CPU "
                             "generator, which gives diffusers' noise for the seed (its "
                             "generator=torch.Generator('cpu').manual_seed(seed); the WebUI's "
                             "'RNG: CPU') without needing torch")


def _size(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--width", type=whole,
                        help="multiple of 8 (default: the model's own size, 512 for SD 1.x)")
    parser.add_argument("--height", type=whole,
                        help="multiple of 8 (default: the model's own size, 512 for SD 1.x)")
    parser.add_argument("--n-iter", type=whole, default=1, metavar="N",
                        help="batch count: batches generated one after another, seeds counting "
                             "on as in the WebUI (1)")
    parser.add_argument("--batch-size", type=whole, default=1, metavar="N",
                        help="images generated together (1)")
    parser.add_argument("--clip-skip", type=whole, default=1, metavar="N",
                        help="WebUI's Clip skip: 1 uses the text encoder's last layer (default), "
                             "2 the penultimate (common for anime models), ...")


def _image(parser: argparse.ArgumentParser, strength: float) -> None:
    parser.add_argument("--init-image", required=True, metavar="PATH",
                        help="the starting picture (fitted to --width x --height by "
                             "--resize-mode)")
    parser.add_argument("--reference", action="append", default=[], metavar="PATH",
                        help="an edit model's further reference picture after --init-image "
                             "(its first), at its own size; repeat it for several: FLUX.2 "
                             "reads up to 10, Qwen-Image-Edit Plus any number, Kontext and "
                             "Qwen-Image-Edit only the init image")
    parser.add_argument("--strength", type=number, default=strength,
                        help=f"denoising strength in (0, 1]: how much of the schedule "
                             f"re-noises the image ({strength:g})")
    parser.add_argument("--initial-noise-multiplier", type=number, default=1.0, metavar="M",
                        help="the noise added to the init image's latents times M, from 0 to "
                             "10 (1; the WebUI's 'Noise multiplier for img2img')")
    parser.add_argument("--resize-mode", type=resize_mode_choice, default=0, metavar="MODE",
                        help="the WebUI's 'Resize mode', how a picture (and mask) of another "
                             "shape than --width x --height fits it: 'just resize' (stretched, "
                             "the default), 'crop and resize' (covers it, the overflow cut "
                             "off), 'resize and fill' (fits inside, the borders filled from "
                             "its edges), 'just resize (latent upscale)' (encoded at its own "
                             "size, the latents resized; not with a mask, as in the WebUI); "
                             "or 0-3, as the WebUI's API")


def masked_content_choice(text: str) -> int:
    """--inpainting-fill's value: a name of the WebUI's (any case) or its number."""
    try:
        return masked_content(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def resize_mode_choice(text: str) -> int:
    """--resize-mode's value: a name of the WebUI's (any case) or its number, 0-3."""
    name = text.strip().lower()
    if name in RESIZE_MODES:
        return RESIZE_MODES.index(name)
    if name in ("0", "1", "2", "3"):
        return int(name)
    choices = ", ".join(f"{i} ({mode})" for i, mode in enumerate(RESIZE_MODES))
    raise argparse.ArgumentTypeError(f"{text!r} is not a resize mode; give one of {choices}")


def add_mask_options(parser: argparse.ArgumentParser) -> None:
    """inpaint's mask, the WebUI's "Mask mode", "Mask blur", "Masked content", mask_round and
    "Inpaint area" (diffusion.pipelines.inpaint_plan), with the WebUI page's defaults."""
    parser.add_argument("--mask", required=True, metavar="PATH",
                        help="white = repaint, black = keep (resized like the image)")
    parser.add_argument("--mask-invert", action="store_true",
                        help="the WebUI's 'Mask mode: Inpaint not masked': repaint the mask's "
                             "black part and keep its white")
    parser.add_argument("--mask-blur", type=whole, default=4, metavar="PX",
                        help="the WebUI's 'Mask blur': the mask's Gaussian blur in pixels of the "
                             "mask as given, so the repainted part blends in (4; 0: none)")
    parser.add_argument("--inpainting-fill", type=masked_content_choice, default=1,
                        metavar="CONTENT",
                        help="the WebUI's 'Masked content', what the masked part starts from: "
                             "fill (the colours around it), original (the default), 'latent "
                             "noise' or 'latent nothing' (or 0-3, as the WebUI's API)")
    parser.add_argument("--mask-round", action=argparse.BooleanOptionalAction, default=True,
                        help="the WebUI's mask_round: the latent mask rounded to 0 and 1 (the "
                             "default); --no-mask-round keeps the levels of its blurred edge, "
                             "as the WebUI's soft inpainting does")
    parser.add_argument("--inpaint-full-res", action="store_true",
                        help="the WebUI's 'Inpaint area: Only masked': draw only the part of the "
                             "picture around the mask, at --width x --height, and paste it back "
                             "into the picture, which keeps its size (default: the whole "
                             "picture, resized to --width x --height)")
    parser.add_argument("--inpaint-full-res-padding", type=whole, default=0, metavar="PX",
                        help="with --inpaint-full-res: pixels of the picture around the mask "
                             "drawn with it (the WebUI's 'Only masked padding', 0)")


def _hires(parser: argparse.ArgumentParser) -> None:
    hires = parser.add_argument_group(
        "hires fix", "a second img2img pass at a larger size (on with --hr-scale or "
        "--hr-resize), as the WebUI's; with img2img for the edit models whose init image is "
        "a reference (FLUX.1 Kontext, Qwen-Image-Edit, FLUX.2)")
    hires.add_argument("--hr-scale", type=number, metavar="S",
                       help="size of the second pass as a multiple of --width/--height, from 1 "
                            "to 8")
    hires.add_argument("--hr-resize", type=size_pair, metavar="WxH",
                       help="size of the second pass (instead of --hr-scale)")
    hires.add_argument("--hr-upscaler", default="Latent", metavar="NAME",
                       help=f"how the first pass is enlarged (Latent): {', '.join(UPSCALERS)}, "
                            "or a model of --upscaler-dir by name ('R-ESRGAN 4x+', a "
                            ".pth file's stem)")
    hires.add_argument("--hr-steps", type=whole, default=0, metavar="N",
                       help="steps of the second pass (0: as many as --steps)")
    hires.add_argument("--hr-denoise", type=number, default=0.7, metavar="D",
                       help="denoising strength of the second pass, in (0, 1] (0.7)")
    hires.add_argument("--hr-prompt", default="", metavar="TEXT",
                       help="the second pass's prompt (default: --prompt)")
    hires.add_argument("--hr-negative-prompt", default="", metavar="TEXT",
                       help="the second pass's negative prompt (default: --negative-prompt)")
    hires.add_argument("--hr-sampler", metavar="NAME",
                       help="the second pass's sampler (default: --sampler's); with another "
                            "than --sampler, both k-diffusion samplers (not DDIM, PLMS, UniPC "
                            "or diffusers)")
    hires.add_argument("--hr-scheduler", metavar="TYPE",
                       help="the second pass's schedule type (default: --scheduler's)")


def _models(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--refiner", metavar="PATH",
                        help="a model that takes over the sampling at --refiner-switch-at "
                             "(the SDXL refiner after an SDXL model), as the WebUI's Refiner")
    parser.add_argument("--vae", metavar="PATH",
                        help="a VAE in place of the model's own: a diffusers VAE folder or a "
                             ".safetensors file (e.g. vae-ft-mse-840000-ema-pruned)")
    parser.add_argument("--text-encoder", action="append", metavar="FILE",
                        help="FLUX, SD3, Z-Image, Qwen-Image, FLUX.2, Wan: a text encoder file "
                             "in place of the model's own "
                             "(t5xxl_fp16, t5xxl_fp8_e4m3fn[_scaled], clip_l, clip_g "
                             ".safetensors, or a T5 GGUF such as city96's "
                             "t5-v1_1-xxl-encoder-Q8_0.gguf); "
                             "for a single-file model also the VAE it lacks (ae.safetensors); "
                             "for a UNet-only SD .gguf model its CLIP text encoder "
                             "(clip_l.safetensors); for Z-Image, FLUX.2, Qwen-Image, Lumina 2 "
                             "their LLM (qwen_3_4b, mistral_3_small_flux2_*, qwen_2.5_vl_7b, "
                             "gemma_2_2b_fp16 .safetensors, or a GGUF); repeat for several")
    parser.add_argument("--base", metavar="PATH",
                        help="for a UNet-only .gguf --model (ComfyUI-GGUF's, stable-diffusion"
                             ".cpp's): a model of its family (diffusers folder or checkpoint) "
                             "whose text encoders, VAE, tokenizer, scheduler and UNet config it "
                             "runs with; for a single-file Z-Image, Qwen-Image (2.1), FLUX.2, "
                             "Kandinsky 5, Krea 2 or Lumina 2 transformer (ComfyUI's file, a "
                             "GGUF), the family's diffusers folder giving the rest")
    add_network_options(parser)


def _ip_adapter(parser: argparse.ArgumentParser) -> None:
    ip = parser.add_argument_group(
        "IP-Adapter", "prompt with a picture (h94's IP-Adapters; diffusion.cli.ip_adapter): "
        "repeat --ip-adapter, --ip-image and --ip-scale for several")
    ip.add_argument("--ip-adapter", action="append", metavar="PATH",
                    help="an IP-Adapter file (ip-adapter_sd15.safetensors, "
                         "ip-adapter-plus_sd15.bin, ip-adapter_sdxl_vit-h.safetensors, ...)")
    ip.add_argument("--ip-image", action="append", metavar="IMG",
                    help="the picture the IP-Adapter reads (one per --ip-adapter)")
    ip.add_argument("--ip-scale", action="append", type=number, metavar="S",
                    help="its weight (1; one for all, or one per --ip-adapter)")
    ip.add_argument("--image-encoder", metavar="PATH",
                    help="the CLIP image encoder the adapters read pictures with: a "
                         "transformers folder (h94's models/image_encoder) or one "
                         ".safetensors file (ViT-H/14; ViT-bigG/14 for ip-adapter_sdxl)")


def _output_and_device(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", default="outputs", metavar="DIR|FILE.png",
                        help="a folder (numbered files, created if missing) or a .png file "
                             "(several images: FILE-0.png, FILE-1.png, ...; default: ./outputs)")
    parser.add_argument("--dtype", choices=("auto", "float32", "float16"), default="auto",
                        help="weights and activations: float16 (half the memory) where the "
                             "adapter has shader-f16, otherwise a note and float32; auto: "
                             "float16 where the adapter multiplies it on matrix units (tensor "
                             "cores, through the Dawn runtime), else float32 (default: auto)")
    parser.add_argument("--fp16", dest="dtype", action="store_const", const="float16",
                        help="same as --dtype float16")
    parser.add_argument("--int8", nargs="?", const="plain", choices=("plain", "smooth"),
                        help="run the denoiser's linear layers (attention projections, MLPs) in "
                             "int8 (W8A8: activations per token, weights per channel; about "
                             "1%% error per layer): on the matrix units where the adapter "
                             "multiplies i8 (Dawn on NVIDIA), else a portable int8 kernel "
                             "(slower than float16; a line says which). --int8 smooth: "
                             "SmoothQuant's smoothing from a one-step calibration run of the "
                             "request first (flow models: FLUX, SD 3, ...)")
    parser.add_argument("--fp16-accumulation", action="store_true",
                        help="the denoiser's float16 GEMMs accumulate in float16 on the matrix "
                             "units (ComfyUI's --fast fp16_accumulation): FLUX's step about 17%% "
                             "faster on an H100, the picture about 1%% off, as with cuBLAS's "
                             "fp16 accumulation (nearer float16 than bf16 is); text encoders "
                             "and the VAE keep float32 sums")
    parser.add_argument("--no-half-vae", action="store_true",
                        help="the VAE in float32 under a float16 model (the WebUI's flag), for "
                             "VAEs whose float16 pictures come out black; without it a float16 "
                             "VAE that gives NaN is made float32 and decodes again, with a "
                             "warning. On matrix units SD's and SDXL's then run as a scaled "
                             "float16 copy that stays in range, after one float32 pass")
    parser.add_argument("--prediction-type", choices=("epsilon", "v_prediction"),
                        help="override the detected model type (SD2 768px models are "
                             "v_prediction)")
    add_device_options(parser)


# --help's placeholders of the fields whose help spells a form; others get their type's
_METAVARS = {"cache": "KIND[:THRESHOLD]", "emphasis": "MODE", "hires_refiner_pass": "PASS",
             "distilled_cfg_scale": "SCALE", "hr_distilled_cfg": "SCALE"}


def add_request_options(parser: argparse.ArgumentParser) -> None:
    """An option `--field-name` for every GenerationRequest field with `cli` help (what a new
    setting gets without a change here): typed and defaulted by the field's default (a
    distilled guidance scale's default is None: one given is refused where not taken)."""
    for setting in door_fields("cli"):
        kind = {bool: None, int: whole, float: number}.get(type(setting.default), str)
        flag = "--" + setting.name.replace("_", "-")
        if kind is None:
            parser.add_argument(flag, action=argparse.BooleanOptionalAction,
                                default=setting.default, help=setting.metadata["cli"])
        else:  # a distilled guidance scale: None unless given (cli.before_load)
            default = None if setting.name in DISTILLED_GUIDANCE else setting.default
            metavar = _METAVARS.get(setting.name,
                                    {int: "N", float: "X"}.get(type(setting.default), "TEXT"))
            parser.add_argument(flag, type=kind, default=default, metavar=metavar,
                                help=setting.metadata["cli"])


def add_generation_options(parser: argparse.ArgumentParser, *, strength: float | None,
                           hires: bool = True) -> None:
    """Every option of txt2img (`strength` None), img2img and inpaint (their default
    --strength): prompt, sampling, seeds, size, init image, the hires fix (`hires`: txt2img,
    and img2img for the edit models whose init image is a reference), other models, output
    and device."""
    _prompt(parser)
    _sampling(parser)
    _seeds(parser)
    _size(parser)
    if strength is not None:
        _image(parser, strength)
    if hires:
        _hires(parser)
    _models(parser)
    _ip_adapter(parser)
    add_redux_options(parser, number)
    add_request_options(parser)
    _output_and_device(parser)
