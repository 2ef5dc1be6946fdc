"""GFPGAN (v1.3/v1.4's GFPGANv1Clean) and CodeFormer on gpustd against spandrel's torch models
(spandrel_extra_arches for CodeFormer) on the same random weights, to float32 error: narrowed
networks at smaller sizes (every size is read from the weights), and the release's CodeFormer
block list checked for the fusion points it hard-codes."""

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


@pytest.mark.parametrize(("size", "sft_half"), [(256, True), (64, False)])
def test_gfpgan_equals_spandrel(first_device, size, sft_half):
    """The release's layout (SFT on half the channels) and the other SFT, at 256 and 64 (the
    release's 512 is one more octave of the same code, and seconds more of CI)."""
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


def tiny_codeformer(seed: int = 0):
    """spandrel_extra_arches' CodeFormer with its VQGAN narrowed and shortened (32 features,
    two downsamples: 64x64 faces to the 16x16 latents), a 64-wide two-layer transformer
    and a 64-entry codebook; the fusion points where the real layout's rule puts them."""
    from spandrel_extra_arches.architectures.CodeFormer.__arch import codeformer as arch

    torch.manual_seed(seed)
    with torch.device("meta"):  # the full-size VQGAN it builds first is replaced
        model = arch.CodeFormer(dim_embd=64, n_layers=2, codebook_size=64,
                                connect_list=["32", "64"])
    mult = [1, 2, 4]
    model.encoder = arch.Encoder(3, 32, 256, mult, 2, 64, [16])
    model.generator = arch.Generator(32, mult, 2, 64, [16], 256)
    model.fuse_convs_dict = torch.nn.ModuleDict(
        {size: arch.Fuse_sft_block(ch, ch) for size, ch in (("32", 64), ("64", 32))})
    model.fuse_encoder_block = {"64": 2, "32": 5}
    model.fuse_generator_block = {"32": 9, "64": 12}
    model = model.to_empty(device="cpu")
    with torch.no_grad():
        for name, value in model.named_parameters():
            if value.ndim == 1:  # biases, and norms' weights near 1
                value.copy_(torch.randn_like(value) * 0.1 + name.endswith("weight"))
            else:
                value.copy_(torch.randn_like(value) / value[0].numel() ** 0.5)
        model.idx_pred_layer[1].weight.mul_(30)  # clear winners among the codes
        model.position_emb.normal_()
    return model.eval()


def test_codeformer_equals_spandrel(first_device):
    from diffusion.models.codeformer import CodeFormer

    reference = tiny_codeformer()
    state = {k: v.numpy() for k, v in reference.state_dict().items()}
    ours = CodeFormer.from_state_dict(state, device=first_device)
    assert ours.size == 64 and ours.fused_sizes == [64, 32]
    image = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    x = Tensor.from_numpy(image.numpy(), device=first_device)
    outputs = []
    for w in (0.0, 0.7):
        with torch.no_grad():
            want = reference(image, weight=w)[0].numpy()
        got = ours(x, w=w).numpy()
        assert _relative(got, want) < 2e-4, w
        outputs.append(got)
    assert _relative(outputs[0], outputs[1]) > 0.05  # w matters


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
