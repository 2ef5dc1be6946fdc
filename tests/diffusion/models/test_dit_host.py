"""The diffusion transformers' blocks on the host (numpy standing in for gpustd,
host_gpustd.py) against diffusers' torch modules on the CPU: FLUX's double-stream block and
whole transformer (guidance embedding, single-stream blocks, a ControlNet's residuals spread
over the blocks), SD3's joint block (QK-norm, SD3.5 Medium's second attention, the last
block's text stream ending), and --int8's fused norm passes reaching the same values. Which
norm, residual, modulation chunk and embedding each block uses is what is checked here, in
seconds; test_flux.py and test_sd3.py run the same models on the device."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference (extra: reference)")
import diffusers
import host_gpustd
import torch
from diffusers.models.attention import FeedForward as TorchFeedForward
from diffusers.models.attention import JointTransformerBlock as TorchJointBlock
from diffusers.models.embeddings import (
    CombinedTimestepGuidanceTextProjEmbeddings,
    CombinedTimestepTextProjEmbeddings,
)
from diffusers.models.transformers.transformer_flux import (
    FluxSingleTransformerBlock,
    FluxTransformerBlock,
)
from sd_tiny import randomized
from support import assert_close

from diffusion.models import dit_layers, flux, transformer_ops
from diffusion.models.dit_layers import JointTransformerBlock

pytestmark = pytest.mark.nodevice

TOL = 1e-4  # float32 against torch float32: measured 1.0e-5 at most (FLUX dev, whole model)
# one layer or block, where the tanh GELU's 1e-4 distance from the exact one must show
BLOCK_TOL = 1e-5  # measured 1.1e-6 at most
PLACE = {"dtype": np.float32, "device": None}
FLUX_HOST = dict(patch_size=1, in_channels=6, num_layers=3, num_single_layers=3,
                 attention_head_dim=8, num_attention_heads=2, joint_attention_dim=5,
                 pooled_projection_dim=7, axes_dims_rope=(2, 2, 4))


@pytest.fixture(autouse=True)
def host(monkeypatch: pytest.MonkeyPatch) -> None:
    host_gpustd.stand_in(monkeypatch)


def normal(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def torch_all(*arrays: np.ndarray) -> list[torch.Tensor]:
    return [torch.from_numpy(a) for a in arrays]


@pytest.mark.parametrize("guidance", [False, True], ids=["schnell", "dev"])
def test_time_text_embedding(guidance: bool) -> None:
    cls = (CombinedTimestepGuidanceTextProjEmbeddings if guidance
           else CombinedTimestepTextProjEmbeddings)
    reference = randomized(cls(16, 7), 1, scale=1.0)
    ours = dit_layers.CombinedTimestepTextProjEmbeddings(16, 7, PLACE, guidance=guidance)
    host_gpustd.load(ours, reference)
    t, g, pooled = np.array([91.3, 47.5], np.float32), [35.0, 12.5], normal(2, 7)
    with torch.no_grad():
        tt, tp = torch_all(t, pooled)
        expected = (reference(tt, torch.tensor(g), tp) if guidance
                    else reference(tt, tp)).numpy()
    got = ours(t, pooled, g if guidance else None)
    assert_close(got, expected, tol=TOL)
    # each input matters (the rows swapped)
    assert np.abs(ours(t[::-1], pooled, g if guidance else None) - got).max() > 100 * TOL
    assert np.abs(ours(t, pooled[::-1], g if guidance else None) - got).max() > 100 * TOL
    if guidance:
        assert np.abs(ours(t, pooled, g[::-1]) - got).max() > 100 * TOL


def test_time_text_embedding_inputs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A Tensor reaches the sinusoid as it is (a captured step's input), host numbers as
    float32 (B,); both on pooled's device in the model's dtype, 256 features, cos first."""
    ours = dit_layers.CombinedTimestepTextProjEmbeddings(16, 7, PLACE, guidance=True)
    host_gpustd.load(ours, randomized(CombinedTimestepGuidanceTextProjEmbeddings(16, 7), 1))
    calls = []

    def recording(values, dim, **options):
        calls.append((values, dim, options))
        return host_gpustd.timestep_embedding(values, dim, **options)

    monkeypatch.setattr(dit_layers.nn, "timestep_embedding", recording)
    t, pooled = np.array([91.3, 47.5], np.float32), normal(2, 7)
    ours(t, pooled, [[35.0], [12.5]])
    assert calls[0][0] is t
    guidance = calls[1][0]
    assert type(guidance) is np.ndarray and guidance.dtype == np.float32
    np.testing.assert_array_equal(guidance, [35.0, 12.5])
    for _, dim, options in calls:
        assert dim == 256 and options == dict(flip_sin_to_cos=True, downscale_freq_shift=0,
                                              dtype=np.float32, device=pooled.device)


