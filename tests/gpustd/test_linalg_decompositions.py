"""gpustd.linalg.qr and svd against float64 numpy on every adapter: reconstruction relative to
||A||, orthogonality of Q / U / V, R and S against numpy, numpy's shapes, and bad input."""

from __future__ import annotations

import numpy as np
import pytest

import gpucore
from gpustd import Tensor, _svd, linalg

# Not multiples of any tile; 64 x 64 and 100 x 37 span more than one 32-column QR panel.
SHAPES = [(1, 1), (7, 3), (3, 7), (33, 17), (64, 64), (100, 37), (40, 90)]
RECONSTRUCT = 1e-5  # max |rebuilt - A| / max |A|
ORTHOGONAL = 2e-5   # max |X^T X - I|; Jacobi's U is orthogonal to its tolerance (5e-6 here)


def random_matrix(rng: np.random.Generator, shape: tuple[int, ...], kind: str) -> np.ndarray:
    """Random (..., m, n) float32 input: gaussian, rank-deficient (rank min(m, n) // 3) or
    ill-conditioned (singular values log-spaced from 1 to 1e-6 between random bases)."""
    *batch, m, n = shape
    k = min(m, n)
    if kind == "gaussian":
        return rng.standard_normal(shape).astype(np.float32)
    if kind == "rank-deficient":
        r = max(1, k // 3)
        return (rng.standard_normal((*batch, m, r)) @ rng.standard_normal((*batch, r, n))
                ).astype(np.float32)
    u = np.linalg.qr(rng.standard_normal((*batch, m, k)))[0]
    v = np.linalg.qr(rng.standard_normal((*batch, n, k)))[0]
    s = np.logspace(0, -6, k)
    return ((u * s) @ np.swapaxes(v, -1, -2)).astype(np.float32)


def worst(x: np.ndarray) -> float:
    return float(np.max(np.abs(x))) if x.size else 0.0


def relative(rebuilt: np.ndarray, a: np.ndarray) -> float:
    return worst(rebuilt - a) / max(worst(a), 1e-30)


def orthogonality(x: np.ndarray) -> float:
    """max |X^T X - I| over the columns of each matrix in the batch."""
    gram = np.swapaxes(x, -1, -2) @ x
    return worst(gram - np.eye(x.shape[-1]))


def host(*tensors: Tensor) -> list[np.ndarray]:
    for t in tensors:
        assert isinstance(t, Tensor)
    return [t.numpy().astype(np.float64) for t in tensors]


# -- QR -------------------------------------------------------------------------------------
def check_qr(device: gpucore.Device, a: np.ndarray, *, compare_r: bool) -> None:
    ta = Tensor.from_numpy(a, device=device)
    *batch, m, n = a.shape
    k = min(m, n)
    for mode, q_cols, r_rows in (("reduced", k, k), ("complete", m, m)):
        q, r = host(*linalg.qr(ta, mode=mode))
        assert q.shape == (*batch, m, q_cols) and r.shape == (*batch, r_rows, n)
        assert relative(q @ r, a) < RECONSTRUCT, mode
        assert orthogonality(q) < ORTHOGONAL, mode
        assert not np.any(np.tril(r, -1)), "R has nonzeros below the diagonal"
        if compare_r:  # the same reflectors as LAPACK: R equal up to the sign of each row
            expected = np.linalg.qr(a.astype(np.float64), mode=mode)[1]
            sign = np.sign(np.diagonal(r, axis1=-2, axis2=-1))[..., None]
            want = np.sign(np.diagonal(expected, axis1=-2, axis2=-1))[..., None]
            rows = min(k, r_rows)
            assert relative(r[..., :rows, :] * sign[..., :rows, :],
                            expected[..., :rows, :] * want[..., :rows, :]) < RECONSTRUCT
    (r_only,) = host(linalg.qr(ta, mode="r"))
    np.testing.assert_array_equal(r_only, host(linalg.qr(ta).R)[0])


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_qr_shapes(device, shape):
    rng = np.random.default_rng(sum(shape))
    check_qr(device, random_matrix(rng, shape, "gaussian"), compare_r=True)


@pytest.mark.parametrize("kind", ["rank-deficient", "ill-conditioned"])
def test_qr_hard_inputs_batched(device, kind):
    rng = np.random.default_rng(7)
    check_qr(device, random_matrix(rng, (2, 3, 45, 38), kind), compare_r=kind != "rank-deficient")


# -- SVD ------------------------------------------------------------------------------------
def check_svd(device: gpucore.Device, a: np.ndarray, *, reduced_too: bool = True) -> None:
    ta = Tensor.from_numpy(a, device=device)
    *batch, m, n = a.shape
    k = min(m, n)
    expected = np.linalg.svd(a.astype(np.float64), compute_uv=False)
    for full in (True, False) if reduced_too else (True,):
        u, s, vh = host(*linalg.svd(ta, full_matrices=full))
        u_cols, vh_rows = (m, n) if full else (k, k)
        assert u.shape == (*batch, m, u_cols) and vh.shape == (*batch, vh_rows, n)
        assert s.shape == (*batch, k)
        assert np.all(np.diff(s, axis=-1) <= 0), "singular values not descending"
        assert worst(s - expected) / max(worst(expected), 1e-30) < RECONSTRUCT
        rebuilt = (u[..., :, :k] * s[..., None, :]) @ vh[..., :k, :]
        assert relative(rebuilt, a) < RECONSTRUCT, f"full_matrices={full}"
        assert orthogonality(u) < ORTHOGONAL, f"U, full_matrices={full}"
        assert orthogonality(np.swapaxes(vh, -1, -2)) < ORTHOGONAL, f"V, full={full}"


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_svd_shapes(device, shape):
    rng = np.random.default_rng(sum(shape) + 1)
    check_svd(device, random_matrix(rng, shape, "gaussian"), reduced_too=max(shape) <= 40)


def test_svd_round_per_dispatch(device, monkeypatch):
    """Matrices with over 64 columns (and rows) run one dispatch per round of pairs instead of
    a fused sweep: force that path on small odd sizes (a dummy partner each round)."""
    monkeypatch.setattr(_svd, "_FUSED_PAIRS", 0)
    rng = np.random.default_rng(9)
    check_svd(device, random_matrix(rng, (2, 23, 17), "gaussian"), reduced_too=False)
    check_svd(device, random_matrix(rng, (9, 15), "rank-deficient"), reduced_too=False)


@pytest.mark.parametrize("kind,shape", [("rank-deficient", (2, 30, 21)),
                                        ("rank-deficient", (13, 31)),
                                        ("ill-conditioned", (3, 36, 29))])
def test_svd_hard_inputs(device, kind, shape):
    """Rank-deficient inputs have (numerically) zero singular values whose vectors must still
    complete an orthonormal basis; cond 1e6 inputs keep their small values to ~1e-6 of S[0]."""
    check_svd(device, random_matrix(np.random.default_rng(3), shape, kind),
              reduced_too=shape == (13, 31))


def test_svd_zero_columns_and_values_only(device):
    """Exact zeros: U's columns for S = 0 come from the QR completion, not from 0 / 0."""
    rng = np.random.default_rng(5)
    a = rng.standard_normal((9, 6)).astype(np.float32)
    a[:, [1, 4]] = 0
    check_svd(device, a)
    check_svd(device, np.zeros((4, 3), np.float32), reduced_too=False)
    s = linalg.svd(Tensor.from_numpy(a, device=device), compute_uv=False)
    assert isinstance(s, Tensor) and s.shape == (6,)
    np.testing.assert_allclose(s.numpy(), np.linalg.svd(a.astype(np.float64),
                                                        compute_uv=False), atol=1e-5)


def test_svd_scale_extremes(device):
    """Inputs near float32's range ends are scaled by a power of two before the sums of
    squares, which would otherwise overflow or underflow."""
    rng = np.random.default_rng(11)
    base = rng.standard_normal((12, 5))
    for factor in (1e30, 1e-30):
        a = (base * factor).astype(np.float32)
        u, s, vh = host(*linalg.svd(Tensor.from_numpy(a, device=device), full_matrices=False))
        assert relative((u * s[None, :]) @ vh, a) < RECONSTRUCT
        q, r = host(*linalg.qr(Tensor.from_numpy(a, device=device)))
        assert relative(q @ r, a) < RECONSTRUCT


def test_svd_not_converging_raises(device, monkeypatch):
    monkeypatch.setattr(_svd, "MAX_SWEEPS", 1)
    a = np.random.default_rng(2).standard_normal((8, 6)).astype(np.float32)
    with pytest.raises(np.linalg.LinAlgError, match="did not converge"):
        linalg.svd(Tensor.from_numpy(a, device=device))


# -- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize("fn", [linalg.qr, linalg.svd], ids=["qr", "svd"])
def test_bad_input(device, fn):
    good = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        fn(Tensor.from_numpy(good[0], device=device))
    with pytest.raises(TypeError, match="float32"):
        fn(np.arange(12).reshape(4, 3))
    with pytest.raises(ValueError, match="empty"):
        fn(np.zeros((0, 3), np.float32))
    for bad in (np.nan, np.inf, -np.inf):
        a = good.copy()
        a[2, 1] = bad
        with pytest.raises(ValueError, match="NaN or inf"):
            fn(Tensor.from_numpy(a, device=device))
    with pytest.raises(ValueError, match="mode"):
        linalg.qr(good, mode="economic")
