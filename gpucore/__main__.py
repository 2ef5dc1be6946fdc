"""`python -m gpucore info`: the adapters of every runtime installed (wgpu-native, and Dawn
where `wgpudawn` is), their features, key limits and subgroup-matrix (tensor core) shapes."""

from __future__ import annotations

import argparse
import sys

from . import _adapters
from ._adapters import OPTIONAL_FEATURES, choose_adapter, devices
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m gpucore", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="list adapters with features and limits")
    p.add_argument("--check", metavar="BACKEND",
                   help="print nothing; exit 0 if an adapter of BACKEND (vulkan, gl, ...) exists")
    args = parser.parse_args(argv)
    return info(args.check)


if __name__ == "__main__":
    sys.exit(main())