def test_layer_norm_and_feed_forward() -> None:
    """The blocks' parameterless LayerNorm at eps 1e-6 (visible at x ~ 1e-3), and the
    feed-forward's tanh GELU (diffusers' "gelu-approximate")."""
    x = 0.002 * normal(2, 3, 16)
    expected = torch.nn.functional.layer_norm(torch.from_numpy(x), (16,), eps=1e-6).numpy()
    assert_close(dit_layers.layer_norm(x), expected, tol=BLOCK_TOL)
    reference = randomized(TorchFeedForward(16, 16, activation_fn="gelu-approximate"), 6,
                           scale=1.0)
    ours = dit_layers.FeedForward(16, PLACE)
    host_gpustd.load(ours, reference)
    x = 3 * normal(2, 3, 16)
    assert_close(ours(x), run(reference, x), tol=BLOCK_TOL)


def run(module: torch.nn.Module, *arrays: np.ndarray, **kwargs: object) -> Any:
    with torch.no_grad():
        out = module(*torch_all(*arrays), **kwargs)
    return out.numpy() if isinstance(out, torch.Tensor) else out


def test_flux_single_block_and_mask() -> None:
    """FLUX's single-stream block; a mask dropping keys gives the other tokens what the block
    gives them without those tokens (Chroma's text padding)."""
    reference = randomized(FluxSingleTransformerBlock(16, 2, 8), 8, scale=0.5)
    ours = flux.FluxSingleTransformerBlock(16, 2, 8, PLACE)
    host_gpustd.load(ours, reference)
    text, image, temb = normal(2, 3, 16, seed=1), normal(2, 5, 16, seed=2), normal(2, 16, seed=3)
    ids = np.random.default_rng(4).uniform(0, 9, (8, 3)).astype(np.float32)
    rotary = flux.rope_tables(ids, (2, 2, 4), 10000.0, device=None)
    context_ref, x_ref = run(reference, image, text, temb,
                             image_rotary_emb=tuple(torch.from_numpy(t[:, 0]) for t in rotary))
    x = np.concatenate([text, image], axis=1)
    got = ours(x, temb, rotary)
    assert_close(got, np.concatenate([context_ref.numpy(), x_ref.numpy()], axis=1),
                 tol=BLOCK_TOL)
    keep = np.array([True, False, True] + [True] * 5)
    shift, scale, gate = ours.norm(temb)
    masked = ours.modulated(x, shift, scale, gate, rotary, keep[None, None, None].astype(np.uint32))
    without = ours.modulated(x[:, keep], shift, scale, gate,
                             tuple(t[keep] for t in rotary))
    assert_close(masked[:, keep], without, tol=BLOCK_TOL)
    assert np.abs(got[:, keep] - without).max() > 100 * BLOCK_TOL


def test_joint_attention_mask() -> None:
    """Text tokens masked out of the keys: every token gets what it gets without them."""
    ours = dit_layers.JointAttention(16, 2, 8, PLACE, qk_norm=True, context=True)
    host_gpustd.load(ours, randomized(FluxTransformerBlock(16, 2, 8), 4, scale=0.5).attn)
    x, context = normal(2, 17, 16, seed=1), normal(2, 3, 16, seed=2)  # more tokens than width
    keep = np.array([True, False, True])
    mask = np.concatenate([keep, [True] * 17])[None, None, None].astype(np.uint32)
    image, text = ours(x, context, None, mask)
    image_without, text_without = ours(x, context[:, keep])
    assert_close(image, image_without, tol=BLOCK_TOL)
    assert_close(text[:, keep], text_without, tol=BLOCK_TOL)
    assert np.abs(ours(x, context)[0] - image).max() > 100 * BLOCK_TOL
    bare = dit_layers.JointAttention(16, 2, 8, PLACE, qk_norm=True, context=True, out=False,
                                     context_out=False)
    for name in ("to_q", "to_k", "to_v", "add_q_proj", "add_k_proj", "add_v_proj", "norm_q",
                 "norm_k", "norm_added_q", "norm_added_k"):
        setattr(bare, name, getattr(ours, name))
    heads, no_text = bare(x, context, None, mask)
    assert no_text is None
    assert_close(ours.to_out[0](heads), image, tol=BLOCK_TOL)


