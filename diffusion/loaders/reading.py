"""Reading weights on threads: a tensor's stored values cast to the model's dtype piece by
piece (no host copy of the stored values), and the next tensors of a load read ahead while
the caller uploads the current one.

Why: a second cold process of SD 1.5 (float32 files, float16 model) spent 0.84 s reading
each tensor into a fresh array and 1.42 s converting it, one tensor after another on the
main thread, the upload waiting for both; a fifth of the weights are in tensors too small
for `weights.convert` to split. Here the pieces of one tensor and whole tensors ahead run on
threads (numpy and the file reads let go of the GIL), and each piece goes from the file into
a small buffer the thread keeps, and from there, cast, into the result.

The values are numpy's own casts (`np.copyto`), element by element, so the result is bit for
bit `read(key).astype(dtype)` however the pieces fall.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Generator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np

from gpucore import phase, work_while_waiting

from .errors import WeightsError

__all__ = ["AHEAD_BYTES", "AHEAD_THREADS", "PIECE", "PIECE_THREADS", "read_ahead", "read_cast",
           "read_into"]

# Stored bytes a piece (the buffer each thread keeps); a tensor smaller than that is one piece
# on the calling thread. The pieces of all tensors share PIECE_THREADS threads.
PIECE = 1 << 21
PIECE_THREADS = max(1, min(8, os.cpu_count() or 1))
# Tensors read ahead of the one being uploaded: at most AHEAD_THREADS at once, and results
# of at most AHEAD_BYTES waiting (at least one tensor), so a load peaks near the weights'
# size plus that. On an H100 host (16 cores, SD 1.5 float32 files to float16) 4 threads and
# 24 MiB left the upload waiting 0.83-1.04 s for the reads, 8 threads and 96 MiB 0.62-0.67 s
# (16 piece threads: 0.30-0.32 s, but the upload itself, 0.47-0.61 s, then took 0.70).
AHEAD_THREADS = max(1, min(8, os.cpu_count() or 1))
AHEAD_BYTES = 96 << 20

T = TypeVar("T")
_pools: dict[str, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()
_scratch = threading.local()  # .buffer: this thread's piece buffer


def _pool(name: str, workers: int) -> ThreadPoolExecutor:
    with _pools_lock:
        if name not in _pools:
            _pools[name] = ThreadPoolExecutor(workers, thread_name_prefix=f"weights-{name}")
        return _pools[name]


def _buffer(nbytes: int) -> np.ndarray:
    """This thread's piece buffer, its first `nbytes` (pages touched once, then reused)."""
    buffer = getattr(_scratch, "buffer", None)
    if buffer is None or buffer.size < nbytes:
        buffer = _scratch.buffer = np.empty(max(nbytes, PIECE), np.uint8)
    return buffer[:nbytes]


def _read_at(path: Path, fd: int, offset: int, into: np.ndarray) -> int:
    """Read len(into) bytes at `offset` of the file (`fd` where os.preadv exists, else
    `path` opened again); the number read."""
    if hasattr(os, "preadv"):
        got = 0
        while got < into.size:  # preadv may return less than asked before the end
            n = os.preadv(fd, [into[got:].data], offset + got)
            if n <= 0:
                break
            got += n
        return got
    with open(path, "rb", buffering=0) as file:
        file.seek(offset)
        return file.readinto(into.data) or 0


def _in_pieces(path: Path, starts: range, piece: Callable[[int, int], None], what: str
               ) -> None:
    """`piece(fd, start)` for each of `starts` (`fd`: `path` open for reading where os.preadv
    exists, else -1): the first on this thread, the others on PIECE_THREADS threads. OSError
    becomes WeightsError naming `what`; every piece has stopped before the file is closed."""
    binary = getattr(os, "O_BINARY", 0)
    try:
        fd = os.open(path, os.O_RDONLY | binary) if hasattr(os, "preadv") else -1
    except OSError as error:
        raise WeightsError(f"{path}: cannot read tensor {what}: {error}") from error
    others: list[Future[None]] = []
    try:
        if len(starts) > 1:
            pool = _pool("pieces", PIECE_THREADS)
            others = [pool.submit(piece, fd, start) for start in starts[1:]]
        if starts:
            piece(fd, starts[0])
        for done in others:
            done.result()
    except OSError as error:
        raise WeightsError(f"{path}: cannot read tensor {what}: {error}") from error
    finally:
        for done in others:  # none may still read from fd once it is closed
            done.cancel()
        for done in others:
            if not done.cancelled():
                done.exception()
        if fd >= 0:
            os.close(fd)


