"""What txt2vid's runs (Wan's in cli.txt2vid, Kandinsky 5's in cli.txt2vid_kandinsky5, LTX-2's
in cli.txt2vid_ltx2) do once the pipeline has made a video: the step cache's summary and, with
--verbose, the memory line on stderr; the frames checked (NaN is an error, not black) and
written, with their audio where the model made one (an MP4's track, else a WAV beside it,
named on stderr); the path on stdout."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np

from ..pipelines.video.files import audio_beside, check_output, write_video
from .memory import memory_line


def finish_video(pipe: Any, videos: Any, cache: Any, out: Path, fps: float,
                 verbose: bool, audio: Any = None, sample_rate: int | None = None) -> int:
    """Report and write the first video of `videos` (the pipeline's float frames) with the
    first waveform of `audio` (B, channels, samples) at `sample_rate` where given; 0."""
    from ..pipelines.finite import pictures_uint8

    if cache is not None:
        print(f"cache: {cache.summary()}", file=sys.stderr)
    if verbose:  # from_pretrained's device: the default one
        import gpucore

        print(memory_line(gpucore.default_device(), pipe.memory_mode), file=sys.stderr)
    frames = np.stack(pictures_uint8(videos[0]))
    sound = None if audio is None else audio[0]
    if sound is not None and check_output(out) != "mp4":
        print(f"audio: {audio_beside(out)} (a WAV beside the frames)", file=sys.stderr)
    print(write_video(frames, out, fps, sound, sample_rate), flush=True)
    return 0
