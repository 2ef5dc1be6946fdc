"""`python -m diffusion serve`: its options, their checks and the uvicorn server (the app
itself is diffusion.server's)."""

from __future__ import annotations

import argparse
import errno
import ipaddress
import socket
import sys
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .memory import add_memory_options, memory_mode
from .options import add_network_options, whole

if TYPE_CHECKING:
    from ..server.settings import ServerSettings

__all__ = ["add_serve_parser", "serve", "server_settings"]

HELP = "serve the Stable Diffusion WebUI's HTTP API (/sdapi/v1) and a web page"


def _positive(text: str) -> int:
    value = whole(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _port(text: str) -> int:
    value = whole(text)
    if not 1 <= value <= 65535:  # else socket.bind's OverflowError, a traceback
        raise argparse.ArgumentTypeError(f"must be a TCP port from 1 to 65535, got {value}")
    return value


# the folder options checked before the model loads: a mistyped one would else serve without
# what it names, or fail at a request long after the start
_FOLDERS = ("models_dir", "lora_dir", "upscaler_dir", "embeddings_dir", "controlnet_dir",
            "vae_approx_dir", "gfpgan_models_path", "codeformer_models_path",
            "deepdanbooru_dir", "clip_models_path", "interrogate_dir", "blip_dir",
            "adetailer_dir")


def _check_folders(args: argparse.Namespace) -> None:
    """Every folder option given names a folder, and --outputs is not a file."""
    for name in _FOLDERS:
        path = getattr(args, name)
        if path and not Path(path).is_dir():
            raise ValueError(f"--{name.replace('_', '-')} {path!r} is not a folder")
    if Path(args.outputs).exists() and not Path(args.outputs).is_dir():
        raise ValueError(f"--outputs {args.outputs!r} is a file; give the folder where "
                         "save_images writes")


def add_serve_parser(commands: Any) -> argparse.ArgumentParser:
    """Add the `serve` sub-command to `commands` (argparse sub-parsers)."""
    sub = commands.add_parser("serve", help=HELP, description=HELP)
    sub.add_argument("--model", metavar="PATH",
                     help="the model loaded at start (default: the bundled model, else the "
                          "first one in --models-dir)")
    sub.add_argument("--models-dir", metavar="DIR",
                     help="diffusers folders and .safetensors files clients may switch to "
                          "(sd_model_checkpoint in /sdapi/v1/options), and the VAE / text "
                          "encoder files they may load them with (Forge's "
                          "forge_additional_modules, listed by /sdapi/v1/sd-modules)")
    add_network_options(sub)
    sub.add_argument("--styles-file", action="append", metavar="PATH",
                     help="the WebUI's prompt styles (styles.csv: name,prompt,negative_prompt) "
                          "that requests' `styles` name and /sdapi/v1/prompt-styles lists; a "
                          "glob (quoted: 'styles/*.csv') or repeat for several files "
                          "(default: the styles.csv beside --models-dir, if there is one)")
    sub.add_argument("--vae-approx-dir", metavar="DIR",
                     help="live previews' networks: the WebUI's VAEApprox (model.pt, "
                          "vaeapprox-sdxl.pt, vaeapprox-sd3.pt) for show_progress_type Approx NN "
                          "and TAESD decoders (taesd_decoder, taesdxl_decoder, taesd3_decoder, "
                          "taef1_decoder .safetensors/.pth) for TAESD (default: --models-dir's "
                          "VAE-approx)")
    sub.add_argument("--gfpgan-models-path", metavar="DIR",
                     help="GFPGAN's GFPGANv1.4.pth (or v1.3) for restore_faces and the Extras "
                          "(default: --models-dir's GFPGAN); facexlib's detection and parsing "
                          ".pth files go in --models-dir's facexlib, or beside it")
    sub.add_argument("--codeformer-models-path", metavar="DIR",
                     help="CodeFormer's codeformer-v0.1.0.pth (default: --models-dir's "
                          "Codeformer)")
    sub.add_argument("--deepdanbooru-dir", metavar="DIR",
                     help="DeepDanbooru's model-resnet_custom_v3.pt for /sdapi/v1/interrogate "
                          "(default: --models-dir's torch_deepdanbooru)")
    sub.add_argument("--clip-models-path", metavar="DIR",
                     help="the CLIP interrogator's transformers CLIPModel folder, e.g. "
                          "openai/clip-vit-large-patch14's (default: --models-dir's CLIP)")
    sub.add_argument("--interrogate-dir", metavar="DIR",
                     help="the CLIP interrogator's term lists, the WebUI's interrogate/*.txt "
                          "(default: --models-dir's interrogate)")
    sub.add_argument("--blip-dir", metavar="DIR",
                     help="the CLIP interrogator's BLIP captioner: Salesforce's "
                          "model_base_caption_capfilt_large.pth and bert-base-uncased's "
                          "vocab.txt (default: --models-dir's BLIP)")
    sub.add_argument("--text-encoder", action="append", metavar="FILE",
                     help="FLUX, SD3, Z-Image, Qwen-Image, FLUX.2, Wan: a text encoder file "
                          "in place of the model's own "
                          "(t5xxl_fp16 / _fp8_e4m3fn[_scaled], clip_l, clip_g .safetensors, "
                          "a T5 .gguf), for a single-file model "
                          "also the VAE it lacks (ae.safetensors), as Forge's VAE / Text "
                          "Encoder list; Z-Image / FLUX.2 / Qwen-Image / Lumina 2 models: "
                          "their LLM text encoder (qwen_3_4b.safetensors, "
                          "qwen_2.5_vl_7b.safetensors, mistral_3_small_flux2_bf16.safetensors, "
                          "gemma_2_2b_fp16.safetensors, or a GGUF of one); repeat for several")
    sub.add_argument("--base", action="append", metavar="DIR",
                     help="Z-Image, Qwen-Image (2.1), FLUX.2, Kandinsky 5, Krea 2, Lumina 2: a "
                          "diffusers folder of the family giving a single-file transformer "
                          "(ComfyUI's models/diffusion_models files, GGUFs) its text encoder, "
                          "tokenizer, VAE and scheduler, as txt2img's --base; repeat for "
                          "several families (default: the diffusers folders in --models-dir)")
    sub.add_argument("--image-encoder", action="append", metavar="PATH",
                     help="a CLIP image encoder for IP-Adapter units (a transformers folder, "
                          "h94's models/image_encoder (ViT-H/14) or sdxl_models/image_encoder "
                          "(ViT-bigG/14), or one .safetensors file); repeat for both")
    sub.add_argument("--adetailer-dir", metavar="DIR",
                     help="ADetailer's YOLOv8 detection models (face_yolov8n.pt, ...) its "
                          "units may name (default: --models-dir's adetailer)")
    sub.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    sub.add_argument("--listen", action="store_true",
                     help="bind 0.0.0.0: reachable from other machines (use --api-auth)")
    sub.add_argument("--port", type=_port, default=7860, help="port (7860)")
    sub.add_argument("--api-auth", metavar="USER:PASS[,USER:PASS...]",
                     help="require HTTP Basic credentials on the API")
    sub.add_argument("--outputs", default="outputs", metavar="DIR",
                     help="where save_images=true writes (outputs/txt2img-images/DATE/...)")
    sub.add_argument("--queue-size", type=_positive, default=16, metavar="N",
                     help="jobs that may wait; more get 503 + Retry-After (16)")
    sub.add_argument("--max-size", type=_positive, default=2048, metavar="PX",
                     help="largest width/height a request may ask for (2048, the WebUI's "
                          "slider maximum)")
    sub.add_argument("--dtype", choices=("auto", "float32", "float16"), default="auto",
                     help="weights: float16 (half the memory, needs shader-f16) or float32; "
                          "auto: float16 where the adapter has matrix units (tensor cores, "
                          "through the Dawn runtime), else float32 (default: auto)")
    sub.add_argument("--int8", action="store_true",
                     help="every model's denoiser with int8 linear layers (W8A8; see "
                          "txt2img --int8): on the matrix units where the adapter multiplies "
                          "i8, else a portable kernel; the infotext says 'Int8: W8A8'")
    sub.add_argument("--fp16-accumulation", action="store_true",
                     help="every model's denoiser accumulates its float16 GEMMs in float16 "
                          "(see txt2img --fp16-accumulation); the infotext says 'FP16 "
                          "accumulation: True'")
    sub.add_argument("--no-half-vae", action="store_true",
                     help="every model's VAE in float32 (see txt2img --no-half-vae); without "
                          "it a float16 VAE that gives NaN is made float32 at that request")
    sub.add_argument("--devices", metavar="all|I,J|NAME",
                     help="one worker process per GPU, each with its own copy of the model, on "
                          "the one queue: 'all', adapter indices ('0,1', as `python -m gpucore "
                          "info` lists them; one may repeat: two processes on one GPU) or names; "
                          "default: one worker on the best adapter")
    sub.add_argument("--no-warmup", dest="warmup", action="store_false",
                     help="serve as soon as the model is loaded, without drawing a first "
                          "picture (which builds its kernels and records its captures, so "
                          "that the first request is as fast as the second)")
    add_memory_options(sub, verbose=False)
    from .serve_ray import add_ray_options

    add_ray_options(sub)
    return sub


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        hint = {errno.EADDRINUSE: "is another server running there? pass --port N",
                errno.EACCES: "ports below 1024 need privileges; pass --port N"}.get(
            exc.errno or 0, "check --host: an address or name of this machine")
        raise OSError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); {hint}") from None
    sock.listen(128)
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def _plain(flags: dict[str, Any]) -> dict[str, Any]:
    """The command line's values for /cmd-flags (what a Ray replica can be sent: no
    functions)."""
    return {k: v for k, v in flags.items() if not callable(v)}