def _ended(path: Path, what: str) -> WeightsError:
    return WeightsError(f"{path}: file ended inside tensor {what} (it changed or was "
                        "truncated after opening); re-download or re-save it")


def read_cast(path: Path, offset: int, stored: np.dtype, count: int, dtype: np.dtype, *,
              widen: Callable[[np.ndarray], np.ndarray] | None = None, what: str
              ) -> np.ndarray:
    """`count` values of `stored` dtype at byte `offset` of `path`, as a new 1-D array of
    `dtype` (`widen` first turns stored values into ones numpy casts, bfloat16's bits into
    float32). Pieces of PIECE bytes on threads. numpy:
    `np.fromfile(path, stored, count, offset=offset).astype(dtype)`. WeightsError naming
    `what` when the file ends early or cannot be read."""
    out = np.empty(count, dtype)
    per = max(1, PIECE // stored.itemsize)

    def piece(fd: int, start: int) -> None:
        n = min(per, count - start)
        raw = _buffer(n * stored.itemsize)
        if _read_at(path, fd, offset + start * stored.itemsize, raw) != raw.size:
            raise _ended(path, what)
        values = raw.view(stored)
        np.copyto(out[start:start + n], values if widen is None else widen(values))

    _in_pieces(path, range(0, count, per), piece, what)
    return out


def read_into(path: Path, offset: int, into: np.ndarray, *, what: str) -> None:
    """Fill `into` (a writable 1-D uint8 array: a mapped staging slot) with the bytes at
    `offset` of `path`, pieces of PIECE bytes on threads, each read straight into its place
    (no buffer between). numpy: `into[:] = np.fromfile(path, np.uint8, into.size,
    offset=offset)`. WeightsError naming `what` when the file ends early or cannot be
    read."""
    def piece(fd: int, start: int) -> None:
        part = into[start:start + PIECE]
        if _read_at(path, fd, offset + start, part) != part.size:
            raise _ended(path, what)

    _in_pieces(path, range(0, into.size, PIECE), piece, what)


def read_ahead(read: Callable[[str], T], keys: Sequence[str],
               nbytes: Callable[[str], int]) -> Generator[T, None, None]:
    """`read(key)` for each of `keys`, in order, the next ones read on AHEAD_THREADS threads
    while the caller works on the current one (no more than AHEAD_BYTES of `nbytes(key)`
    read ahead). Time waiting for a result counts as phase "read wait". A failed read raises
    its error when its turn comes; what was read ahead is dropped when the caller stops."""
    pool = _pool("ahead", AHEAD_THREADS)
    pending: deque[tuple[Future[T], int]] = deque()
    ahead = 0  # bytes of the pending reads
    upcoming = iter(keys)
    following = next(upcoming, None)
    try:
        current: Future[T] | None = None
        while current is not None or pending or following is not None:
            if current is None:
                if not pending:  # nothing ahead: this one is read now
                    assert following is not None
                    pending.append((pool.submit(read, following), 0))
                    following = next(upcoming, None)
                current, size = pending.popleft()
                ahead -= size
            # the next ones begin while this one is waited for and used
            while following is not None and len(pending) < AHEAD_THREADS:
                size = nbytes(following)
                if pending and ahead + size > AHEAD_BYTES:
                    break
                pending.append((pool.submit(read, following), size))
                ahead += size
                following = next(upcoming, None)
            with phase("read wait"):  # kernel builds put off begin meanwhile (Dawn)
                while not current.done() and work_while_waiting():
                    pass
                value = current.result()
            current = None
            yield value
            del value
    finally:
        for future, _ in pending:
            future.cancel()
        for future, _ in pending:
            if not future.cancelled():
                future.exception()
