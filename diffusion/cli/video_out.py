"""What txt2vid's runs (Wan's in cli.txt2vid, Kandinsky 5's in cli.txt2vid_kandinsky5) do once
the pipeline has made a video: the step cache's summary and, with --verbose, the memory line
on stderr; the frames checked (NaN is an error, not black) and written; the path on stdout."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..pipelines.video.files import write_video
from .memory import memory_line


def finish_video(pipe: Any, videos: Any, cache: Any, out: Path, fps: float,
                 verbose: bool) -> int:
    """Report and write the first video of `videos` (the pipeline's float frames); 0."""
    from ..pipelines.finite import pictures_uint8

    if cache is not None:
        print(f"cache: {cache.summary()}", file=sys.stderr)
    if verbose:  # from_pretrained's device: the default one
        import gpucore

        print(memory_line(gpucore.default_device(), pipe.memory_mode), file=sys.stderr)
    frames = np.stack(pictures_uint8(videos[0]))
    print(write_video(frames, out, fps), flush=True)
    return 0
