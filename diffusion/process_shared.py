"""One cache per process for what a server job carries to a worker process.

The multi-process server (diffusion.server.jobs.processes) pickles each job, and with it the
caches it refers to (the control models, the face restorers, ADetailer's detectors, the
interrogators). A cache unpickled as a fresh object would read its networks again for every
job; one whose `__reduce__` is `(process_shared, (type(self), *args))` becomes, in the process
that runs the job, that process's own cache of those arguments: what it loaded stays on that
process's GPU for the next job, its lock (which never pickles) is not sent, and the server's
unload-checkpoint, a job too, forgets that same cache. A cache's device is not sent either:
there it is the process's default, its one GPU. In the thread server nothing is pickled: the
jobs use the server's caches themselves.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from typing import Any, TypeVar

__all__ = ["process_shared"]

T = TypeVar("T")
_SHARED: dict[tuple[Any, ...], Any] = {}
_LOCK = threading.Lock()


def process_shared(kind: type[T], *args: Hashable) -> T:
    """This process's `kind(*args)`, made by the first call with these arguments."""
    key = (kind, *args)
    with _LOCK:
        if key not in _SHARED:
            _SHARED[key] = kind(*args)
        return _SHARED[key]  # type: ignore[no-any-return]