def server_settings(args: argparse.Namespace) -> ServerSettings:
    """The server's settings from serve's options (worker_adapters: resolved apart, from
    --devices, for a server on this machine)."""
    from ..server.settings import ServerSettings

    return ServerSettings(
        model=args.model, models_dir=args.models_dir, text_encoders=args.text_encoder or (),
        bases=args.base or (),
        image_encoders=args.image_encoder or (), controlnet_dir=args.controlnet_dir,
        adetailer_dir=args.adetailer_dir,
        embeddings_dir=args.embeddings_dir, lora_dir=args.lora_dir,
        styles_files=args.styles_file or (),
        upscaler_dir=args.upscaler_dir, vae_approx_dir=args.vae_approx_dir, dtype=args.dtype,
        gfpgan_models_path=args.gfpgan_models_path,
        codeformer_models_path=args.codeformer_models_path,
        deepdanbooru_dir=args.deepdanbooru_dir, clip_models_path=args.clip_models_path,
        interrogate_dir=args.interrogate_dir, blip_dir=args.blip_dir,
        memory=memory_mode(args), int8=args.int8,
        fp16_accumulation=args.fp16_accumulation, no_half_vae=args.no_half_vae,
        warmup=args.warmup,
        queue_size=args.queue_size, max_size=args.max_size,
        host="0.0.0.0" if args.listen else args.host, port=args.port,
        api_auth=args.api_auth, outputs=args.outputs, cmd_flags=_plain(vars(args)))


