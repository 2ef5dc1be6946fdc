"""The preprocessors' networks replayed per input shape (diffusion.preprocessors.annotators'
ReplayedNetwork), on a stand-in network of a few ops: replays equal the eager results bit for
bit, a new input reaches the replay, other work between calls (which may take the lent
scratch) changes nothing, and a network that reads back stays eager. test_lineart checks a
real network's maps through preprocess."""

from __future__ import annotations

import numpy as np
import pytest

import gpucore
import gpustd
from diffusion.preprocessors import annotators


def _network(x: gpustd.Tensor) -> gpustd.Tensor:
    hidden = gpustd.sigmoid(x * 0.5 + 0.25)
    return gpustd.sigmoid(hidden * hidden - x)


def test_replays_equal_the_eager_calls(first_device: gpucore.Device,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal(shape).astype(np.float32)
              for shape in [(1, 3, 7, 5)] * 4 + [(1, 3, 4, 9)] * 3]
    monkeypatch.setattr(annotators, "REPLAY", False)
    eager = annotators.ReplayedNetwork(_network)
    want = [eager(gpustd.asarray(x, device=first_device)).numpy() for x in inputs]
    assert eager._captured.recordings == 0
    monkeypatch.setattr(annotators, "REPLAY", True)
    wrapper = annotators.ReplayedNetwork(_network)
    got = []
    for index, x in enumerate(inputs):
        if index == 3:  # other work, which may take the lent scratch
            held = [gpustd.asarray(np.ones(n, np.float32), device=first_device)
                    for n in (105, 128, 256, 1024)]
        wrapper.reclaim()
        got.append(wrapper(gpustd.asarray(x, device=first_device)).numpy())
    del held
    assert wrapper.replayable and wrapper._captured.replays >= 2
    assert all(entry.graph.lent for entry in wrapper._captured._entries.values())
    for mine, theirs in zip(got, want):
        np.testing.assert_array_equal(mine, theirs)
    assert np.abs(want[0] - want[1]).max() > 0.01  # the input matters
    wrapper.release()


def test_a_network_that_reads_back_stays_eager(first_device: gpucore.Device) -> None:
    calls = []

    def network(x: gpustd.Tensor) -> gpustd.Tensor:
        calls.append(1)
        return x * float(x.numpy().max())

    wrapper = annotators.ReplayedNetwork(network)
    values = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
    for scale in (1, 2, 3):
        got = wrapper(gpustd.asarray(values * scale, device=first_device)).numpy()
        np.testing.assert_array_equal(got, values * scale * 5 * scale)
    assert not wrapper.replayable and len(calls) == 4  # the failed recording, then eager
    host = annotators.ReplayedNetwork(lambda x: x * 2)  # a host array (the ONNX network's)
    for _ in range(3):
        np.testing.assert_array_equal(host(values), values * 2)
    assert host._captured.recordings == 0
