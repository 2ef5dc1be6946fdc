"""diffusion.noise.rng.TorchCPUGenerator against torch's CPU generator: bit-exact draws.

torch is the reference only. Besides seeds x shapes, `_box_muller_through_torch` feeds chosen
uniforms into torch's float32 Box-Muller kernel (an MT19937 state whose next outputs are the
words we want), so the log/sincos approximations are checked over their whole input domain
(2**24 uniforms; a stride of it unless slow).
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import diffusion.cli.main as cli
import gpucore
from diffusion.infotext import format_infotext, parse_infotext
from diffusion.noise.rng import (
    RNG_SOURCES,
    TorchCPUGenerator,
    _box_muller_16,
    _fma,
    make_generator,
)

torch = pytest.importorskip("torch", reason="test-only reference")

SEEDS = [0, 1, 42, 2**32 - 1, 2**32 + 7, 2**63 + 12345, 2**64 - 1, -5, 123456789]
# numel < 16 (torch's scalar double path, with its cached second value), == 16, not a multiple
# of 16 (the last 16 redone), and an SD latent
SHAPES = [(), (1,), (3,), (2, 7), (15,), (16,), (17,), (2, 3, 5), (33,), (1, 4, 8, 8),
          (1, 4, 64, 64), (5, 7, 11)]


@pytest.mark.nodevice
@pytest.mark.parametrize("seed", SEEDS)
def test_randn_and_rand_match_torch_draw_after_draw(seed: int) -> None:
    ref, ours = torch.Generator("cpu").manual_seed(seed), TorchCPUGenerator(seed)
    assert ours.initial_seed() == ref.initial_seed()
    # one generator throughout: each draw must leave the state where torch's leaves it,
    # including the cached normal that an odd scalar-path draw leaves behind
    for shape in SHAPES + SHAPES[::-1]:
        expected = torch.randn(shape, generator=ref).numpy()
        got = ours.randn(shape)
        assert got.dtype == np.float32 and got.shape == expected.shape
        np.testing.assert_array_equal(got, expected, err_msg=f"randn{shape}, seed {seed}")
        np.testing.assert_array_equal(ours.rand(shape), torch.rand(shape, generator=ref).numpy())


@pytest.mark.nodevice
def test_cached_normal_outlives_vector_draws_and_dies_with_reseed() -> None:
    ref, ours = torch.Generator().manual_seed(9), TorchCPUGenerator(9)
    for shape in [(1,), (64,), (2,), (20,), (1,)]:  # (1,) leaves a cached value; (64,) keeps it
        np.testing.assert_array_equal(ours.randn(shape), torch.randn(shape, generator=ref))
    ref.manual_seed(9), ours.manual_seed(9)  # a reseed forgets the cached value
    np.testing.assert_array_equal(ours.randn(3), torch.randn(3, generator=ref))


@pytest.mark.nodevice
def test_standard_normal_is_randn_in_float64() -> None:
    drawn = TorchCPUGenerator(5).standard_normal((2, 4, 3, 3))
    assert drawn.dtype == np.float64 and drawn.shape == (2, 4, 3, 3)
    np.testing.assert_array_equal(drawn, torch.randn((2, 4, 3, 3), generator=torch.Generator()
                                                     .manual_seed(5)).double().numpy())
    assert abs(TorchCPUGenerator(1).standard_normal(100_000).std() - 1) < 0.01


@pytest.mark.nodevice
def test_make_generator_and_bad_seeds() -> None:
    assert RNG_SOURCES == ("numpy", "torch")
    assert isinstance(make_generator("torch", 3), TorchCPUGenerator)
    np.testing.assert_array_equal(make_generator("numpy", 3).standard_normal(4),
                                  np.random.default_rng(3).standard_normal(4))
    with pytest.raises(ValueError, match="unknown random source"):
        make_generator("cuda", 3)
    with pytest.raises(ValueError, match="range"):
        TorchCPUGenerator(2**64)
    with pytest.raises(ValueError, match="range"):
        TorchCPUGenerator(-(2**63) - 1)
    with pytest.raises(TypeError, match="int"):
        TorchCPUGenerator(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="negative"):
        TorchCPUGenerator(0).randn((2, -1))


def _round_to_float32(exact: Fraction) -> np.float32:
    """Round-to-nearest-even of an exact rational to float32 (no double rounding)."""
    near = np.float32(float(exact))
    candidates = [near, np.nextafter(near, np.float32(np.inf)),
                  np.nextafter(near, np.float32(-np.inf))]
    return min(candidates, key=lambda c: (abs(Fraction(float(c)) - exact),
                                          int(np.array(c).view(np.uint32)) & 1))


finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False, min_value=-(2.0**60),
                     max_value=2.0**60)


@pytest.mark.nodevice
@settings(max_examples=300, deadline=None)
@given(finite32, finite32, finite32)
def test_fma_rounds_once(a: float, b: float, c: float) -> None:
    exact = Fraction(a) * Fraction(b) + Fraction(c)
    assert _fma(np.float32(a), np.float32(b), np.float32(c)) == _round_to_float32(exact)


@pytest.mark.nodevice
def test_fma_where_rounding_twice_would_be_wrong() -> None:
    # a * b = 2**-24 + 2**-60 (2**36 + 1 = 4097 * 16773121): 1 + a * b rounded to float64
    # first is the float32 tie 1 + 2**-24, which rounds to even (1.0); rounded once it is
    # just above the tie, so 1 + 2**-23
    a, b, c = np.float32(4097 * 2.0**-36), np.float32(16773121 * 2.0**-24), np.float32(1)
    assert np.float32(np.float64(a) * np.float64(b) + np.float64(c)) == 1  # the trap is real
    assert _fma(a, b, c) == np.float32(1 + 2**-23)


def _untemper(y: np.ndarray) -> np.ndarray:
    """Inverse of MT19937's output tempering, on uint64 arrays of 32-bit words."""
    y = y ^ (y >> 18)
    y = y ^ ((y << 15) & 0xEFC60000)
    x = y
    for _ in range(5):
        x = y ^ ((x << 7) & 0x9D2C5680)
    y = x & 0xFFFFFFFF
    x = y
    for _ in range(3):
        x = y ^ (x >> 11)
    return x & 0xFFFFFFFF


