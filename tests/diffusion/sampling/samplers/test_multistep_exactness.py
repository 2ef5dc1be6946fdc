"""iPNDM, iPNDM-v and HeunPP2 (ComfyUI's samplers that k-diffusion lacks) on denoisers whose
ODE slope depends on sigma alone, d(x, sigma) = p(sigma) (denoised = x - sigma p(sigma)): each
step's change of x is then a fixed combination of p's values at the nodes, checked here from
the methods' mathematics rather than against a copy of their code.

- Adams-Bashforth of order k (an iPNDM step once k - 1 earlier slopes are kept) integrates a
  polynomial slope of degree below k exactly over the step, and one of degree k not (so the
  weights are order k's, not another order's). iPNDM-v's weights (diff-sampler's formulas, as
  ComfyUI runs them, which ours keep so as to give its pictures) are Adams-Bashforth's for
  unequal steps up to order 2 and at equal steps up to order 3; beyond, they are not exact:
  order 3 on unequal steps, order 4 anywhere (on unequal steps its weights do not even sum to
  1: coeff4 takes h_n_1 / h_n_2 where the third divided difference has h_n_2 / h_n_3).
- HeunPP2's step is (sigma_next - sigma) times p at sigma_i, sigma_i+1, sigma_i+2 blended with
  the weights sigma_i+1 / (3 sigma_0) and sigma_i+2 / (3 sigma_0) on the two later points (with
  2 sigma_0 and two points one step before the end; p alone on the last step): random values
  of p at the nodes show every weight.
Host logic, no device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from diffusion.sampling.samplers import sample_heunpp2, sample_ipndm, sample_ipndm_v

pytestmark = pytest.mark.nodevice

EQUAL = np.linspace(9.0, 2.0, 8)
UNEQUAL = np.array([9.0, 7.6, 5.9, 4.7, 3.4, 2.8, 1.9, 1.2])


def _changes(sampler: Any, slope: Callable[[float], float], sigmas: np.ndarray,
             **options: Any) -> np.ndarray:
    """The change of x on each step, from x = 0, under the slope-only denoiser."""
    seen = [np.zeros(1)]
    sampler(lambda x, sigma: x - sigma * slope(sigma), np.zeros(1), sigmas,
            callback=lambda i, x: seen.append(x.copy()), **options)
    return np.diff([float(x[0]) for x in seen])


@pytest.mark.parametrize("sampler, sigmas, exact_orders", [
    (sample_ipndm, EQUAL, 4), (sample_ipndm_v, EQUAL, 3), (sample_ipndm_v, UNEQUAL, 2)],
    ids=["ipndm", "ipndm_v-equal", "ipndm_v-unequal"])
@pytest.mark.parametrize("max_order", [1, 2, 3, 4])
def test_adams_bashforth_integrates_polynomial_slopes(sampler: Any, sigmas: np.ndarray,
                                                      exact_orders: int, max_order: int) -> None:
    rng = np.random.default_rng(max_order)
    for degree in range(max_order + 1):
        p = np.polynomial.Polynomial(rng.uniform(0.5, 1.5, degree + 1))
        integral = p.integ()
        changes = _changes(sampler, lambda s, p=p: float(p(s)), sigmas, max_order=max_order)
        for i, change in enumerate(changes):
            order = min(max_order, i + 1)
            if order > exact_orders:
                continue
            exact = integral(sigmas[i + 1]) - integral(sigmas[i])
            if degree < order:
                assert change == pytest.approx(exact, rel=1e-10), (i, order, degree)
            elif degree == order:
                assert abs(change - exact) > 1e-4 * abs(exact), (i, order, degree)


@pytest.mark.parametrize("sigmas", [UNEQUAL, EQUAL[:3], EQUAL[:2]], ids=["8", "3", "2"])
def test_heunpp2_blends_the_slopes_with_its_weights(sigmas: np.ndarray) -> None:
    values = dict(zip(sigmas, np.random.default_rng(3).uniform(-2, 2, len(sigmas))))
    changes = _changes(sample_heunpp2, lambda s: values[s], sigmas)
    first, last = sigmas[0], len(sigmas) - 2
    for i, change in enumerate(changes):
        here = values[sigmas[i]]
        if i == last:
            blend = here
        elif i == last - 1:
            w2 = sigmas[i + 1] / (2 * first)
            blend = (1 - w2) * here + w2 * values[sigmas[i + 1]]
        else:
            w2, w3 = sigmas[i + 1] / (3 * first), sigmas[i + 2] / (3 * first)
            blend = (1 - w2 - w3) * here + w2 * values[sigmas[i + 1]] + w3 * values[sigmas[i + 2]]
        assert change == pytest.approx((sigmas[i + 1] - sigmas[i]) * blend, rel=1e-10), i


@pytest.mark.parametrize("sampler", [sample_ipndm, sample_ipndm_v])
def test_ipndm_ends_on_the_denoised_picture(sampler: Any) -> None:
    """A last step to sigma 0 returns the model's x0 (ComfyUI's), not a multistep step to it;
    max_order is 1 to 4; a callback's False stops after its step."""
    sigmas = np.append(UNEQUAL, 0.0)
    changes = _changes(sampler, lambda s: s * s, sigmas)
    assert changes[-1] == pytest.approx(-UNEQUAL[-1] ** 3, rel=1e-12)
    for order in (0, 5):
        with pytest.raises(ValueError, match="max_order must be 1 to 4, got " + str(order)):
            sampler(lambda x, s: x, np.zeros(1), sigmas, max_order=order)
    steps: list[np.ndarray] = []
    out = sampler(lambda x, s: 0.5 * x, np.ones(1), sigmas,
                  callback=lambda i, x: (steps.append(x), False)[1])
    assert len(steps) == 1 and out is steps[0]