def serve(args: argparse.Namespace) -> int:
    """Run the server until interrupted; returns the exit status."""
    import uvicorn

    from ..loaders.errors import WeightsError
    from ..server.api.app import create_app, parse_auth

    settings = server_settings(args)
    host = settings.host
    try:
        parse_auth(settings.api_auth)
        _check_folders(args)
        if args.annotator_dir:
            from ..loaders.control.annotator_file import use_annotator_dir

            use_annotator_dir(args.annotator_dir)
        for path in args.image_encoder or []:
            if not Path(path).exists():
                raise ValueError(f"--image-encoder {path!r} does not exist")
        for path in args.base or []:
            if not Path(path, "model_index.json").is_file():
                raise ValueError(f"--base {path!r} is not a diffusers folder (no "
                                 "model_index.json); give the folder of a Z-Image, Qwen-Image "
                                 "or FLUX.2 model")
        if args.upscaler_dir:  # names for hires fix and the Extras API
            from ..upscalers.models import register_upscaler_dir

            register_upscaler_dir(args.upscaler_dir)
        from ..server.api.app import styles_files
        from ..text.styles import StyleDatabase

        StyleDatabase(styles_files(settings))  # a bad file: one line, before the model loads
        sock = _bind(host, settings.port)
    except (ValueError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.ray:
        from .serve_ray import serve_on_ray

        sock.close()  # Ray Serve's proxy listens instead
        return serve_on_ray(args, settings)
    if not _is_loopback(host) and not args.api_auth:
        print(f"warning: listening on {host} without --api-auth: anyone who can reach this "
              "machine can use the GPU", file=sys.stderr)
    if args.devices:
        import gpucore

        from ..server.jobs.processes import worker_adapters

        try:
            settings = replace(settings, worker_adapters=tuple(worker_adapters(args.devices)))
        except (gpucore.GpuError, ValueError) as exc:
            sock.close()
            print(f"error: --devices {args.devices}: {exc}", file=sys.stderr)
            return 2
    try:
        app = create_app(settings)
    except (FileNotFoundError, WeightsError, ValueError, OSError) as exc:
        sock.close()
        print(f"error: cannot load the model: {exc}", file=sys.stderr)
        return 2
    adapters = settings.worker_adapters
    shown = f"[{host}]" if ":" in host else host
    workers = "" if not adapters else f"; {len(adapters)} worker processes on adapters " + \
        ", ".join(adapters)
    print(f"serving at http://{shown}:{settings.port}/ (API: /sdapi/v1, docs: /docs){workers}",
          flush=True)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    server.run(sockets=[sock])
    return 0
