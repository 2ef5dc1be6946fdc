"""Where a txt2img picture's wall time goes beyond its GPU time: an A/B of the host-side
choices, in one process on one device (SD 1.5-sized random weights, float16 where the
adapter has it, 512x512, 20 steps, Euler a).

    GPUCORE_RUNTIME=dawn python -m tools.txt2img_host_ab [--size 512] [--steps 20] [--repeat 6]
    python -m tools.txt2img_host_ab --tiny --size 64 --steps 2 --repeat 2   # a smoke run

The variants: the first submit after a wait at 256 dispatches (as before the ramp) or at 32
(gpucore._stream.FIRST_SUBMIT), and the VAE decode frugal with the pool (as the memory modes run
it) or keeping its buffers (the plain pipeline). Frugal variants run first: once a decode has
kept its buffers, a later frugal one finds every size class pooled and makes none. Prints the
median and best wall seconds of each, the buffers the last picture made, the reserve, and
whether every variant drew the same picture. bench/NOTES.md ("The GPU waits on the host")
has the H100's numbers.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import gpucore
from bench import _harness
from bench import txt2img as bench_txt2img
from diffusion import load_pipeline
from diffusion.models import tiled_vae
from diffusion.pipelines.sd import stable_diffusion

# name: (dispatches in the first submit after a wait, frugal decode)
VARIANTS = {"256 first, frugal decode": (256, True), "ramp, frugal decode": (32, True),
            "256 first, frugal decode, again": (256, True),
            "ramp, frugal decode, again": (32, True),
            "ramp, decode keeps its buffers": (32, False),
            "ramp, decode keeps its buffers, again": (32, False)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=512, help="picture side in pixels")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--repeat", type=int, default=6, help="pictures per variant")
    parser.add_argument("--tiny", action="store_true", help="bench txt2img's quick model")
    args = parser.parse_args()
    device = gpucore.default_device()
    dtype = _harness.dtypes(device)[-1]
    settings = dict(prompt="a lighthouse on a cliff at dusk", negative_prompt="blurry",
                    steps=args.steps, cfg_scale=7.0, seed=42, width=args.size, height=args.size)
    first_picture = None
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        bench_txt2img._write_folder(root, quick=args.tiny)
        pipe = load_pipeline(root, device=device, dtype=dtype)
        for i, (name, (first, frugal)) in enumerate(VARIANTS.items()):
            device.default_stream.first_submit = first
            stable_diffusion.vae_decode = functools.partial(tiled_vae.vae_decode, frugal=frugal)
            for _ in range(2 if i == 0 else 0):  # captures recorded, kernels built
                pipe.txt2img(**settings, sampler="Euler a")
            walls, made = [], 0
            for _ in range(args.repeat):
                before = device.buffers_created
                start = time.perf_counter()
                picture = np.asarray(pipe.txt2img(**settings, sampler="Euler a").images[0])
                walls.append(time.perf_counter() - start)
                made = device.buffers_created - before
            first_picture = picture if first_picture is None else first_picture
            print(f"{name:40s} median {statistics.median(walls[1:]):.4f} s, best "
                  f"{min(walls[1:]):.4f}; buffers made by the last picture {made}; reserved "
                  f"{device.memory_stats().reserved / 2**30:.3f} GiB; same picture "
                  f"{np.array_equal(picture, first_picture)}")


if __name__ == "__main__":
    main()
