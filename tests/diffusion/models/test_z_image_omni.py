"""The Z-Image Omni transformer against diffusers' ZImageTransformer2DModel (siglip_feat_dim
set) in its omni mode on torch CPU: tiny random weights, random condition latents and
SigLIP2 features."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any
from unittest import mock

import numpy as np
import pytest

pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
import torch
from sd_tiny import state_dict
from support import assert_close
from zimage_tiny import ZIMAGE_OMNI_TINY, ZIMAGE_TINY, tiny_zimage_omni_transformer

import gpucore
from diffusion.models.z_image_blocks import CleanModulation
from diffusion.models.z_image_omni import ZImageOmniTransformer2DModel, omni_layout
from gpustd import asarray

TOL = 1e-4  # float32: measured 6e-6 of the largest output
CHANNELS, CAP, SIGLIP = ZIMAGE_TINY["in_channels"], ZIMAGE_TINY["cap_feat_dim"], 24


def _reference(model: torch.nn.Module, latents: np.ndarray, t: np.ndarray,
               captions: list[list[np.ndarray]], conditions: list[np.ndarray],
               siglips: list[np.ndarray]) -> np.ndarray:
    """diffusers' omni call as ZImageOmniPipeline makes it: every picture with the same
    conditions, the target last, SigLIP None in its place."""
    batch = len(latents)
    x = [[torch.from_numpy(c[0][:, None]) for c in conditions]
         + [torch.from_numpy(latents[i][:, None])] for i in range(batch)]
    sig = [[torch.from_numpy(s) for s in siglips] + [None] if siglips else None
           for _ in range(batch)]
    with torch.no_grad():
        out = model(x=x, t=torch.from_numpy(t),
                    cap_feats=[[torch.from_numpy(p) for p in c] for c in captions],
                    siglip_feats=sig, image_noise_mask=[[0] * len(conditions) + [1]] * batch,
                    return_dict=False)[0]
    return torch.stack(out).squeeze(2).numpy()


def _case(rng: np.random.Generator) -> tuple[np.ndarray, list[list[np.ndarray]],
                                             list[np.ndarray], list[np.ndarray]]:
    """Two pictures of 6 x 8 latents with two conditions (4 x 6 and 6 x 4 latents, SigLIP
    grids 3 x 5 and 4 x 4); caption pieces of 5, 3, 12, 4 and 40, 2, 7, 3 tokens (the 40
    padded to 64, shifting the later pieces' positions)."""
    latents = rng.standard_normal((2, CHANNELS, 6, 8)).astype(np.float32)
    conditions = [rng.standard_normal((1, CHANNELS, h, w)).astype(np.float32)
                  for h, w in ((4, 6), (6, 4))]
    siglips = [rng.standard_normal((h, w, SIGLIP)).astype(np.float32) for h, w in ((3, 5), (4, 4))]
    captions = [[rng.standard_normal((n, CAP)).astype(np.float32) for n in lengths]
                for lengths in ((5, 3, 12, 4), (40, 2, 7, 3))]
    return latents, captions, conditions, siglips


def test_omni_equals_diffusers(device: gpucore.Device) -> None:
    reference = tiny_zimage_omni_transformer()
    ours = ZImageOmniTransformer2DModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    latents, captions, conditions, siglips = _case(np.random.default_rng(1))
    t = np.array([0.3, 0.7], np.float32)

    def run(conds: list[np.ndarray], sigs: list[np.ndarray]) -> np.ndarray:
        got = ours(asarray(latents, device=device), t,
                   [[asarray(p, device=device) for p in c] for c in captions],
                   [asarray(c, device=device) for c in conds],
                   [asarray(s, device=device) for s in sigs]).numpy()
        assert_close(got, _reference(reference, latents, t, captions, conds, sigs), tol=TOL)
        return got

    got = run(conditions, siglips)
    # a condition picture's latents and its SigLIP features each visibly matter (redrawn,
    # 3.5% of the output's mean size or more: 300 times the tolerance)
    other = np.random.default_rng(5)
    for changed in (run([conditions[0], other.standard_normal(conditions[1].shape)
                         .astype(np.float32)], siglips),
                    run(conditions, [siglips[0], other.standard_normal(siglips[1].shape)
                                     .astype(np.float32)])):
        assert np.abs(changed - got).mean() > 0.02 * np.abs(got).mean()


def test_omni_without_conditions(device: gpucore.Device) -> None:
    """Text to image: one caption piece, the caption before the image, every token noisy."""
    reference = tiny_zimage_omni_transformer()
    ours = ZImageOmniTransformer2DModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    rng = np.random.default_rng(2)
    latents = rng.standard_normal((1, CHANNELS, 4, 6)).astype(np.float32)
    captions = [[rng.standard_normal((9, CAP)).astype(np.float32)]]
    t = np.array([0.4], np.float32)
    got = ours(asarray(latents, device=device), t,
               [[asarray(captions[0][0], device=device)]]).numpy()
    assert_close(got, _reference(reference, latents, t, captions, [], []), tol=TOL)


@pytest.mark.nodevice
def test_layout_positions() -> None:
    """The positions diffusers gives: pieces at 1, 1 + 5 + 2, ...; image j at the end of
    piece j, its SigLIP one further, scaled onto the latents' grid."""
    layout = omni_layout([5, 40, 3], [(4, 6), (2, 2)], [(3, 3)], 2)
    assert layout.cap_ids[:3, 0].tolist() == [1, 2, 3]
    # piece 0's 27 padding positions come after its 32, so piece 1 starts 27 tokens late
    assert layout.cap_ids[32:32 + 27, 0].tolist() == [0] * 27
    assert layout.cap_ids[59, 0] == 8
    assert layout.cap_noisy.tolist() == [0] * 32 + [1] * 64 + [1] * 32
    assert layout.image_ids[0].tolist() == [6, 0, 0] and layout.image_ids[5].tolist() == [6, 1, 2]
    assert layout.image_ids[32].tolist() == [6 + 2 + 40, 0, 0] and layout.target == 32
    assert layout.siglip_ids[:9, 0].tolist() == [7] * 9
    assert layout.siglip_ids[:9, 1].tolist() == [0, 0, 0, 1, 1, 1, 3, 3, 3]
    assert layout.siglip_noisy.tolist() == [0] * 32 + [1] * 32


@pytest.mark.nodevice
def test_configs_get_one_line() -> None:
    with pytest.raises(ValueError, match="not a Z-Image Omni"):
        ZImageOmniTransformer2DModel(ZIMAGE_TINY)
    assert ZIMAGE_OMNI_TINY["siglip_feat_dim"] == SIGLIP


def test_omni_f16(f16_device: gpucore.Device) -> None:
    """float16 weights (the per-token gates' clipped float16 kernel), one condition picture:
    diffusers' float32 output to float16 error."""
    reference = tiny_zimage_omni_transformer()
    ours = ZImageOmniTransformer2DModel(dict(reference.config), dtype=np.float16,
                                        device=f16_device)
    ours.load_state_dict(state_dict(reference))
    latents, captions, conditions, siglips = _case(np.random.default_rng(3))
    latents, conditions, siglips = latents[:1], conditions[:1], siglips[:1]
    captions = [captions[0][:1] + captions[0][2:]]  # three pieces for one picture
    t = np.array([0.6], np.float32)
    got = ours(asarray(latents, dtype=np.float16, device=f16_device), t,
               [[asarray(p, device=f16_device) for p in captions[0]]],
               [asarray(conditions[0], dtype=np.float16, device=f16_device)],
               [asarray(siglips[0], device=f16_device)]).numpy()
    assert got.dtype == np.float16
    expected = _reference(reference, latents, t, captions, conditions, siglips)
    assert_close(got.astype(np.float32), expected, tol=1e-2)  # measured 1.5e-3 of the largest


@contextlib.contextmanager
def _uploads(device: gpucore.Device) -> Iterator[list[int]]:
    """The size in bytes of each upload made inside."""
    sizes: list[int] = []
    write = device.write_bytes

    def upload(buffer: Any, offset: int, data: Any) -> None:
        sizes.append(len(memoryview(data).cast("B")))
        write(buffer, offset, data)

    with mock.patch.object(device, "write_bytes", upload):
        yield sizes


def test_clean_modulation_made_once(device: gpucore.Device) -> None:
    """A denoising's steps share one CleanModulation: the clean timestep's embedding and each
    modulated block's adaLN output of it are made on the first step only; a later step's
    output is bit-identical to one that makes them again, in fewer dispatches (the
    embedder's and the 3 modulated blocks' adaLN linears and chunk copies: 19 here), and
    without uploading the noise flags again."""
    from bench._harness import counting

    reference = tiny_zimage_omni_transformer()
    ours = ZImageOmniTransformer2DModel(dict(reference.config), device=device)
    ours.load_state_dict(state_dict(reference))
    latents, captions, conditions, siglips = _case(np.random.default_rng(4))

    def step(t: float, clean: CleanModulation | None) -> np.ndarray:
        return ours(asarray(latents, device=device), np.array([t, t], np.float32),
                    [[asarray(p, device=device) for p in c] for c in captions],
                    [asarray(c, device=device) for c in conditions],
                    [asarray(s, device=device) for s in siglips], clean=clean).numpy()

    kept = CleanModulation()
    step(0.2, kept)  # the first step makes them
    with counting(device) as again, _uploads(device) as sent:
        fresh = step(0.6, None)
    with counting(device) as shared, _uploads(device) as reused:
        got = step(0.6, kept)
    assert np.array_equal(got, fresh)
    # what a later step saves is all that making them takes, and nothing else changes
    with counting(device) as made, _uploads(device) as making:
        probe = CleanModulation()
        probe.temb = ours.t_embedder(np.full(1, 1000.0, np.float32), device)
        for block in (*ours.noise_refiner, *ours.layers):
            mods = probe.of(block)
            _ = [mods[i] for i in range(4)]
    assert sum(again.values()) - sum(shared.values()) == sum(made.values()) > 0
    # and the noise flags, uploaded on the first step only, each once: the noise refiner's
    # (alike in both pictures: the same conditions) and each picture's whole sequence's
    assert len(sent) - len(reused) == len(making) + 3