def count_layer_norms(monkeypatch: pytest.MonkeyPatch) -> list[None]:
    """A list that gets an entry per modulated norm pass (nn.layer_norm_modulate, whether
    given its shift and scale or reading them in place: transformer_ops.Modulation) from now
    on."""
    calls: list[None] = []
    original = host_gpustd.NN.layer_norm_modulate
    monkeypatch.setattr(host_gpustd.NN, "layer_norm_modulate", lambda *args, **kwargs: (
        calls.append(None), original(*args, **kwargs))[1])
    return calls


def sd3_block(context_pre_only: bool, dual: bool, qk_norm: bool = True
              ) -> tuple[TorchJointBlock, JointTransformerBlock]:
    reference = randomized(TorchJointBlock(16, 2, 8, context_pre_only=context_pre_only,
                                           qk_norm="rms_norm" if qk_norm else None,
                                           use_dual_attention=dual),
                           2, scale=0.5)
    ours = JointTransformerBlock(16, 2, 8, PLACE, qk_norm=qk_norm,
                                 context_pre_only=context_pre_only, dual=dual)
    host_gpustd.load(ours, reference)
    return reference, ours


@pytest.mark.parametrize(("context_pre_only", "dual", "qk_norm"),
                         [(False, False, True), (True, False, True), (False, True, True),
                          (False, False, False)], ids=["joint", "last", "dual", "sd3-medium"])
def test_sd3_joint_block(monkeypatch: pytest.MonkeyPatch, context_pre_only: bool, dual: bool,
                         qk_norm: bool) -> None:
    reference, ours = sd3_block(context_pre_only, dual, qk_norm)
    x, context, temb = normal(2, 6, 16, seed=1), normal(2, 3, 16, seed=2), normal(2, 16, seed=3)
    with torch.no_grad():
        context_ref, x_ref = reference(*torch_all(x, context, temb))
    norms = count_layer_norms(monkeypatch)
    got_x, got_context = ours(x, context, temb)
    # one pass per stream and sublayer, SD3.5's second attention its own (a norm and its
    # modulation in one pass, cheaper than sharing a plain norm between two modulations)
    assert len(norms) == (3 if context_pre_only else 5 if dual else 4)
    assert_close(got_x, x_ref.numpy(), tol=TOL)
    if context_pre_only:
        assert got_context is None and context_ref is None
    else:
        assert_close(got_context, context_ref.numpy(), tol=TOL)
    # every input reaches the image stream
    for i, changed in enumerate((x[::-1], context[::-1], temb[::-1])):
        args = [x, context, temb]
        args[i] = changed
        assert np.abs(ours(*args)[0] - got_x).max() > 100 * TOL


def test_flux_block_and_modulated_input() -> None:
    reference = randomized(FluxTransformerBlock(16, 2, 8), 4, scale=0.5)
    ours = JointTransformerBlock(16, 2, 8, PLACE, qk_norm=True)
    host_gpustd.load(ours, reference)
    x, context, temb = normal(2, 6, 16, seed=1), normal(2, 3, 16, seed=2), normal(2, 16, seed=3)
    ids = np.random.default_rng(4).uniform(0, 9, (9, 3)).astype(np.float32)
    rotary = flux.rope_tables(ids, (2, 2, 4), 10000.0, device=None)
    torch_rotary = tuple(torch.from_numpy(t[:, 0]) for t in rotary)
    with torch.no_grad():
        context_ref, x_ref = reference(*torch_all(x, context, temb),
                                       image_rotary_emb=torch_rotary)
        normed_ref = reference.norm1(torch.from_numpy(x), emb=torch.from_numpy(temb))[0]
    got_x, got_context = ours(x, context, temb, rotary)
    assert_close(got_x, x_ref.numpy(), tol=TOL)
    assert_close(got_context, context_ref.numpy(), tol=TOL)
    assert_close(ours.modulated_input(x, temb), normed_ref.numpy(), tol=TOL)
    assert np.abs(ours(x, context, temb)[0] - got_x).max() > 100 * TOL  # RoPE matters


