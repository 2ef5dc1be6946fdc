"""python -m bench flatness: host and device memory over many pictures from one server.

The server (`create_app`, the bundled model unless BENCH_FLAT_MODEL names one) in this
process, driven through its HTTP API one request at a time: BENCH_FLAT_PICTURES txt2img
pictures (1000; --quick 30) at BENCH_FLAT_SIZE pixels (64), 4 steps, the seed new each time
and three prompts in turn. Every BENCH_FLAT_EVERY pictures (10; --quick 5) it samples this
process's RSS and the device pool's allocated and reserved bytes (/sdapi/v1/memory, taken
while the worker is idle). Flat, after the warm-up (the first BENCH_FLAT_WARMUP pictures, 100;
--quick 10): allocated and reserved bytes never above their first sample after it, and the
RSS of the last quarter of the samples within BENCH_FLAT_RSS_MIB (32) of the first quarter's
(medians: Python's allocator and the OS page in and out in steps). Runs anywhere: on CPU
(lavapipe) 1000 pictures take tens of minutes.

    python -m bench flatness --json bench/results/flatness-lavapipe.json
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from .load import _env, host_rss_mib

__all__ = ["measure", "run"]

PROMPTS = ("a red circle on a blue background", "a green square", "two yellow triangles")


def measure(post: Callable[[str, dict[str, Any]], Any], get: Callable[[str], Any], *,
            pictures: int, every: int, warmup: int, size: int = 64, steps: int = 4,
            rss_mib: float = 32.0) -> dict[str, Any]:
    """Make `pictures` pictures through `post(path, json)` (an HTTP client's, returning the
    response) and sample memory every `every` of them with `get(path)`; returns the samples
    (picture, rss MiB, allocated and reserved bytes), the growths after `warmup` and `flat`."""
    samples: list[tuple[int, float, int, int]] = []
    start = time.perf_counter()
    for number in range(1, pictures + 1):
        body = {"prompt": PROMPTS[number % len(PROMPTS)], "seed": number, "steps": steps,
                "width": size, "height": size}
        response = post("/sdapi/v1/txt2img", body)
        if response.status_code != 200:
            raise RuntimeError(f"picture {number}: {response.status_code} {response.text}")
        if number % every == 0 or number == pictures:
            cuda = get("/sdapi/v1/memory").json()["cuda"]
            samples.append((number, host_rss_mib(os.getpid()), cuda["allocated"]["current"],
                            cuda["reserved"]["current"]))
    seconds = time.perf_counter() - start
    after = [s for s in samples if s[0] >= warmup] or samples[-1:]
    quarter = max(1, len(after) // 4)
    rss_growth = (statistics.median(s[1] for s in after[-quarter:])
                  - statistics.median(s[1] for s in after[:quarter]))
    allocated_growth = max(s[2] for s in after) - after[0][2]
    reserved_growth = max(s[3] for s in after) - after[0][3]
    return {"pictures": pictures, "seconds": seconds, "samples": samples,
            "rss_growth_mib": rss_growth, "allocated_growth": allocated_growth,
            "reserved_growth": reserved_growth,
            "flat": rss_growth <= rss_mib and allocated_growth <= 0 and reserved_growth <= 0}


def run(*, quick: bool = False) -> dict[str, Any]:
    from fastapi.testclient import TestClient

    from diffusion.server import create_app

    pictures = int(_env("BENCH_FLAT_PICTURES", "30" if quick else "1000"))
    every = int(_env("BENCH_FLAT_EVERY", "5" if quick else "10"))
    warmup = int(_env("BENCH_FLAT_WARMUP", "10" if quick else "100"))
    size = int(_env("BENCH_FLAT_SIZE", "64"))
    rss_mib = float(_env("BENCH_FLAT_RSS_MIB", "32"))
    with tempfile.TemporaryDirectory(prefix="bench-flatness-") as outputs:
        app = create_app(model=os.environ.get("BENCH_FLAT_MODEL"), outputs=outputs)
        try:
            with TestClient(app) as client:
                result = measure(lambda path, body: client.post(path, json=body), client.get,
                                 pictures=pictures, every=every, warmup=warmup, size=size,
                                 rss_mib=rss_mib)
        finally:
            app.state.worker.stop()
    first, last = result["samples"][0], result["samples"][-1]
    row = {"pictures": pictures, "size": size, "warm-up": warmup,
           "images/s": round(pictures / result["seconds"], 2),
           "RSS MiB": f"{first[1]:.0f} -> {last[1]:.0f}",
           "RSS growth MiB": round(result["rss_growth_mib"], 1),
           "allocated MiB": f"{first[2] / 2**20:.1f} -> {last[2] / 2**20:.1f}",
           "allocated growth": result["allocated_growth"],
           "reserved growth": result["reserved_growth"], "flat": result["flat"]}
    return {"benchmark": "flatness", "rows": [row], "columns": list(row),
            "samples": [list(s) for s in result["samples"]]}
