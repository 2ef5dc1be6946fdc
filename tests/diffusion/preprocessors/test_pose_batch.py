"""The openpose hand and face crops through their networks in batches (pose_batch): the same
maps as one call per crop, on the device's networks as on the host's stand-ins."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

import gpucore
from diffusion.models.annotators.openpose import HandPoseNetwork
from diffusion.preprocessors import pose_face, pose_hand
from diffusion.preprocessors.pose_batch import run_batched
from gpustd import asarray

torch = pytest.importorskip("torch", reason="torch is a test-only reference (extra: reference)")
from controlnet_aux_ref import random_handpose  # noqa: E402

_MIX = np.random.default_rng(0).standard_normal((22, 3)) * 6


def _stand_in(calls: list[tuple[int, ...]]) -> Any:
    """8x8 average pools and a random 1x1 mix (a few strong regions per map), logging the
    shape of each call."""
    def run(planes: np.ndarray) -> np.ndarray:
        calls.append(planes.shape)
        n, c, h, w = planes.shape
        pooled = planes[:, :, :h // 8 * 8, :w // 8 * 8].reshape(
            n, c, h // 8, 8, w // 8, 8).mean((3, 5))
        return (np.maximum(np.einsum("mc,nchw->nmhw", _MIX, pooled), 0) ** 2 - 0.02
                ).astype(np.float32)
    return run


@pytest.mark.nodevice
def test_run_batched_stacks_inputs_of_one_size_within_the_limit() -> None:
    rng = np.random.default_rng(1)
    sizes = [(16, 24), (8, 8), (16, 24), (16, 24), (8, 8), (24, 16)]
    inputs = [rng.standard_normal((1, 3, h, w)).astype(np.float32) for h, w in sizes]
    calls: list[tuple[int, ...]] = []
    got = run_batched(_stand_in(calls), inputs, max_pixels=2 * 16 * 24)
    alone = [_stand_in([])(x) for x in inputs]
    for mine, want in zip(got, alone, strict=True):
        np.testing.assert_array_equal(mine, want)
    assert sorted(calls) == sorted([(2, 3, 16, 24), (1, 3, 16, 24), (2, 3, 8, 8),
                                    (1, 3, 24, 16)])
    calls.clear()
    run_batched(_stand_in(calls), inputs, max_pixels=0)
    assert len(calls) == len(inputs)


@pytest.mark.nodevice
def test_people_hands_and_faces_batched_equal_one_call_each() -> None:
    """Two people of the same size (their hands' and faces' crops share sizes) and one
    smaller: the batched calls find what one call per crop finds, in fewer calls."""
    rng = np.random.default_rng(2)
    bgr = rng.integers(0, 256, (150, 230, 3), dtype=np.uint8)
    bgr[::7] //= 3  # stripes, so that the maps have regions
    first = [(60.0, 30.0), (60.0, 55.0), (45.0, 55.0), (38.0, 80.0), (34.0, 104.0),
             (75.0, 55.0), (83.0, 80.0), (88.0, 102.0)] + [None] * 6 + [
             (55.0, 25.0), (65.0, 25.0), (50.0, 28.0), (70.0, 28.0)]
    second = [None if p is None else (p[0] + 100, p[1]) for p in first]
    third = [None if p is None else (p[0] / 2 + 20, p[1] / 2 + 60) for p in first]
    people = [first, second, third]
    calls: list[tuple[int, ...]] = []
    batched = pose_hand.detect_people_hands(bgr, people, _stand_in(calls), max_pixels=1 << 20)
    alone = [pose_hand.detect_hands(bgr, person, _stand_in([])) for person in people]
    assert batched == alone and sum(x > 0 for x, _ in alone[0][0] or []) > 10
    assert len(calls) < 4 * sum(hand is not None for pair in alone for hand in pair)
    faces = pose_face.detect_faces(bgr, people, _stand_in([]), max_pixels=1 << 20)
    assert faces == [pose_face.detect_face(bgr, person, _stand_in([])) for person in people]
    assert faces[0] and faces[1]


def test_hand_network_batch_equals_handpose_model(first_device: gpucore.Device) -> None:
    """Three pictures at once through the device's hand network: each image's maps as
    torch's (the convolutions keep the images apart)."""
    network, flat = random_handpose(6)
    x = np.random.default_rng(3).uniform(-0.5, 0.5, (3, 3, 24, 32)).astype(np.float32)
    with torch.no_grad():
        want = network(torch.from_numpy(x)).numpy()
    ours = HandPoseNetwork.from_state_dict(flat, device=first_device)
    got = ours(asarray(x, device=ours.device)).numpy()
    assert got.shape == (3, 22, 3, 4) and want.std() > 1e-2
    assert np.abs(want[0] - want[1]).max() > 0.1 * np.abs(want).max()
    np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-3 * np.abs(want).max())
