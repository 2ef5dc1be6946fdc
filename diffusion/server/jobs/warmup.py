"""A model's first picture drawn before the server says it is ready (`serve`'s default;
`--no-warmup` skips it), so that the first request is as fast as the second.

The first picture of a process compiles the model's kernels and records its captures (the text
encoder's, the denoiser's at the batch of a CFG request): seconds to minutes of work that no
request should wait for. `warm_up` draws two steps at the model's native size with its
recommended sampler and CFG, which is what those depend on (a request of another size records
its captures again; the kernels stay). While the model loads, gpucore.Warmup builds the kernels
the last start used, in threads, and afterwards notes them for the next start.
"""

from __future__ import annotations

import sys
import time
from typing import Any

__all__ = ["warm_up"]

STEPS = 2


def warm_up(pipe: Any) -> float:
    """Draw one small picture with `pipe` (a diffusion.Pipeline), discarded; returns the
    seconds it took."""
    from ...pipelines.request import GenerationRequest
    from ...sampling.kdiffusion import sampler_label

    defaults, size = pipe.defaults, pipe.native_size
    request = GenerationRequest(
        prompt="a warm-up picture", steps=STEPS, seed=0, width=size, height=size,
        sampler=sampler_label(defaults.sampler or GenerationRequest.sampler),
        cfg_scale=defaults.cfg_scale if defaults.cfg_scale is not None
        else GenerationRequest.cfg_scale)
    start = time.perf_counter()
    pipe.generate(request)
    seconds = time.perf_counter() - start
    print(f"warmed up {pipe.name} in {seconds:.1f} s ({size}x{size}, {STEPS} steps: kernels "
          "built, captures recorded)", file=sys.stderr, flush=True)
    return seconds
