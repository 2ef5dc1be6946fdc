"""Blur, edge-detect and resize an image on the GPU; check each against scipy/Pillow.

    python examples/image_filter.py [photo.png] [--size 512] [--sigma 2] [--out DIR]

Without a path, a test image of shapes and gradients is drawn. Results go to --out
(default ./out/image_filter) as input.png, blur.png, edges.png and resized.png. Exits 1 when
a GPU result disagrees with the reference. Set AVX_EXAMPLE_SMALL=1 for a quick run (the test
suite does). GPUCORE_BACKEND / GPUCORE_ADAPTER pick the adapter.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

import gpucore
from gpustd import Tensor, image


def synthesize(height: int, width: int) -> np.ndarray:
    """An RGB uint8 test picture: diagonal gradient, a disc, a ring, a bar and fine stripes."""
    y, x = np.mgrid[0:height, 0:width] / np.array([height, width])[:, None, None]
    rgb = np.stack([x, y, 1.0 - (x + y) / 2], axis=-1) * 180
    disc = (x - 0.3) ** 2 + (y - 0.35) ** 2 < 0.04
    ring = np.abs(np.hypot(x - 0.7, y - 0.6) - 0.18) < 0.03
    rgb[disc] = (250, 220, 40)
    rgb[ring] = (30, 60, 240)
    rgb[(np.abs(y - 0.85) < 0.05) & (x > 0.1) & (x < 0.9)] = (240, 240, 240)
    stripes = (x > 0.05) & (x < 0.25) & (y > 0.6) & (y < 0.75)
    rgb[stripes] *= (np.arange(width) // 2 % 2)[None, :].repeat(height, 0)[stripes, None]
    return rgb.astype(np.uint8)


def save_png(array: np.ndarray, path: Path) -> None:
    """Write atomically: a reader never sees half a file, even if we are interrupted."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(array).save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def timed(fn: Callable[[], Any], device: gpucore.Device) -> tuple[Any, float]:
    """(result, seconds) of the second call: the first compiles the pipelines."""
    fn()
    device.synchronize()
    start = time.perf_counter()
    result = fn()
    device.synchronize()
    return result, time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    small = os.environ.get("AVX_EXAMPLE_SMALL") == "1"
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", help="a PNG/JPEG to filter (default: drawn)")
    parser.add_argument("--size", type=int, default=48 if small else 512,
                        help="height of the drawn image (48 with AVX_EXAMPLE_SMALL=1)")
    parser.add_argument("--sigma", type=float, default=2.0, help="blur standard deviation")
    parser.add_argument("--out", type=Path, default=Path("out/image_filter"))
    args = parser.parse_args(argv)
    if args.size < 1 or not args.sigma > 0:
        parser.error("--size and --sigma must be positive")
    if args.path:
        try:
            with Image.open(args.path) as im:
                rgb = np.asarray(im.convert("RGB"))
        except OSError as exc:  # missing, unreadable, or not an image Pillow knows
            parser.error(f"cannot read {args.path}: {exc}")
    else:
        rgb = synthesize(args.size, args.size * 5 // 4 + 1)
    try:
        return run(gpucore.default_device(), rgb, args.sigma, args.out)
    except gpucore.GpuError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def run(device: gpucore.Device, rgb: np.ndarray, sigma: float, out: Path) -> int:
    print(f"device: {device.info.label}")
    h, w, _ = rgb.shape
    print(f"image: {h}x{w} RGB")
    gray = rgb.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
    gray_gpu = Tensor.from_numpy(gray, device=device)
    size = (max(1, h // 2 + 1), max(1, w * 2 // 3))

    blur, t_blur = timed(lambda: image.gaussian_blur(rgb, sigma, device=device), device)
    edges, t_edges = timed(lambda: image.sobel(gray_gpu).numpy(), device)
    resized, t_resize = timed(
        lambda: image.resize(rgb, size, method="bicubic", device=device), device)
    print(f"gaussian_blur sigma={sigma}: {t_blur * 1e3:8.2f} ms (uint8, incl. transfers)")
    print(f"sobel (float32 gray):    {t_edges * 1e3:8.2f} ms (incl. read-back)")
    print(f"resize bicubic -> {size[0]}x{size[1]}: {t_resize * 1e3:8.2f} ms (uint8)")

    radius = int(np.ceil(3 * sigma))
    ref_blur = np.stack([ndimage.gaussian_filter(rgb[..., c].astype(np.float64), sigma,
                                                 radius=radius) for c in range(3)], axis=-1)
    g = gray.astype(np.float64)
    ref_edges = np.hypot(ndimage.sobel(g, 0), ndimage.sobel(g, 1))
    ref_resized = np.asarray(Image.fromarray(rgb).resize(size[::-1], Image.Resampling.BICUBIC))
    errors = {
        "blur (uint8 steps from scipy)": np.abs(blur - ref_blur).max(),
        "edges (relative to scipy)": np.abs(edges - ref_edges).max() / ref_edges.max(),
        "resize (uint8 steps from Pillow)": np.abs(resized.astype(int) - ref_resized).max(),
    }
    limits = [0.5 + 1e-3, 1e-5, 0]
    failed = False
    for (name, err), limit in zip(errors.items(), limits):
        ok = err <= limit
        failed |= not ok
        print(f"  {name}: {err:.3g} {'ok' if ok else f'MISMATCH (limit {limit})'}")

    out.mkdir(parents=True, exist_ok=True)
    scale = 255.0 / max(float(edges.max()), 1e-12)
    for name, array in [("input", rgb), ("blur", blur), ("resized", resized),
                        ("edges", np.clip(edges * scale, 0, 255).astype(np.uint8))]:
        save_png(array, out / f"{name}.png")
    print(f"wrote {out}/{{input,blur,edges,resized}}.png")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
