"""Text to image with Stable Diffusion on the GPU, from Python; checks the PNG it writes.

    python examples/txt2img.py --model PATH [--prompt TEXT] [--steps 20] [--seed 42]
                               [--size 512] [--sampler "Euler a"] [--out DIR] [--fp16]

PATH is a diffusers model folder or a single-file .safetensors checkpoint (default: env
AVX_MODEL). The image goes to --out (default ./out/txt2img, or AVX_EXAMPLE_OUT) with its
settings in the PNG `parameters` chunk, as `python -m diffusion txt2img` writes it; the script
reads the file back and exits 1 when the image or its settings do not survive the trip.
With AVX_EXAMPLE_SMALL=1 (the test suite) and no model, it says so and exits 0.
GPUCORE_BACKEND / GPUCORE_ADAPTER pick the adapter.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

import gpucore
from diffusion import GenerationRequest
from diffusion.cli.progress import ProgressBar
from diffusion.infotext import parse_infotext, read_infotext, save_images


def main(argv: list[str] | None = None) -> int:
    small = os.environ.get("AVX_EXAMPLE_SMALL") == "1"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=os.environ.get("AVX_MODEL"),
                        help="diffusers folder or .safetensors file (default: env AVX_MODEL)")
    parser.add_argument("--prompt", default="a lighthouse on a cliff at dusk, oil painting")
    parser.add_argument("--negative-prompt", default="blurry, low quality")
    parser.add_argument("--steps", type=int, default=4 if small else 20)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--size", type=int, default=64 if small else 512,
                        help="width and height, a multiple of 8 (64 with AVX_EXAMPLE_SMALL=1)")
    parser.add_argument("--sampler", default="Euler a")
    parser.add_argument("--out", type=Path,
                        default=Path(os.environ.get("AVX_EXAMPLE_OUT", "out/txt2img")))
    parser.add_argument("--fp16", action="store_true", help="float16 weights")
    args = parser.parse_args(argv)
    if not args.model:
        if small:
            print("no model given; skipping (set --model or AVX_MODEL)")
            return 0
        parser.error("no model given: pass --model PATH or set AVX_MODEL")
    try:
        return run(args)
    except (ValueError, OSError, gpucore.GpuError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(args: argparse.Namespace) -> int:
    from diffusion import load_pipeline

    # every setting, checked before the model loads (a bad size is a ValueError saying so)
    request = GenerationRequest(prompt=args.prompt, negative_prompt=args.negative_prompt,
                                steps=args.steps, sampler=args.sampler, seed=args.seed,
                                width=args.size, height=args.size)
    dtype = np.float16 if args.fp16 and gpucore.default_device().has_f16 else np.float32
    start = time.perf_counter()
    pipe = load_pipeline(args.model, dtype=dtype)
    print(f"loaded {args.model} ({np.dtype(dtype).name}) in {time.perf_counter() - start:.1f}s")
    result = pipe.generate(request, observer=ProgressBar("txt2img"))
    (path,) = save_images(result.images, result.settings, args.out)
    print(f"wrote {path}")

    # The file must hold exactly the pixels and the settings that made them.
    with Image.open(path) as image:
        same_pixels = np.array_equal(np.asarray(image.convert("RGB")), result.images[0])
    text = read_infotext(path) or ""
    back = parse_infotext(text)
    expected = {"prompt": args.prompt, "seed": args.seed, "steps": args.steps,
                "width": args.size, "height": args.size}
    wrong = {k: back.get(k) for k, v in expected.items() if back.get(k) != v}
    print(text)
    if not same_pixels or wrong:
        print(f"FAILED: pixels equal: {same_pixels}; settings differing: {wrong}")
        return 1
    print("ok: the PNG reads back with the same pixels and settings")
    return 0


if __name__ == "__main__":
    sys.exit(main())
