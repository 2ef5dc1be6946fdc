"""The SDE samplers' Brownian-tree noise against torchsde 0.2.6 and k-diffusion's
`BrownianTreeNoiseSampler` (torch CPU), seeded as the WebUI seeds it, plus the properties a
Brownian motion must have (independent of any reference).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from diffusion.sampling.samplers.brownian import BrownianTreeNoise, _BrownianTree

torch = pytest.importorskip("torch")
torchsde = pytest.importorskip("torchsde")
from kdiffusion_ref import K  # noqa: E402  (skips the module without k-diffusion)

pytestmark = [pytest.mark.nodevice,  # host logic: `pytest -m nodevice`
              pytest.mark.filterwarnings("ignore:Should have:UserWarning")]  # torchsde's clamp

SIGMA_MIN, SIGMA_MAX = 0.0291675, 14.614642  # SD's training range
ULPS_2 = 2.5e-7  # two float32 ulps, relative


def _karras(n: int) -> torch.Tensor:
    """The float32 sigmas a WebUI run steps through (Karras, n steps)."""
    return K.sampling.get_sigmas_karras(n, SIGMA_MIN, SIGMA_MAX).float()


def _queries(sigmas: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The (sigma, sigma_next) pairs an SDE sampler asks for: each step, and DPM++ SDE's
    half step to the geometric midpoint."""
    pairs = []
    for sigma, sigma_next in itertools.pairwise(sigmas[:-1]):  # the last step ends at 0
        pairs += [(sigma, sigma_next), (sigma, (sigma * sigma_next).sqrt())]
    return pairs


@pytest.mark.parametrize("entropy, shape", [(12345, (2, 3, 4)), (2**32 + 5, (5,))])
def test_increments_equal_torchsdes_bit_for_bit(entropy, shape):
    rng = np.random.default_rng(entropy % 1000)
    t0, t1 = (float(np.float32(v)) for v in (SIGMA_MIN, SIGMA_MAX))
    reference = torchsde.BrownianTree(t0, torch.zeros(shape), t1, entropy=entropy)
    ours = _BrownianTree(t0, t1, shape, entropy)
    times = np.sort(rng.uniform(t0, t1, (7, 2)), axis=1)
    times = np.concatenate([times, [[t0, t1], [0.5, 0.500003], [t0, 0.03]]])
    for ta, tb in times[rng.permutation(len(times))]:  # any order: the tree fixes the path
        np.testing.assert_array_equal(ours.increment(ta, tb), reference(ta, tb).numpy())


def test_noise_matches_kdiffusions_sampler_with_the_webuis_per_image_seeds():
    sigmas = _karras(8)
    shape, seeds = (2, 2, 4, 4), [3_000_000_017, 42]
    low, high = sigmas[sigmas > 0].min(), sigmas.max()  # as create_noise_sampler takes them
    reference = K.sampling.BrownianTreeNoiseSampler(torch.zeros(shape), low, high, seed=seeds)
    ours = BrownianTreeNoise(shape, float(low), float(high), seeds)
    exact = 0
    for sigma, sigma_next in _queries(sigmas):
        expected = reference(sigma, sigma_next).numpy()
        got = ours(float(sigma), float(sigma_next))
        assert got.dtype == np.float64 and got.shape == shape
        # the increments are exact; torch's float32 sqrt in the normalization may be 1 ulp off,
        # which moves a quotient by up to 2 float32 ulps
        np.testing.assert_allclose(got, expected, rtol=ULPS_2, atol=0)
        exact += np.array_equal(got, expected)
    assert exact >= len(_queries(sigmas)) // 3


def test_one_seed_makes_one_tree_over_the_whole_shape():
    sigmas = _karras(5)
    reference = K.sampling.BrownianTreeNoiseSampler(torch.zeros(3, 5), sigmas[-2], sigmas[0],
                                                    seed=99)
    ours = BrownianTreeNoise((3, 5), float(sigmas[-2]), float(sigmas[0]), 99)
    for sigma, sigma_next in _queries(sigmas):
        np.testing.assert_allclose(ours(float(sigma), float(sigma_next)),
                                   reference(sigma, sigma_next).numpy(), rtol=ULPS_2, atol=0)


