"""python -m bench.firstdispatch: CPU seconds of each kernel's first dispatch (issue 51).

    python -m bench.firstdispatch OUT.json txt2img --prompt "a red circle" --seed 7

runs `python -m diffusion` with the arguments after OUT.json, and around the first dispatch
of every kernel on a device waits for the queue before and after it, noting the process's CPU
seconds (every thread's: user + sys) and the wall time between. On a CPU adapter (lavapipe)
that is llvmpipe turning the kernel into machine code at its first dispatch, plus one run of
it; on GPUs mostly the pipeline's creation. Meant for a fresh process whose caches
(AVX_GPU_CACHE_DIR, MESA_SHADER_CACHE_DIR) are empty folders of its own. The waits change
when work runs, not what it computes: the pictures are the same. OUT.json lists the kernels
costliest first, with their label, override constants and grid; the total and the process's
CPU seconds are printed.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["main", "traced"]


def traced(run: Callable[[], Any]) -> tuple[Any, list[dict[str, Any]]]:
    """run()'s result and a record per kernel first dispatched on each device while it ran:
    {"label", "constants", "grid", "cpu_s", "wall_s"}, in the order they were first seen."""
    from gpucore import Kernel

    records: list[dict[str, Any]] = []
    seen: set[tuple[int, Any]] = set()
    original = Kernel.dispatch

    def dispatch(self: Kernel, workgroups: Any, *buffers: Any, device: Any = None,
                 **params: Any) -> None:
        target = device or (buffers[0].device if buffers else None)
        key = (id(target), self._key)
        if target is None or key in seen:
            return original(self, workgroups, *buffers, device=device, **params)
        seen.add(key)
        target.synchronize()
        cpu, wall = time.process_time(), time.perf_counter()
        original(self, workgroups, *buffers, device=device, **params)
        target.synchronize()
        records.append({"label": self.label, "constants": dict(self.constants),
                        "grid": workgroups, "cpu_s": round(time.process_time() - cpu, 4),
                        "wall_s": round(time.perf_counter() - wall, 4)})
        return None

    Kernel.dispatch = dispatch  # type: ignore[method-assign]
    try:
        return run(), records
    finally:
        Kernel.dispatch = original  # type: ignore[method-assign]


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[0].startswith("-"):
        sys.exit("usage: python -m bench.firstdispatch OUT.json COMMAND [ARGS...] "
                 "(a `python -m diffusion` command, e.g. txt2img --seed 7)")
    from diffusion.cli.main import main as diffusion_main

    status, records = traced(lambda: diffusion_main(argv[1:]))
    records.sort(key=lambda r: -r["cpu_s"])
    total = sum(r["cpu_s"] for r in records)
    Path(argv[0]).write_text(json.dumps({"command": argv[1:], "kernels": records,
                                         "first_dispatches_cpu_s": round(total, 3),
                                         "process_cpu_s": round(time.process_time(), 3)},
                                        indent=1))
    print(f"{len(records)} kernels: first dispatches {total:.2f} s of CPU, the process "
          f"{time.process_time():.2f} s", file=sys.stderr)
    sys.exit(status)


if __name__ == "__main__":
    main(sys.argv[1:])