def flux_pair(guidance: bool) -> tuple[diffusers.FluxTransformer2DModel,
                                       flux.FluxTransformer2DModel]:
    reference = randomized(diffusers.FluxTransformer2DModel(**FLUX_HOST,
                                                            guidance_embeds=guidance),
                           5, scale=0.5)
    ours = flux.FluxTransformer2DModel(dict(reference.config))
    host_gpustd.load(ours, reference)
    return reference, ours


@pytest.mark.parametrize("guidance", [False, True], ids=["schnell", "dev"])
def test_flux_transformer(monkeypatch: pytest.MonkeyPatch, guidance: bool) -> None:
    """The whole model with a ControlNet's 3 double and 2 single residuals over its 3 + 3
    blocks (diffusers: residual i // ceil(blocks / residuals)), more tokens than features."""
    reference, ours = flux_pair(guidance)
    latents, text, pooled = normal(2, 15, 6, seed=1), normal(2, 4, 5, seed=2), normal(2, 7)
    t, scale = np.array([0.83, 0.25], np.float32), np.array([3.5, 1.5], np.float32)
    img_ids = np.stack([np.zeros(15), np.arange(15) // 5, np.arange(15) % 5], 1).astype(
        np.float32)
    txt_ids = np.zeros((4, 3), np.float32)
    double = [normal(2, 15, 16, seed=10 + i) for i in range(3)]
    single = [normal(2, 15, 16, seed=20 + i) for i in range(2)]
    with torch.no_grad():
        expected = reference(*torch_all(latents, text, pooled, t, img_ids, txt_ids),
                             guidance=torch.from_numpy(scale) if guidance else None,
                             controlnet_block_samples=torch_all(*double),
                             controlnet_single_block_samples=torch_all(*single)).sample.numpy()
    got = ours(latents, text, pooled, t, img_ids, txt_ids, scale if guidance else None,
               control=(double, single))
    assert_close(got, expected, tol=TOL)
    devices = []
    monkeypatch.setattr(transformer_ops, "asarray", lambda a, dtype=None, device=None: (
        devices.append(device), np.array(a, dtype))[1])
    tables = ours.rotary(txt_ids, img_ids)
    assert devices == [ours.x_embedder.weight.device] * 2
    again = ours(latents, text, pooled, list(t), None, None, scale if guidance else None,
                 rotary=tables, control=(double, single))
    assert_close(again, expected, tol=TOL)
    plain = ours(latents, text, pooled, t, img_ids, txt_ids, scale if guidance else None)
    for residuals in ([double[1], double[1], double[2]], [double[0], double[0], double[2]]):
        moved = ours(latents, text, pooled, t, img_ids, txt_ids, scale if guidance else None,
                     control=(residuals, single))
        assert np.abs(moved - got).max() > 100 * TOL  # which residual reaches a block matters
    moved = ours(latents, text, pooled, t, img_ids, txt_ids, scale if guidance else None,
                 control=(double, single[::-1]))
    assert np.abs(moved - got).max() > 100 * TOL
    assert np.abs(plain - got).max() > 100 * TOL
    if guidance:
        other = ours(latents, text, pooled, t, img_ids, txt_ids, scale[::-1])
        assert np.abs(other - plain).max() > 100 * TOL


class DeviceArray(np.ndarray):
    """An array whose reshape takes only -1 for the size to infer, as gpustd's Tensor."""

    def reshape(self, *shape: Any) -> Any:
        assert all(size >= -1 for size in np.ravel(shape)), shape
        return super().reshape(*shape)


def test_flux_checks() -> None:
    _, dev = flux_pair(True)
    x = normal(1, 4, 6)
    with pytest.raises(ValueError, match=r"^this FLUX transformer embeds a guidance scale "
                                         r"\(dev\): pass guidance=$"):
        dev(x, normal(1, 2, 5), normal(1, 7), [0.5], np.zeros((4, 3)), np.zeros((2, 3)))
    _, schnell = flux_pair(False)
    with pytest.raises(ValueError, match=r"^this FLUX transformer has no guidance embedding "
                                         r"\(schnell\): pass guidance=None$"):
        schnell(x, normal(1, 2, 5), normal(1, 7), [0.5], np.zeros((4, 3)), np.zeros((2, 3)),
                [3.5])
    assert flux._residuals([], 3) is None
    with pytest.raises(TypeError, match="must be float32, got float16"):
        schnell._thousandfold(np.ones(2, np.float16))
    scaled = schnell._thousandfold(np.array([[0.25], [0.5]], np.float32).view(DeviceArray))
    np.testing.assert_array_equal(scaled, np.array([250.0, 500.0], np.float32))
    host = schnell._thousandfold([[0.125], [0.5]])
    assert host.dtype == np.float32
    np.testing.assert_array_equal(host, np.array([125.0, 500.0], np.float32))


@pytest.mark.parametrize(("context_pre_only", "dual"), [(False, False), (False, True)],
                         ids=["joint", "dual"])
def test_int8_passes(monkeypatch: pytest.MonkeyPatch, context_pre_only: bool,
                     dual: bool) -> None:
    """Under --int8 (W8A8 layers reading a norm), the block makes each modulated norm and the
    feed-forward's GELU in one pass quantizing for the first reader's smoothing: stand-ins
    for those passes record which smoothing they were given and return the unquantized
    values, so that the block's output is still diffusers'."""
    reference, ours = sd3_block(context_pre_only, dual)
    calls: list[tuple[str, object]] = []

    def int8_input(layers: list) -> tuple:
        return (layers[0],)

    def layer_norm_int8(x, shift, scale, *, eps, smooth):
        calls.append(("norm", smooth))
        return host_gpustd.KERNELS["_modulate"](host_gpustd.layer_norm(x, eps=eps), shift, scale)

    def gelu_int8(x, *, approximate, smooth):
        calls.append(("gelu", smooth))
        return host_gpustd.gelu(x, approximate=approximate)

    monkeypatch.setattr(host_gpustd.Linear, "int8_input", staticmethod(int8_input))
    monkeypatch.setattr(dit_layers, "layer_norm_int8", layer_norm_int8)
    monkeypatch.setattr(dit_layers, "gelu_int8", gelu_int8)
    x, context, temb = normal(2, 6, 16, seed=1), normal(2, 3, 16, seed=2), normal(2, 16, seed=3)
    with torch.no_grad():
        context_ref, x_ref = reference(*torch_all(x, context, temb))
    norms = count_layer_norms(monkeypatch)
    got_x, got_context = ours(x, context, temb)
    if not dual:  # every norm made with its quantization, none apart
        assert norms == []
    assert_close(got_x, x_ref.numpy(), tol=TOL)
    assert_close(got_context, context_ref.numpy(), tol=TOL)
    a = ours.attn
    expected = [("norm", a.add_q_proj), ("norm", a.to_q)]
    if dual:
        expected.append(("norm", ours.attn2.to_q))
    expected += [("norm", ours.ff.net[0].proj), ("gelu", ours.ff.net[2]),
                 ("norm", ours.ff_context.net[0].proj), ("gelu", ours.ff_context.net[2])]
    assert [(op, id(s)) for op, s in calls] == [(op, id(s)) for op, s in expected]
    # a GELU whose forward was replaced (a hook) is called, not fused with the quantization
    gelu = ours.ff.net[0]
    gelu.forward = lambda h: host_gpustd.gelu(gelu.proj(h))
    calls.clear()
    h = normal(2, 6, 16, seed=4)
    assert_close(ours.ff(h), ours.ff.net[2](host_gpustd.gelu(gelu.proj(h))), tol=BLOCK_TOL)
    assert calls == []


def linears(module: Any) -> list[host_gpustd.Linear]:
    found = []
    children = (list(module) if isinstance(module, dit_layers.nn.ModuleList)
                else list(vars(module).values()))
    for child in children:
        if isinstance(child, host_gpustd.Linear):
            found.append(child)
        elif isinstance(child, dit_layers.nn.Module):
            found += linears(child)
    return found


def test_placement_and_biases(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every layer in the model's dtype on its device; `bias=False` (FLUX.2's) drops every
    bias; the norms' eps and the MLP's width as asked."""
    device, made = object(), []
    monkeypatch.setattr(transformer_ops.nn, "parameter", lambda shape, dtype, device: (
        made.append((np.dtype(dtype), device)), np.ones(shape, dtype))[1])
    model = flux.FluxTransformer2DModel({**FLUX_HOST, "guidance_embeds": True},
                                        dtype=np.float16, device=device)
    place = {"dtype": np.float16, "device": device}
    blocks = [model, JointTransformerBlock(16, 2, 8, place, qk_norm=True, dual=True),
              JointTransformerBlock(16, 2, 8, place, qk_norm=True, context_pre_only=True)]
    layers = [layer for block in blocks for layer in linears(block)]
    assert len(layers) > 50
    assert {layer.place for layer in layers} == {(np.dtype(np.float16), device)}
    assert made and set(made) == {(np.dtype(np.float16), device)}
    plain = [dit_layers.JointAttention(16, 2, 8, PLACE, qk_norm=True, context=True, bias=False,
                                       eps=0.25),
             dit_layers.TimestepEmbedding(7, 16, PLACE, bias=False),
             dit_layers.AdaLayerNormContinuous(16, PLACE, bias=False)]
    assert all(layer.bias is None for block in plain for layer in linears(block))
    assert {norm.eps for norm in (plain[0].norm_q, plain[0].norm_k, plain[0].norm_added_q,
                                  plain[0].norm_added_k)} == {0.25}
    assert flux.SingleStreamBlock(16, 2, 8, PLACE).proj_mlp.weight.shape == (64, 16)
    patches = flux.FluxTransformer2DModel({**FLUX_HOST, "patch_size": 2})
    assert patches.proj_out.weight.shape == (2 * 2 * 6, 16)
    assert flux.FluxSingleTransformerBlock(16, 2, 8, PLACE, 2.0).proj_mlp.weight.shape == (32, 16)


def test_single_block_int8(monkeypatch: pytest.MonkeyPatch) -> None:
    """Under --int8 the single-stream block's modulated norm is quantized for its first
    reader, to_q (the attention's projections and proj_mlp read it)."""
    reference = randomized(FluxSingleTransformerBlock(16, 2, 8), 8, scale=0.5)
    ours = flux.FluxSingleTransformerBlock(16, 2, 8, PLACE)
    host_gpustd.load(ours, reference)
    x, temb = normal(2, 8, 16, seed=1), normal(2, 16, seed=3)
    expected = ours(x, temb, None)
    smooths = []

    def layer_norm_int8(x, shift, scale, *, eps, smooth):
        smooths.append(smooth)
        return host_gpustd.KERNELS["_modulate"](host_gpustd.layer_norm(x, eps=eps), shift, scale)

    monkeypatch.setattr(host_gpustd.Linear, "int8_input", staticmethod(lambda layers: (
        layers[0],)))
    monkeypatch.setattr(dit_layers, "layer_norm_int8", layer_norm_int8)
    assert_close(ours(x, temb, None), expected, tol=BLOCK_TOL)
    assert smooths == [ours.attn.to_q]


class RecordingCache:
    """A step cache branch that checks its probe and runs the blocks (step_cache's
    interface: run(x, context, head, tail, probe))."""

    def __init__(self) -> None:
        self.probes: list[Any] = []

    def run(self, x, context, head, tail, probe):
        self.probes.append(None if probe is None else probe(x))
        return tail(*head(x, context))


def test_flux_step_cache_probe() -> None:
    """A step cache gets the blocks and, to measure, the first block's modulated input."""
    reference, ours = flux_pair(False)
    latents, text, pooled = normal(2, 6, 6, seed=1), normal(2, 4, 5, seed=2), normal(2, 7)
    img_ids = np.stack([np.zeros(6), np.arange(6) // 3, np.arange(6) % 3], 1).astype(np.float32)
    txt_ids = np.zeros((4, 3), np.float32)
    cache = RecordingCache()
    got = ours(latents, text, pooled, [0.5, 0.25], img_ids, txt_ids, cache=cache)
    assert_close(got, ours(latents, text, pooled, [0.5, 0.25], img_ids, txt_ids), tol=TOL)
    temb = ours.time_text_embed(np.array([500.0, 250.0], np.float32), pooled)
    normed = reference.transformer_blocks[0].norm1(
        torch.from_numpy(ours.x_embedder(latents)), emb=torch.from_numpy(temb))[0]
    assert len(cache.probes) == 1
    assert_close(cache.probes[0], normed.detach().numpy(), tol=TOL)
    no_doubles = flux.FluxTransformer2DModel({**FLUX_HOST, "num_layers": 0})
    cache = RecordingCache()
    no_doubles(latents, text, pooled, [0.5, 0.25], img_ids, txt_ids, cache=cache)
    assert cache.probes == [None]
