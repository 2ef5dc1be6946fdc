"""diffusion.loaders.weights.convert: a weight's dtype conversion split over threads gives
numpy's astype's values bit for bit (rounding, NaN, inf, subnormals, overflow)."""

from __future__ import annotations

import numpy as np
import pytest

from diffusion.loaders import weights


@pytest.mark.nodevice
@pytest.mark.parametrize("shape", [(1000003,), (3, 517, 1291), (2, 1)])
@pytest.mark.parametrize("target", [np.float16, np.float32])
def test_convert_matches_astype(shape: tuple[int, ...], target: type,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "PARALLEL_MIN", 1000)  # split even these
    rng = np.random.default_rng(sum(shape))
    array = (rng.standard_normal(shape) * rng.choice([1e-6, 1, 300, 1e5], size=shape))
    flat = array.reshape(-1)
    special = [np.nan, np.inf, -np.inf, 6.1e-8]  # NaN, infinities, a float16 subnormal
    flat[:len(special)] = special[:flat.size]
    for source in (array, array.astype(np.float32)):
        got = weights.convert(source, np.dtype(target))
        want = source.astype(target)
        assert got.dtype == want.dtype and got.shape == want.shape
        np.testing.assert_array_equal(got.view(np.uint8), want.view(np.uint8))
    transposed = array.astype(np.float32).T  # not contiguous: converted in one piece
    np.testing.assert_array_equal(weights.convert(transposed, np.dtype(target)),
                                  transposed.astype(target))
    same = array.astype(target)
    assert weights.convert(same, np.dtype(target)) is same  # nothing to do, no copy
