"""Where Real-ESRGAN x4plus's time goes on our kernels: each distinct layer of RRDBNet (64
features, growth 32, 23 blocks) at the benchmark's 512x512 timed alone, times how often the
network runs it, beside torch's time for the same layer (cuDNN, when CUDA is there).

    python3 -m tools.upscale_profile                     # float16 where the device has it
    python3 -m tools.upscale_profile --dtype float32 --size 512
    python3 -m tools.upscale_profile --size 24 --blocks 1 --features 8   # a smoke run

Prints one row per layer kind, largest total first, and the sum; compare it with `bench
upscale`'s ours_gpu_ms for the whole network (204 ms in f16 on an H100, 2026-11-26; spandrel
105 ms). The layers are timed as separate ops (concatenations, LeakyReLU passes), which the
network itself now fuses (tools/upscale_lab.py A/Bs that). Not a test: it only times.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Callable
from typing import Any

import numpy as np

import gpucore
import gpustd
from bench import _harness
from diffusion.models.esrgan import leaky_relu
from gpustd.nn import concat, conv2d, upsample_nearest2x


def layers(size: int, features: int, growth: int, blocks: int) -> list[tuple[str, int, tuple]]:
    """(kind, count, shape) of RRDBNet x4: conv shapes are (c_in, c_out, side)."""
    rows: list[tuple[str, int, tuple]] = [("conv", 1, (3, features, size))]
    rdbs = 3 * blocks
    for k in range(4):
        rows.append(("conv+lrelu", rdbs, (features + k * growth, growth, size)))
        rows.append(("concat", rdbs, (features + k * growth, growth, size)))
    rows += [("conv", rdbs, (features + 4 * growth, features, size)),
             ("residual", rdbs + blocks, (features, 0, size)),
             ("conv", 1, (features, features, size))]
    for side in (2 * size, 4 * size):
        rows += [("upsample", 1, (features, 0, side // 2)),
                 ("conv+lrelu", 1, (features, features, side))]
    rows += [("conv+lrelu", 1, (features, features, 4 * size)),
             ("conv", 1, (features, 3, 4 * size))]
    return rows


def _ours(kind: str, shape: tuple, dtype: Any, device: gpucore.Device) -> Callable[[], Any]:
    c_in, c_out, side = shape
    rng = np.random.default_rng(0)

    def tensor(*dims: int) -> Any:
        return gpustd.asarray((rng.standard_normal(dims) * 0.1).astype(dtype), device=device)

    x = tensor(1, c_in, side, side)
    if kind.startswith("conv"):
        weight, bias = tensor(c_out, c_in, 3, 3), tensor(c_out)
        if kind == "conv":
            return functools.partial(conv2d, x, weight, bias, padding=1)
        return lambda: leaky_relu(conv2d(x, weight, bias, padding=1))
    if kind == "concat":
        y = tensor(1, c_out, side, side)
        return functools.partial(concat, [x, y])
    if kind == "residual":
        y = tensor(1, c_in, side, side)
        return lambda: x + y * 0.2
    return functools.partial(upsample_nearest2x, x)


def _torch(kind: str, shape: tuple, half: bool) -> Callable[[], Any] | None:
    import torch

    if not torch.cuda.is_available():
        return None
    c_in, c_out, side = shape
    dtype = torch.float16 if half else torch.float32
    x = torch.randn(1, c_in, side, side, device="cuda", dtype=dtype)
    if kind.startswith("conv"):
        conv = torch.nn.Conv2d(c_in, c_out, 3, padding=1).to("cuda", dtype)
        act = torch.nn.LeakyReLU(0.2) if kind == "conv+lrelu" else torch.nn.Identity()
        return lambda: act(conv(x))
    if kind == "concat":
        y = torch.randn(1, c_out, side, side, device="cuda", dtype=dtype)
        return lambda: torch.cat([x, y], 1)
    if kind == "residual":
        return lambda: x + x * 0.2
    return lambda: torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dtype", choices=("float16", "float32"), default=None)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--features", type=int, default=64)
    parser.add_argument("--blocks", type=int, default=23)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args(argv)
    device = gpucore.default_device()
    dtype = np.dtype(args.dtype or ("float16" if device.has_f16 else "float32"))
    torch_ms: Callable[..., float] | None = None
    if _harness.torch_cuda():
        import torch

        torch.backends.cudnn.allow_tf32 = False
        torch_ms = functools.partial(_harness.torch_cuda_ms, repeat=args.repeat)
    print(f"{device.info.label}, {dtype.name}, RRDBNet x4 {args.size}² "
          f"({args.features} features, {args.blocks} blocks)")
    print(f"{'layer':11} {'c_in':>5} {'c_out':>5} {'side':>5} {'count':>5} {'ms each':>9} "
          f"{'ms total':>9} {'torch each':>10} {'torch total':>11}")
    total = torch_total = 0.0
    rows = []
    growth = args.features // 2
    for kind, count, shape in layers(args.size, args.features, growth, args.blocks):
        timing = _harness.ours_ms(_ours(kind, shape, dtype, device), device, warmup=2,
                                  repeat=args.repeat)
        each = timing["gpu_ms"] if np.isfinite(timing["gpu_ms"]) else timing["wall_ms"]
        theirs = _torch(kind, shape, dtype == np.float16) if torch_ms else None
        their_each = torch_ms(theirs) if torch_ms and theirs else float("nan")
        rows.append((each * count, kind, shape, count, each, their_each))
        total += each * count
        torch_total += their_each * count if np.isfinite(their_each) else 0.0
    for spent, kind, (c_in, c_out, side), count, each, their_each in sorted(rows, reverse=True):
        print(f"{kind:11} {c_in:5} {c_out:5} {side:5} {count:5} {each:9.3f} {spent:9.1f} "
              f"{their_each:10.3f} {their_each * count:11.1f}")
    print(f"sum of layers: ours {total:.1f} ms, torch {torch_total:.1f} ms")


if __name__ == "__main__":
    main()
