"""`ProgressBar`: the CLI's view of a running generation (an Observer)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

import numpy as np

from ..pipelines.observer import Decode, Observer

__all__ = ["ProgressBar"]


class ProgressBar(Observer):
    """An observer for `StableDiffusion.generate` (or a `progress(done, total)` callback).

    On a terminal it redraws `label  45%|#####      | 9/20 [00:05<00:06, 1.80it/s]` in place;
    elsewhere (a log, a pipe) it stays quiet until the last step and then writes one line:
    `label: 20 steps in 11.1s (1.80it/s)`. Each pass (a hires fix's second, a refiner's) is
    timed on its own.
    """

    def __init__(self, label: str, *, stream: TextIO | None = None, width: int = 24,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.label = label
        self.stream = sys.stderr if stream is None else stream
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.width = width
        self.clock = clock
        self._shown = 0  # length of the line on screen
        self._restart(clock())

    def _restart(self, start: float) -> None:
        """A pass's clock from `start`: its rate and time are its own."""
        self.start = start
        self._first: float | None = None  # when step 1 ended
        self._done, self._last = 0, start  # the last step told, and when

    def rate(self, done: int, now: float) -> float:
        """Steps per second, leaving out step 1: it includes compiling the GPU pipelines."""
        if self._first is None or done < 2 or now <= self._first:
            return done / max(now - self.start, 1e-9)
        return (done - 1) / (now - self._first)

    def on_begin(self, decode: Decode, latent_space: str = "") -> None:
        """A pass with latents of its own begins after steps were told (HunyuanImage 2.1's
        refiner): its clock. (Before the first pass the clock runs from the bar's making.)"""
        if self._done:
            self._restart(self.clock())

    def on_step(self, done: int, total: int, latents: np.ndarray) -> None:
        self(done, total)

    def __call__(self, done: int, total: int) -> None:
        now = self.clock()
        if done < self._done:  # a pass counting from 1 again (the hires fix's second)
            self._restart(self._last)
        if self._first is None:
            self._first = now
        self._done, self._last = done, now
        rate = self.rate(done, now)
        if self.tty:
            filled = self.width * done // max(total, 1)
            bar = "#" * filled + " " * (self.width - filled)
            eta = (total - done) / rate if rate > 0 else 0.0
            line = (f"{self.label} {100 * done // max(total, 1):3d}%|{bar}| {done}/{total} "
                    f"[{_clock(now - self.start)}<{_clock(eta)}, {_speed(rate)}]")
            # pad over the previous line's tail: the ETA can get shorter
            self.stream.write("\r" + line.ljust(self._shown))
            self._shown = len(line)
            if done >= total:
                self.stream.write("\n")
                self._shown = 0
        elif done >= total:
            self.stream.write(f"{self.label}: {total} steps in {now - self.start:.1f}s "
                              f"({_speed(rate)})\n")
        self.stream.flush()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def _speed(rate: float) -> str:
    return f"{rate:.2f}it/s" if rate >= 1 or rate <= 0 else f"{1 / rate:.2f}s/it"
