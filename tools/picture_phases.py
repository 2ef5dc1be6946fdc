"""Lab tool: where one warm picture's wall time goes outside the steps, ours beside diffusers.

bench/pictures.py found SDXL base's 1024x1024 picture (30 steps Euler, CFG 7) 0.77 s outside
its steps against diffusers' 0.36 s. This writes the same random diffusers folder, and after a
warm-up picture on each side times:
- diffusers (fp16 on CUDA, float32 on torch's CPU without it): its prompt encoding
  (`encode_prompt`, CFG) and the picture with `output_type="latent"` and with `"np"` (the
  difference: the VAE decode and post-processing), each synchronized, medians of 3;
- ours (float16): one picture under gpucore.Phases (encode, denoise, decode, ... and what no
  phase claimed), medians of 3 of each phase; one picture's GPU kernel time by kernel
  (device.profile(): its 12 longest kernels and their sum); one picture with its encode and
  decode phases profiled alone; one under cProfile (the host's 30 costliest calls).

    GPUCORE_RUNTIME=dawn python -m tools.picture_phases --json OUT.json   # --quick: tiny, 64 px
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gpucore
from bench import _cold_files, _harness
from bench.pictures import NEGATIVE, PROMPT, SETTINGS, _free


def _median_s(fn: Callable[[], Any], sync: Callable[[], None], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _diffusers(root: Path, size: int, steps: int, repeat: int, cuda: bool
               ) -> dict[str, float]:
    import diffusers
    import torch

    dev = torch.device("cuda" if cuda else "cpu")
    pipe = diffusers.StableDiffusionXLPipeline.from_pretrained(
        root, torch_dtype=torch.float16 if cuda else torch.float32).to(dev)
    pipe.set_progress_bar_config(disable=True)
    call = dict(prompt=PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps,
                height=size, width=size, guidance_scale=SETTINGS["sdxl"].cfg_scale)

    def picture(output: str) -> Any:
        return pipe(**call, output_type=output,
                    generator=torch.Generator("cpu").manual_seed(42)).images

    picture("np")  # warm-up
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    found = {"picture_s": _median_s(lambda: picture("np"), sync, repeat),
             "latent_picture_s": _median_s(lambda: picture("latent"), sync, repeat),
             "encode_s": _median_s(lambda: pipe.encode_prompt(
                 prompt=PROMPT, device=dev, num_images_per_prompt=1,
                 do_classifier_free_guidance=True, negative_prompt=NEGATIVE), sync, repeat)}
    found["decode_and_post_s"] = found["picture_s"] - found["latent_picture_s"]
    return found


def _ours(root: Path, size: int, steps: int, repeat: int,
          device: gpucore.Device) -> dict[str, Any]:
    import numpy as np

    from diffusion import load_pipeline

    pipe = load_pipeline(root, device=device, dtype=np.float16 if device.has_f16 else np.float32)

    def picture() -> Any:
        return pipe.generate(PROMPT, negative_prompt=NEGATIVE, steps=steps,
                             cfg_scale=SETTINGS["sdxl"].cfg_scale, sampler="Euler", seed=42,
                             width=size, height=size).images

    picture()  # warm-up: the kernels' builds, the captures
    splits = []
    for _ in range(repeat):
        with gpucore.Phases() as phases:
            picture()
        splits.append(phases.split())
    names = {name for split in splits for name in split["phases"]}
    found: dict[str, Any] = {
        "picture_s": statistics.median(s["total_s"] for s in splits),
        "other_s": statistics.median(s["other_s"] for s in splits),
        **{f"{name}_s": statistics.median(s["phases"].get(name, {"s": 0.0})["s"]
                                          for s in splits) for name in sorted(names)}}
    with device.profile() as prof:
        picture()
    found["kernel_ms"], found["kernels"] = _summary(prof)
    found["by_phase"] = _phase_kernels(picture, device)
    found["host_top"] = _host_profile(picture)
    return found


def _summary(prof: Any, top: int = 12) -> tuple[float, dict[str, Any]]:
    kernels = sorted(prof.summary().items(), key=lambda item: -item[1][1])
    return (sum(ns for _, (_, ns) in kernels) / 1e6,
            {name: {"calls": n, "ms": ns / 1e6} for name, (n, ns) in kernels[:top]})


def _phase_kernels(picture: Callable[[], Any], device: gpucore.Device) -> dict[str, Any]:
    """One picture whose encode and decode phases each run under a device profile."""
    import contextlib

    from diffusion.pipelines import generation
    from diffusion.pipelines.sd import stable_diffusion

    found: dict[str, Any] = {}

    @contextlib.contextmanager
    def profiled(name: str) -> Any:
        if name not in ("encode", "decode"):
            yield
            return
        start = time.perf_counter()
        with device.profile() as prof:
            yield
        device.synchronize()
        kernel_ms, kernels = _summary(prof, top=8)
        found[name] = {"wall_s": time.perf_counter() - start, "kernel_ms": kernel_ms,
                       "kernels": kernels}

    saved = stable_diffusion.phase, generation.phase
    stable_diffusion.phase = generation.phase = profiled  # type: ignore[assignment]
    try:
        picture()
    finally:
        stable_diffusion.phase, generation.phase = saved  # type: ignore[assignment]
    return found


def _host_profile(picture: Callable[[], Any], top: int = 30) -> list[str]:
    """One picture under cProfile: the `top` functions by cumulative time."""
    import cProfile
    import io
    import pstats

    profiler = cProfile.Profile()
    profiler.runcall(picture)
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(top)
    here = str(Path.cwd()) + "/"  # paths relative to the checkout: results are committed
    return [line.replace(here, "") for line in out.getvalue().splitlines()]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--quick", action="store_true", help="tiny SDXL at 64x64, 2 steps")
    args = parser.parse_args()
    device = gpucore.default_device()
    cuda = _harness.torch_cuda() is not None
    size, steps, repeat = (64, 2, 1) if args.quick else (1024, SETTINGS["sdxl"].steps, 3)
    result: dict[str, Any] = {"environment": _harness.environment(device), "size": size,
                              "steps": steps}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "sdxl"
        SETTINGS["sdxl"].write(root, args.quick, _cold_files._Pool())
        result["diffusers"] = _diffusers(root, size, steps, repeat, cuda)
        _free(device, cuda)
        print("diffusers:", result["diffusers"], flush=True)
        result["ours"] = _ours(root, size, steps, repeat, device)
        _free(device, cuda)
    ours = result["ours"]
    print("ours:", {k: v for k, v in ours.items()
                    if k not in ("kernels", "by_phase", "host_top")})
    for name, k in ours["kernels"].items():
        print(f"  {name}: {k['calls']} calls, {k['ms']:.1f} ms")
    for phase_name, part in ours["by_phase"].items():
        print(f"{phase_name}: wall {part['wall_s']:.3f} s, kernels {part['kernel_ms']:.1f} ms")
        for name, k in part["kernels"].items():
            print(f"  {name}: {k['calls']} calls, {k['ms']:.1f} ms")
    print("\n".join(ours["host_top"]))
    if args.json:
        _harness.write_json(args.json, result)


if __name__ == "__main__":
    main()
