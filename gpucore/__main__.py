"""`python -m gpucore info`: the adapters of every runtime installed (wgpu-native, and Dawn
where `wgpudawn` is), their features, key limits and subgroup-matrix (tensor core) shapes.

`python -m gpucore tune`: time the tunable ops' candidate kernels on the shapes the project
runs, on the default device, and cache the winners (gpucore/_autotune.py)."""

from __future__ import annotations

import argparse
import importlib
import sys

from . import _adapters, _autotune
from ._adapters import OPTIONAL_FEATURES, choose_adapter, devices
from ._default import default_device
from ._errors import GpuError

_KEY_LIMITS = (
    ("max-storage-buffer-binding-size", "storage binding"),
    ("max-buffer-size", "buffer"),
    ("max-compute-workgroup-storage-size", "workgroup mem"),
    ("max-compute-invocations-per-workgroup", "invocations"),
)


def _size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} {unit}"
        value /= 1024
    return f"{value:.0f} GiB"


def info(check: str | None = None) -> int:
    present = devices("all")
    if check is not None:
        return 0 if any(a.backend == check for a in present) else 1
    if not present:
        print("no GPU adapter found. Install a Vulkan driver: on Debian/Ubuntu "
              "`sudo apt-get install mesa-vulkan-drivers` (software lavapipe), or your GPU "
              "vendor's driver.", file=sys.stderr)
        return 1
    try:
        best: int | None = choose_adapter().index
    except GpuError as exc:  # GPUCORE_RUNTIME names a runtime without adapters
        print(f"Device.auto() would fail: {exc}", file=sys.stderr)
        best = None
    features = (*OPTIONAL_FEATURES, "subgroup-matrix")
    header = ["#", "runtime", "backend", "type", "name", *features,
              *(n for _, n in _KEY_LIMITS)]
    rows = []
    for a in present:
        marks = ["yes" if f in a.features else "-" for f in features]
        limits = [_size(a.limits.get(k, 0)) if k != _KEY_LIMITS[3][0] else str(a.limits.get(k))
                  for k, _ in _KEY_LIMITS]
        star = "*" if a.index == best else " "
        rows.append([f"{a.index}{star}", a.runtime, a.backend, a.type, a.name, *marks, *limits])
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip())
    for a in present:
        if a.matrix_configs:
            shapes = ", ".join(str(c) for c in a.matrix_configs)
            print(f"adapter {a.index} subgroup matrices: {shapes}")
    if _adapters.dawn_problem:
        print(f"dawn: {_adapters.dawn_problem}")
    print("* = Device.auto() choice (override with GPUCORE_RUNTIME / GPUCORE_BACKEND / "
          "GPUCORE_ADAPTER)")
    return 0


def tune(ops: list[str] | None, modules: list[str], list_only: bool, clear: bool) -> int:
    """The `tune` command: clear the cache, list the problems, or time them all."""
    if clear:
        removed = _autotune.clear()
        print(f"removed {len(removed)} autotune cache file(s) from {_autotune.cache_dir()}")
        return 0
    try:
        for module in modules:  # importing them registers their ops with the tuner
            importlib.import_module(module)
        device = default_device()
        problems = _autotune.problems(device, ops)
    except (ImportError, ValueError, GpuError) as exc:
        print(f"tune: {exc}", file=sys.stderr)
        return 2
    path = _autotune.cache_path(device)
    print(f"device: {device.info.label} (driver {device.info.driver or '?'})")
    if list_only:
        cached = _autotune.cached(device)
        for p in problems:
            winner = cached.get(p.op, {}).get(p.shape_class, {}).get("winner", "-")
            print(f"{p.op:<6} {p.shape_class:<36} default {p.default:<20} cached {winner:<20} "
                  f"{len(p.candidates)} candidates")
        print(f"cache: {path}{'' if path.exists() else ' (not written yet)'}")
        return 0
    results = []
    for i, p in enumerate(problems, 1):
        r = _autotune.tune(device, p)
        results.append(r)
        print(f"[{i}/{len(problems)}] {p.op} {p.shape_class}: {r.winner} {r.ms[r.winner]:.4f} ms"
              f" (default {r.default} {r.ms[r.default]:.4f} ms)", flush=True)
    print(f"\n{'op':<6} {'shape class':<36} {'default':<20} {'ms':>9} {'winner':<20} {'ms':>9} "
          f"{'x':>5}")
    for r in results:
        print(f"{r.op:<6} {r.shape_class:<36} {r.default:<20} {r.ms[r.default]:9.4f} "
              f"{r.winner:<20} {r.ms[r.winner]:9.4f} {r.ms[r.default] / r.ms[r.winner]:5.2f}")
    print(f"cache: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpucore", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="list adapters with features and limits")
    p.add_argument("--check", metavar="BACKEND",
                   help="print nothing; exit 0 if an adapter of BACKEND (vulkan, gl, ...) exists")
    p = sub.add_parser("tune", help="time candidate kernels per shape class and cache winners")
    p.add_argument("--ops", help="comma-separated ops to tune (default: all registered)")
    p.add_argument("--module", action="append", dest="modules",
                   help="module whose import registers tunable ops (default: gpustd)")
    p.add_argument("--list", action="store_true",
                   help="list the shape classes, defaults and cached winners; time nothing")
    p.add_argument("--clear", action="store_true", help="delete every cached winner")
    args = parser.parse_args(argv)
    if args.command == "tune":
        ops = args.ops.split(",") if args.ops else None
        return tune(ops, args.modules or ["gpustd"], args.list, args.clear)
    return info(args.check)


if __name__ == "__main__":
    sys.exit(main())
