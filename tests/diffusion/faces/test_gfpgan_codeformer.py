"""GFPGAN (v1.3/v1.4's GFPGANv1Clean) and CodeFormer on gpustd against spandrel's torch models
(spandrel_extra_arches for CodeFormer) on the same random weights at 512x512, to float32 error."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="test-only reference (extra: reference)")

import face_refs  # noqa: E402,F401
from spandrel.architectures.GFPGAN import GFPGAN as TorchGFPGAN  # noqa: E402

from diffusion.models.gfpgan import GFPGAN  # noqa: E402
from gpustd import Tensor  # noqa: E402


def tiny_gfpgan(seed: int = 0, *, size: int = 512, sft_half: bool = True):
    """GFPGANv1Clean at `size` with a sixteenth of the real widths and a 32-wide style, random
    weights (the noise strengths and SFT convs large enough to matter)."""
    torch.manual_seed(seed)
    model = TorchGFPGAN(out_size=size, num_style_feat=32, channel_multiplier=2, narrow=1 / 16,
                        sft_half=sft_half).eval()
    with torch.no_grad():
        for name, value in model.named_parameters():
            if name.endswith(".weight") and value.numel() == 1:  # noise injection strength
                value.fill_(0.3)
            elif "condition_" in name or name.endswith("bias"):
                value.copy_(torch.randn_like(value) * 0.1)
    return model


def _relative(got: np.ndarray, want: np.ndarray) -> float:
    return float(np.abs(got - want).max() / np.abs(want).max())


@pytest.mark.parametrize(("size", "sft_half"), [(512, True), (128, False)])
def test_gfpgan_equals_spandrel(first_device, size, sft_half):
    """The release's layout (512, SFT on half the channels) and the other SFT at 128 (a
    second 512 pass would add seconds of CI and test no other code)."""
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
