"""GFPGAN (v1.3/v1.4's GFPGANv1Clean) and CodeFormer on gpustd against spandrel's torch models
(spandrel_extra_arches for CodeFormer) on the same random weights, to float32 error: narrowed
networks at smaller sizes (every size is read from the weights), and the release's CodeFormer
block list checked for the fusion points it hard-codes."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="test-only reference (extra: reference)")

from face_refs import tiny_codeformer, tiny_gfpgan  # noqa: E402

from diffusion.models.gfpgan import GFPGAN  # noqa: E402
from gpustd import Tensor  # noqa: E402


def _relative(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize(("size", "sft_half"), [(128, True), (64, False)])
def test_gfpgan_equals_spandrel(first_device, size, sft_half):
    """The release's layout (SFT on half the channels) and the other SFT, at 128 and 64 (the
    release's 512 runs the same code for two more octaves, seconds more of CI)."""
    reference = tiny_gfpgan(size=size, sft_half=sft_half)
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    ours = GFPGAN.from_state_dict(state, device=first_device)
    assert (ours.size, ours.num_style_feat, ours.sft_half) == (size, 32, sft_half)
    gen = torch.Generator().manual_seed(1)
    image = torch.rand(1, 3, size, size, generator=gen) * 2 - 1
    noise = [torch.randn(1, 1, h, w, generator=gen) for h, w in ours.noise_shapes()]
    decoder = reference.stylegan_decoder
    for i, n in enumerate(noise):  # the stored noise, used with randomize_noise=False
        getattr(decoder.noises, f"noise{i}").copy_(n)
    with torch.no_grad():
        want = reference(image, randomize_noise=False)[0].numpy()
        other = reference(image)[0].numpy()
    assert _relative(want, other) > 0.01  # the noise matters
    x = Tensor.from_numpy(image.numpy(), device=first_device)
    got = ours(x, [n.numpy() for n in noise]).numpy()
    assert got.shape == want.shape
    assert _relative(got, want) < 2e-4


def test_codeformer_equals_spandrel(first_device):
    from diffusion.models.codeformer import CodeFormer

    reference = tiny_codeformer()
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    ours = CodeFormer.from_state_dict(state, device=first_device)
    assert ours.size == 64 and ours.fused_sizes == [64, 32]
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        want = reference(image, weight=0.7)[0].numpy()
        codebook_only = reference(image, weight=0.0)[0].numpy()
    assert _relative(codebook_only, want) > 0.05  # w matters
    got = ours(Tensor.from_numpy(image.numpy(), device=first_device), w=0.7).numpy()
    assert _relative(got, want) < 2e-4


@pytest.mark.nodevice
def test_codeformer_layout_of_the_release():
    """The release's block list gives the fusion points CodeFormer hard-codes."""
    from spandrel_extra_arches.architectures.CodeFormer.__arch import codeformer as arch

    from diffusion.models.codeformer import _fusion_points, block_layout

    with torch.device("meta"):
        model = arch.CodeFormer()
    state = model.state_dict()
    taken, fused = _fusion_points(block_layout(state, "encoder"),
                                  block_layout(state, "generator"))
    for size in ("32", "64", "128", "256", "512"):
        level = {512: 0, 256: 1, 128: 2, 64: 3, 32: 4}[int(size)]
        assert taken[level] == model.fuse_encoder_block[size]
        assert fused[level] == model.fuse_generator_block[size]


@pytest.mark.nodevice
def test_gfpgan_config_of_the_release():
    """The release's layout (GFPGANv1Clean's defaults, as spandrel loads v1.3/v1.4) is read
    as such: 512 faces, 512-wide styles, SFT on half the channels."""
    from spandrel.architectures.GFPGAN import GFPGAN as TorchGFPGAN

    with torch.device("meta"):
        state = TorchGFPGAN().state_dict()
    assert GFPGAN.config(state) == {"log_size": 9, "num_style_feat": 512, "sft_half": True}