def _box_muller_through_torch(uniform_bits: np.ndarray) -> np.ndarray:
    """torch.randn of (blocks, 16) 24-bit uniforms we choose: a crafted generator state (the
    CPUGeneratorImplState byte layout) whose next 608 outputs are the given words."""
    gen = torch.Generator()
    template = gen.get_state().numpy().copy()
    assert template.size == 5056, "torch's generator state layout changed"
    per_state = 608  # 38 blocks of 16 from the 623 outputs before the next twist
    words = (uniform_bits.reshape(-1).astype(np.uint64) | np.uint64(0x5A000000))
    keys = _untemper(words)  # word by word: untempered at once, not per state
    template[8:12] = np.frombuffer(np.int32(624).tobytes(), np.uint8)  # left: no twist yet
    template[16:24] = 0  # next: output state[0] first
    out = []
    for start in range(0, words.size, per_state):
        chunk = keys[start:start + per_state]
        state = template.copy()
        key = np.zeros(624, np.uint64)
        key[:chunk.size] = chunk
        state[24:24 + 624 * 8] = key.view(np.uint8)
        gen.set_state(torch.from_numpy(state))
        out.append(torch.randn(chunk.size, generator=gen).numpy())
    return np.concatenate(out).reshape(-1, 16)


@pytest.mark.nodevice
@pytest.mark.parametrize("stride", [pytest.param(1, marks=pytest.mark.slow), 31])
def test_box_muller_over_every_uniform(stride: int) -> None:
    k = np.arange(0, 2**24, stride, dtype=np.uint32)
    k = np.concatenate([k, [1, 2**24 - 1], np.zeros((-k.size - 2) % 8, np.uint32)])
    blocks = k.reshape(-1, 8)
    # every k goes through the log (first half) and sincos (second half), reversed pairing
    bits = np.concatenate([blocks, blocks[:, ::-1]], axis=1)
    # in slices of 2**10 blocks: the same draws, but numpy's temporaries stay in cache (whole
    # 2**21-block arrays of float64 temporaries made the slow case 2-3x as long)
    rows = 2**10
    for start in range(0, len(bits), rows):
        part = bits[start:start + rows]
        expected = _box_muller_through_torch(part)
        got = _box_muller_16(part.astype(np.float32) * np.float32(2.0**-24))
        mismatched = np.flatnonzero((got != expected).any(axis=1))
        assert mismatched.size == 0, (part[mismatched[:3]], got[mismatched[:3]])


