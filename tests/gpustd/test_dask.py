"""gpustd.dask: dask.array graphs of gpustd Tensor chunks, against numpy.

One in-process run (Dask's synchronous scheduler, the default device) of every chunk function
Dask calls, and one run on a `local_cluster` of two worker processes (each opens its own
device on the first adapter): a blocked matmul and a batched FFT.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from support import assert_close as _assert_close
from support import random_array

import gpucore
from gpustd import _tensor

dask = pytest.importorskip("dask", reason="gpustd.dask needs the dask extra")
da = pytest.importorskip("dask.array")
gd = pytest.importorskip("gpustd.dask")


def assert_close(actual: Any, expected: Any) -> None:
    """support.assert_close, complex values compared as (real, imaginary) pairs."""
    _assert_close(*(np.stack([np.real(v), np.imag(v)]) for v in (actual, expected)))


@pytest.fixture
def on_gpu_only(first_device: gpucore.Device,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Chunks on the first adapter's session device (its kernels compiled once for the whole
    session), and a failure when a chunk function falls back to numpy on the host."""
    def refuse(func: Any) -> Any:
        raise AssertionError(f"{getattr(func, '__name__', func)} ran on the host")
    monkeypatch.setattr(_tensor, "FALLBACK", refuse)
    monkeypatch.setattr(gpucore._default, "_default", first_device)
    with dask.config.set(scheduler="sync"):
        yield


def test_chunk_functions_dask_calls(on_gpu_only: None) -> None:
    rng = np.random.default_rng(0)
    a, b = random_array(rng, (70, 50)), random_array(rng, (50, 31))
    x = (random_array(rng, (12, 48)) + 1j * random_array(rng, (12, 48))).astype(np.complex64)
    ga = gd.to_gpu(da.from_array(a, chunks=(32, 20)))  # uneven chunks on both axes
    gb = gd.to_gpu(da.from_array(b, chunks=(20, 16)))
    gx = gd.to_gpu(da.from_array(x, chunks=(5, 48)))

    def run(graph: Any) -> np.ndarray:
        return gd.to_numpy(graph).compute()
    assert_close(run(ga @ gb), a @ b)
    assert_close(run(da.tensordot(ga, gb, axes=1)), a @ b)
    assert_close(run(da.fft.fft(gx, axis=-1)), np.fft.fft(x))
    assert_close(run(da.fft.ifft(gx, axis=-1)), np.fft.ifft(x))
    for name in ("sum", "max", "min", "mean"):
        assert_close(run(getattr(ga, name)(axis=0)), getattr(a, name)(axis=0))
        assert_close(run(getattr(ga, name)()), getattr(a, name)())
    assert_close(run(da.exp(ga) * 2 - ga / 3), np.exp(a) * 2 - a / 3)
    assert_close(run(da.maximum(ga, 0.25)), np.maximum(a, 0.25))
    assert_close(run(ga.T[5:40, 3:33]), a.T[5:40, 3:33])
    assert_close(run(da.concatenate([ga, ga * 2], axis=1)), np.concatenate([a, a * 2], 1))
    assert gd.to_gpu(np.ones(3)).dtype == np.float32  # float64 is float32 on the GPU


def test_local_cluster_blocked_matmul_and_batched_fft(first_device: gpucore.Device) -> None:
    distributed = pytest.importorskip("distributed")
    rng = np.random.default_rng(1)
    a, b = random_array(rng, (96, 80)), random_array(rng, (80, 72))
    x = (random_array(rng, (16, 64)) + 1j * random_array(rng, (16, 64))).astype(np.complex64)
    index = first_device.info.index
    with gd.local_cluster([index, index]) as cluster, distributed.Client(cluster) as client:
        ga = gd.to_gpu(da.from_array(a, chunks=(48, 40)))
        gb = gd.to_gpu(da.from_array(b, chunks=(40, 36)))
        gx = gd.to_gpu(da.from_array(x, chunks=(4, 64)))
        product, spectrum = client.compute([gd.to_numpy(ga @ gb),
                                            gd.to_numpy(da.fft.fft(gx, axis=-1))])
        assert_close(product.result(), a @ b)
        assert_close(spectrum.result(), np.fft.fft(x))
        # both workers computed chunks, each on its own GPU device
        assert len(client.run(lambda: gpucore.default_device().name)) == 2
        assert all(n > 0 for n in client.run(lambda: gpucore.default_device().buffers_created)
                   .values())


@pytest.mark.nodevice
def test_local_cluster_needs_an_adapter() -> None:
    with pytest.raises(ValueError, match="at least one adapter"):
        gd.local_cluster([])
