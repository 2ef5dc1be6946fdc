"""gpustd on Dask: dask.array graphs whose chunks are gpustd Tensors, run by a
`dask.distributed` cluster whose workers each own a GPU.

    import dask.array as da
    from gpustd import dask as gd

    with gd.local_cluster() as cluster, Client(cluster):    # one worker process per GPU
        x = gd.to_gpu(da.random.random((8192, 8192), chunks=2048))  # chunks become Tensors
        y = gd.to_numpy(x @ x).compute()                     # blocked matmul on the workers

What Dask calls on a chunk — `np.matmul`, `np.tensordot`, `np.concatenate`, `np.sum` and the
other reductions, ufuncs (`np.add`, `np.exp`, ...), `np.fft.fft` along an unchunked axis,
basic slicing — Tensor answers through numpy's protocols (gpustd._numpy_api), so a chunk stays
on its worker's GPU from `to_gpu` to `to_numpy`. Chunks that move between workers travel as
numpy data (Tensor pickles as its host copy and unpickles onto the receiver's default device).

A worker's GPU is its process's default device: `GPUCORE_ADAPTER` (an index or a name from
`python -m gpucore info`) set per worker, as `local_cluster` does, or on the command line of
each `dask worker` (`GPUCORE_ADAPTER=1 dask worker tcp://scheduler:8786 --nthreads 1`).
One thread per worker: a worker's tasks then reach its GPU one at a time, in order.

Importing this module registers Tensor with Dask (`register_chunk_type`, the concatenate and
tensordot dispatch, `sizeof`); it needs `pip install avx-gpu[dask]`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

try:
    import dask.array as da
    from dask.array.dispatch import concatenate_lookup, tensordot_lookup
    from dask.sizeof import sizeof
except ImportError as exc:  # optional extra: say how to get it
    raise ImportError("gpustd.dask needs Dask: `pip install avx-gpu[dask]` (dask[array] and "
                      "distributed)") from exc

from gpucore import select_adapters

from ._numpy_api import tensordot
from ._tensor import Tensor
from .shape import concatenate

__all__ = ["gpu_dtype", "local_cluster", "to_gpu", "to_numpy"]

da.register_chunk_type(Tensor)
concatenate_lookup.register(Tensor)(concatenate)
tensordot_lookup.register(Tensor)(tensordot)
sizeof.register(Tensor)(lambda t: int(t.nbytes))

# What Tensor.from_numpy stores a host dtype as (GPUs rarely have the wide types).
_GPU_DTYPES = {np.dtype(np.float64): np.dtype(np.float32), np.dtype(np.int64): np.dtype(np.int32),
               np.dtype(np.complex128): np.dtype(np.complex64),
               np.dtype(np.bool_): np.dtype(np.uint32)}


def gpu_dtype(dtype: Any) -> np.dtype:
    """The dtype a chunk of `dtype` has on the GPU (float64 -> float32, int64 -> int32, ...)."""
    return _GPU_DTYPES.get(np.dtype(dtype), np.dtype(dtype))


def _upload(block: np.ndarray) -> Tensor:
    return Tensor.from_numpy(block)  # onto this worker's default device


def _download(block: Any) -> np.ndarray:
    return block.numpy() if isinstance(block, Tensor) else np.asarray(block)


def _meta(ndim: int, dtype: Any) -> np.ndarray:
    # Dask's metadata stays numpy: it only carries dtype and ndim, and a Tensor meta would
    # need a GPU on the client, which may have none.
    return np.empty((0,) * ndim, dtype)


def to_gpu(x: Any) -> da.Array:
    """`x` (a dask array, or anything `da.asarray` takes) with every chunk copied to the GPU
    of the worker that computes it: a dask array of gpustd Tensors, dtype as `gpu_dtype`.
    cupy's way: `x.map_blocks(cupy.asarray)`."""
    x = da.asarray(x)
    dtype = gpu_dtype(x.dtype)
    return x.map_blocks(_upload, dtype=dtype, meta=_meta(x.ndim, dtype))


def to_numpy(x: da.Array) -> da.Array:
    """`x` with every chunk read back to host memory on its worker, so `compute()` gathers
    numpy arrays (the client needs no GPU). cupy's way: `x.map_blocks(cupy.asnumpy)`."""
    # dask's Array.map_blocks is `@wraps(map_blocks)`, so typeshed gives the method the free
    # function's signature (func, *arrays): the call is right, the stub's view of it is not.
    return x.map_blocks(_download, dtype=x.dtype,  # type: ignore[call-arg, arg-type]
                        meta=_meta(x.ndim, x.dtype))


def local_cluster(adapters: str | Sequence[int | str] = "all", **scheduler: Any) -> Any:
    """A `dask.distributed` cluster on this machine with one single-threaded worker process
    per GPU, worker i pinned with `GPUCORE_ADAPTER` to the i-th of `adapters`: "all" (every
    GPU once, as `gpucore.open_devices` reads it), or indices / names from `python -m gpucore
    info` (one may repeat: two workers on one GPU). Use it as `LocalCluster`:
    `with local_cluster() as cluster, Client(cluster): ...`. Keyword arguments go to the
    scheduler (its dashboard is off unless `dashboard_address` says where)."""
    from distributed import Nanny, Scheduler, SpecCluster

    if isinstance(adapters, str) and adapters.strip().lower() == "all":
        chosen = [str(info.index) for info in select_adapters("all")]
    else:
        chosen = [str(a).strip() for a in ([adapters] if isinstance(adapters, (int, str))
                                           else adapters)]
    if not chosen:
        raise ValueError("local_cluster needs at least one adapter; `python -m gpucore info` "
                         "lists them")
    # On the loopback interface: a local cluster is nobody else's business
    workers = {f"gpu{i}-adapter{a}": {"cls": Nanny, "options": {
        "nthreads": 1, "host": "127.0.0.1", "silence_logs": logging.WARNING,
        "env": {"GPUCORE_ADAPTER": a}}} for i, a in enumerate(chosen)}
    return SpecCluster(workers=workers, silence_logs=logging.WARNING, scheduler={
        "cls": Scheduler, "options": {"dashboard_address": None, "host": "127.0.0.1",
                                      **scheduler}})
