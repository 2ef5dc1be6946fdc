"""The UNet's blocks (diffusion.models.layers, unet_blocks) on the host (numpy standing in for
gpustd, host_gpustd.py) against diffusers' torch modules on the CPU: attention (self and
cross, its residual), the ResNet block (time embedding, shortcut in either order), the
resamplers (the VAE's own padding, an odd skip size), the transformer block and the 2-D
transformer with either projection. test_sd_models.py runs the same blocks on the device."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import host_gpustd
import torch
from diffusers.models.attention import BasicTransformerBlock as TorchBasicBlock
from diffusers.models.attention_processor import Attention as TorchAttention
from diffusers.models.downsampling import Downsample2D as TorchDownsample
from diffusers.models.resnet import ResnetBlock2D as TorchResnet
from diffusers.models.transformers.transformer_2d import Transformer2DModel as TorchTransformer
from diffusers.models.upsampling import Upsample2D as TorchUpsample
from sd_tiny import randomized
from support import assert_close

from diffusion.models import layers, unet_blocks

pytestmark = pytest.mark.nodevice

TOL = 6e-5  # float32 against torch float32: measured 6.1e-6 at most (the 2-D transformer)
PLACE = {"dtype": np.float32, "device": None}


@pytest.fixture(autouse=True)
def host(monkeypatch: pytest.MonkeyPatch) -> None:
    host_gpustd.stand_in(monkeypatch)


def normal(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def run(module: torch.nn.Module, *arrays: np.ndarray, **kwargs: object) -> np.ndarray:
    with torch.no_grad():
        out = module(*[torch.from_numpy(a) for a in arrays], **kwargs)
    return (out.sample if hasattr(out, "sample") else out).numpy()


def differs(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.abs(a - b).max() > 100 * TOL * (np.sqrt(np.mean(b ** 2)) + 1))


@pytest.mark.parametrize("cross", [False, True], ids=["self", "cross"])
def test_attention(cross: bool) -> None:
    reference = randomized(TorchAttention(12, cross_attention_dim=5 if cross else None,
                                          heads=3, dim_head=4), 1, scale=1.0)
    ours = layers.Attention(12, 3, 4, place=PLACE, context_dim=5 if cross else None)
    host_gpustd.load(ours, reference)
    x, context = normal(2, 7, 12, seed=1), normal(2, 3, 5, seed=2)
    expected = run(reference, x, *((context,) if cross else ()))
    got = ours(x, context if cross else None)
    assert_close(got, expected, tol=TOL)
    stream = normal(2, 7, 12, seed=3)
    added = ours(x, context if cross else None, add_to=stream.copy())
    assert_close(added, expected + stream, tol=TOL)
    assert differs(ours(x[::-1], context if cross else None), got)
    if cross:
        assert differs(ours(x, context[::-1]), got)


def test_attention_image_tokens() -> None:
    """IP-Adapter: each adapter's attention of q over its own image tokens added before
    to_out (diffusers' IPAdapterAttnProcessor2_0 with the scale in to_v_ip)."""
    reference = randomized(TorchAttention(12, cross_attention_dim=5, heads=3, dim_head=4), 1,
                           scale=1.0)
    ours = layers.Attention(12, 3, 4, place=PLACE, context_dim=5)
    host_gpustd.load(ours, reference)
    adapters = [randomized(torch.nn.ModuleDict(dict(
        to_k_ip=torch.nn.Linear(5, 12, bias=False), to_v_ip=torch.nn.Linear(5, 12, bias=False))),
        seed, scale=1.0) for seed in (2, 3)]
    ours.ip_layers = []
    for adapter in adapters:
        layer = host_gpustd.Linear(5, 12, bias=False), host_gpustd.Linear(5, 12, bias=False)
        layer[0].weight = adapter.to_k_ip.weight.detach().numpy()
        layer[1].weight = adapter.to_v_ip.weight.detach().numpy()
        ours.ip_layers.append(type("IP", (), dict(to_k_ip=layer[0], to_v_ip=layer[1]))())
    x, text = normal(2, 7, 12, seed=1), normal(2, 3, 5, seed=2)
    images = [normal(2, 4, 5, seed=4), normal(2, 2, 5, seed=5)]
    tx = torch.from_numpy(x)
    with torch.no_grad():
        q = reference.to_q(tx).unflatten(-1, (3, 4)).transpose(1, 2)

        def attend(keys: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
            k = keys.unflatten(-1, (3, 4)).transpose(1, 2)
            v = values.unflatten(-1, (3, 4)).transpose(1, 2)
            return torch.nn.functional.scaled_dot_product_attention(q, k, v).transpose(
                1, 2).flatten(-2)

        tt = torch.from_numpy(text)
        out = attend(reference.to_k(tt), reference.to_v(tt))
        for adapter, tokens in zip(adapters, images):
            ti = torch.from_numpy(tokens)
            out = out + attend(adapter.to_k_ip(ti), adapter.to_v_ip(ti))
        expected = reference.to_out[0](out).numpy()
    got = ours(x, (text, images))
    assert_close(got, expected, tol=TOL)
    assert differs(ours(x, (text, images[:1])), got)


@pytest.mark.parametrize(("channels", "shortcut_last", "temb"),
                         [((8, 8), False, True), ((8, 12), False, True),
                          ((8, 12), True, False), ((8, 8), True, True)],
                         ids=["same", "shortcut", "shortcut-last", "same-shortcut-last"])
def test_resnet_block(channels: tuple[int, int], shortcut_last: bool, temb: bool) -> None:
    reference = randomized(TorchResnet(in_channels=channels[0], out_channels=channels[1],
                                       temb_channels=6 if temb else None, groups=4, eps=0.25),
                           1, scale=1.0)
    ours = layers.ResnetBlock2D(*channels, temb_channels=6 if temb else None, place=PLACE,
                                groups=4, eps=0.25, shortcut_last=shortcut_last)
    host_gpustd.load(ours, reference)
    x, t = normal(2, channels[0], 5, 3, seed=1), normal(2, 6, seed=2)
    with torch.no_grad():
        expected = reference(torch.from_numpy(x),
                             torch.from_numpy(t) if temb else None).numpy()
        silu_t = torch.nn.functional.silu(torch.from_numpy(t)).numpy()
    got = ours(x, silu_t if temb else None)
    assert_close(got, expected, tol=TOL)
    if temb:
        assert differs(ours(x, silu_t[::-1]), got)
        assert differs(ours(x), got)


@pytest.mark.parametrize("padding", [1, 0])
def test_downsample(padding: int) -> None:
    reference = randomized(TorchDownsample(6, use_conv=True, padding=padding, name="conv"), 1,
                           scale=1.0)
    del reference.Conv2d_0  # diffusers' second name for its conv
    ours = layers.Downsample2D(6, place=PLACE, padding=padding)
    host_gpustd.load(ours, reference)
    # an even side: the VAE's padding adds an output; an odd one: one more padded would
    for x in (normal(2, 6, 6, 7, seed=1), normal(2, 6, 7, 6, seed=2)):
        assert_close(ours(x), run(reference, x), tol=TOL)
    assert layers.Downsample2D(6, place=PLACE).conv.padding == 1  # the UNet's default


@pytest.mark.parametrize("size", [None, (8, 6), (7, 5)], ids=["twice", "twice-given", "odd"])
def test_upsample(size: tuple[int, int] | None) -> None:
    reference = randomized(TorchUpsample(6, use_conv=True), 1, scale=1.0)
    ours = layers.Upsample2D(6, place=PLACE)
    host_gpustd.load(ours, reference)
    x = normal(2, 6, 4, 3, seed=1)
    assert_close(ours(x, size), run(reference, x, output_size=size), tol=TOL)
    assert ours.conv.upsampled == (1 if size == (7, 5) else 2)  # twice: no upsampled copy


def test_basic_transformer_block() -> None:
    reference = randomized(TorchBasicBlock(12, 3, 4, cross_attention_dim=5), 1, scale=1.0)
    ours = unet_blocks.BasicTransformerBlock(12, 3, 5, place=PLACE)
    host_gpustd.load(ours, reference)
    x, context = normal(2, 7, 12, seed=1), normal(2, 3, 5, seed=2)
    expected = run(reference, x, encoder_hidden_states=torch.from_numpy(context))
    got = ours(x.copy(), context)
    assert_close(got, expected, tol=TOL)
    assert differs(ours(x.copy(), context[::-1]), got)
    # the layers each norm's --int8 pass quantizes for
    assert ours.norm1.readers == [ours.attn1.to_q, ours.attn1.to_k, ours.attn1.to_v]
    assert ours.norm2.readers == [ours.attn2.to_q]
    assert ours.norm3.readers == [ours.ff.net[0].proj]
    assert ours.ff.net[0].readers == [ours.ff.net[2]]


def test_reference_hook() -> None:
    """reference_only's hook replaces the self-attention: it gets attn1, norm1(x) and the
    stream to add into."""
    reference = randomized(TorchBasicBlock(12, 3, 4, cross_attention_dim=5), 1, scale=1.0)
    ours = unet_blocks.BasicTransformerBlock(12, 3, 5, place=PLACE)
    host_gpustd.load(ours, reference)
    x, context = normal(2, 7, 12, seed=1), normal(2, 3, 5, seed=2)
    seen = []

    class Hook:
        def self_attention(self, attention, normed, stream):
            seen.append((attention, normed.copy(), stream))
            attention(normed, add_to=stream)

    ours.reference = Hook()
    stream = x.copy()
    got = ours(stream, context)
    assert_close(got, run(reference, x, encoder_hidden_states=torch.from_numpy(context)),
                 tol=TOL)
    (attention, normed, given), = seen
    assert attention is ours.attn1 and given is stream
    assert_close(normed, run(reference.norm1, x), tol=TOL)


def test_tokens_and_image() -> None:
    x = normal(2, 3, 4, 5)
    tokens = torch.from_numpy(x).flatten(2).transpose(1, 2).numpy()
    np.testing.assert_array_equal(layers.to_tokens(x), tokens)
    np.testing.assert_array_equal(layers.to_image(tokens, 4, 5), x)


def test_placement_and_defaults() -> None:
    """Every layer in the dtype and on the device asked; diffusers' defaults (32 groups,
    eps 1e-5; the 2-D transformer's norm at 1e-6)."""
    device = object()
    place = {"dtype": np.float16, "device": device}
    blocks = [layers.ResnetBlock2D(8, 12, temb_channels=6, place=place, groups=4),
              layers.Downsample2D(8, place=place), layers.Upsample2D(8, place=place)]
    blocks += [unet_blocks.Transformer2DModel(8, 2, 5, depth=1, linear_projection=linear,
                                              groups=4, place=place) for linear in (True, False)]
    found = []

    def walk(module: object) -> None:
        for child in (list(module) if isinstance(module, layers.nn.ModuleList)
                      else vars(module).values()):
            if hasattr(child, "place"):
                found.append(child.place)
            if isinstance(child, layers.nn.Module):
                walk(child)

    for block in blocks:
        walk(block)
    assert len(found) > 20 and set(found) == {(np.dtype(np.float16), device)}
    resnet = layers.ResnetBlock2D(64, 64, temb_channels=None, place=PLACE)
    assert (resnet.norm1.num_groups, resnet.norm1.eps, resnet.norm2.eps) == (32, 1e-5, 1e-5)
    assert resnet.shortcut_last is False
    assert blocks[-1].norm.eps == 1e-6


@pytest.mark.parametrize("linear", [False, True], ids=["conv", "linear"])
def test_transformer_2d(linear: bool) -> None:
    reference = randomized(TorchTransformer(num_attention_heads=2, attention_head_dim=4,
                                            in_channels=8, num_layers=2, cross_attention_dim=5,
                                            norm_num_groups=4, use_linear_projection=linear),
                           1, scale=1.0)
    ours = unet_blocks.Transformer2DModel(8, 2, 5, depth=2, linear_projection=linear,
                                          groups=4, place=PLACE)
    assert isinstance(ours.proj_in, host_gpustd.Linear if linear else host_gpustd.Conv2d)
    host_gpustd.load(ours, reference)
    x, context = normal(2, 8, 3, 5, seed=1), normal(2, 3, 5, seed=2)
    expected = run(reference, x, encoder_hidden_states=torch.from_numpy(context))
    got = ours(x.copy(), context)
    assert_close(got, expected, tol=TOL)
    assert differs(ours(x.copy(), context[::-1]), got)


def test_unet_block_parts() -> None:
    resnet = layers.ResnetBlock2D(4, 4, temb_channels=None, place=PLACE, groups=2)
    sampler = layers.Downsample2D(4, place=PLACE)
    attention = unet_blocks.Transformer2DModel(4, 2, 3, depth=1, linear_projection=True,
                                               groups=2, place=PLACE)
    block = unet_blocks.UNetBlock([resnet], [attention], sampler, "downsamplers")
    assert block.sampler() is sampler and block.downsamplers[0] is sampler
    assert block.attention(0) is attention and block.resnets[0] is resnet
    plain = unet_blocks.UNetBlock([resnet], None, None, "upsamplers")
    assert plain.sampler() is None and plain.attention(0) is None