def test_an_images_noise_does_not_depend_on_its_batch():
    alone = BrownianTreeNoise((1, 3, 4), SIGMA_MIN, SIGMA_MAX, [7])
    batch = BrownianTreeNoise((3, 3, 4), SIGMA_MIN, SIGMA_MAX, [5, 7, 9])
    np.testing.assert_array_equal(batch(3.0, 2.0)[1], alone(3.0, 2.0)[0])
    assert not np.array_equal(batch(3.0, 2.0)[0], batch(3.0, 2.0)[2])


def test_same_query_same_answer_and_order_does_not_matter():
    first = BrownianTreeNoise((2, 16), SIGMA_MIN, SIGMA_MAX, [1, 2])
    second = BrownianTreeNoise((2, 16), SIGMA_MIN, SIGMA_MAX, [1, 2])
    pairs = [(14.0, 9.5), (0.7, 0.2), (9.5, 4.25)]
    answers = [first(*pair) for pair in pairs]
    for pair, answer in reversed(list(zip(pairs, answers, strict=True))):
        np.testing.assert_array_equal(second(*pair), answer)
        np.testing.assert_array_equal(first(*pair), answer)
    np.testing.assert_array_equal(first(9.5, 14.0), -answers[0])  # reversed step: W negated
    other_seed = BrownianTreeNoise((2, 16), SIGMA_MIN, SIGMA_MAX, [1, 3])
    assert not np.array_equal(other_seed(14.0, 9.5)[1], answers[0][1])


def test_increments_add_up_over_adjacent_steps():
    noise = BrownianTreeNoise((64,), SIGMA_MIN, SIGMA_MAX, 2024)
    a, b, c = 12.0, 5.5, 0.8

    def increment(s, t):
        return noise(s, t) * np.sqrt(s - t)

    np.testing.assert_allclose(increment(a, c), increment(a, b) + increment(b, c),
                               rtol=1e-5, atol=1e-5)


def test_statistics_of_a_standard_normal_brownian_motion():
    """Each step's noise has mean 0 and variance 1, and the noises of two disjoint steps, of
    two elements and of two seeds are uncorrelated (Brownian increments are independent)."""
    size = 20000
    noise = BrownianTreeNoise((2, size), SIGMA_MIN, SIGMA_MAX, [3, 4])
    early, late = noise(14.6, 7.0), noise(0.9, 0.3)
    bound = 4 / np.sqrt(size)  # four standard errors of a mean or a correlation
    for sample in (early[0], late[0], early[1]):
        assert abs(sample.mean()) < bound
        assert abs(sample.var() - 1) < 4 * np.sqrt(2 / size)
    for x, y in [(early[0], late[0]), (early[0], early[1]), (early[0, :-1], early[0, 1:])]:
        assert abs(np.corrcoef(x, y)[0, 1]) < bound


@pytest.mark.parametrize("args, message", [
    (((2, 3), 0.03, 14.6, [1]), "one seed per batch item"),
    (((2, 3), 0.03, 14.6, [1, -2]), "non-negative ints"),
    (((2, 3), 0.03, 14.6, 1.5), "non-negative ints"),
    (((2, 3), 0.03, 0.03, [1, 2]), "different"),
    (((2, 3), -1.0, 14.6, [1, 2]), "non-negative"),
])
def test_bad_arguments_raise(args, message):
    with pytest.raises(ValueError, match=message):
        BrownianTreeNoise(*args)


def test_equal_sigmas_raise():
    noise = BrownianTreeNoise((2,), SIGMA_MIN, SIGMA_MAX, 1)
    with pytest.raises(ValueError, match="equal"):
        noise(2.0, 2.0)
    with pytest.raises(ValueError, match="resolution"):
        noise(2.0, 2.0000005)  # distinct in float32, one time at 6 digits