@pytest.mark.nodevice
def test_infotext_writes_and_reads_webui_rng_field() -> None:
    base = dict(prompt="a cat", negative_prompt="", steps=4, sampler="DDIM", cfg_scale=7.0,
                seed=1, width=64, height=64)
    text = format_infotext({**base, "rng": "torch"})
    assert text.endswith("RNG: CPU") and parse_infotext(text)["rng"] == "torch"
    assert "RNG" not in format_infotext({**base, "rng": "numpy"})
    other = parse_infotext("a cat\nSteps: 4, Sampler: DDIM, Seed: 1, RNG: NV")
    assert other["RNG"] == "NV" and "rng" not in other


@pytest.mark.nodevice
def test_cli_rng_flag() -> None:
    parser = cli.build_parser()
    common = ["txt2img", "--model", "m", "--prompt", "p"]
    assert parser.parse_args(common).rng == "numpy"
    assert parser.parse_args([*common, "--rng", "torch"]).rng == "torch"
    with pytest.raises(cli._UsageError, match="rng"):
        parser.parse_args([*common, "--rng", "gpu"])


# -- pipeline: our txt2img/img2img with rng="torch" against diffusers with a real torch
# generator (no patched randn). The draws are host-side, so one adapter shows it;
# test_sd_pipeline runs the models on every adapter.

@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("diffusers", reason="test-only reference")
    from sd_tiny import write_pipeline

    return write_pipeline(tmp_path_factory.mktemp("tiny-sd-rng"))


@pytest.fixture
def one_device(device: gpucore.Device) -> gpucore.Device:
    from conftest import ADAPTERS

    if device.backend != ADAPTERS[0].backend:
        pytest.skip("the draws are host-side numpy: one adapter shows them; test_sd_pipeline "
                    "runs the models on every adapter")
    return device


@pytest.mark.filterwarnings("ignore:You have passed 2 text prompts:FutureWarning")
@pytest.mark.parametrize("mode, scheduler", [
    ("txt2img", "EulerAncestralDiscreteScheduler"),  # draws at every step too
    ("img2img", "DDIMScheduler"),  # the VAE posterior draw, then the noise
])
def test_pipeline_noise_equals_diffusers_torch_generator(one_device: gpucore.Device,
                                                         model_dir: Path, mode: str,
                                                         scheduler: str) -> None:
    """sampler="diffusers" (the model folder's scheduler, run as diffusers runs it) draws what
    diffusers draws from generator=torch.Generator("cpu").manual_seed(seed)."""
    import diffusers
    from support import module_of_tests

    from diffusion import load_pipeline

    sd = module_of_tests("diffusion/pipelines/test_sd_pipeline.py")
    PROMPT, SIZE, _picture = sd.PROMPT, sd.SIZE, sd._picture

    seed = 2**32 + 21  # torch keeps the low 32 bits; so must we
    options = dict(width=SIZE, height=SIZE, steps=3, cfg_scale=1.0, batch_size=2, seed=seed)
    image_options = {} if mode == "txt2img" else dict(image=_picture(3), strength=0.7)
    reference = sd._reference(mode, model_dir)
    reference.scheduler = getattr(diffusers, scheduler).from_config(reference.scheduler.config)
    ours = load_pipeline(model_dir, device=one_device)
    ours.scheduler_config = dict(reference.scheduler.config)
    with pytest.raises(ValueError, match="rng must be one of"):
        ours.generate(PROMPT, rng="cuda", **options)
    result = ours.generate(PROMPT, sampler="diffusers", rng="torch",
                           init_image=image_options.get("image"),
                           strength=image_options.get("strength", 0.75), **options)
    assert result.settings["rng"] == "torch" and result.settings["mode"] == mode
    expected = reference(PROMPT, num_inference_steps=3, guidance_scale=1.0, height=SIZE,
                         width=SIZE, num_images_per_prompt=2, output_type="np",
                         generator=torch.Generator("cpu").manual_seed(seed),
                         **image_options).images
    sd._assert_images_match(result.images, expected)
