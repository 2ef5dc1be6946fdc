"""bench/_harness.py's torch baseline: the best eager configuration a torch user gets
(issue 25), checked with a fake torch, no GPU."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from bench import _harness

pytestmark = pytest.mark.nodevice


def test_best_eager_keeps_the_faster_configuration_and_both_timings(
        monkeypatch: pytest.MonkeyPatch) -> None:
    torch = SimpleNamespace(backends=SimpleNamespace(cudnn=SimpleNamespace(benchmark=False)))
    # wall and CUDA-event times by cudnn.benchmark: "on" is faster by wall here
    wall = {False: 40.0, True: 31.0}
    events = {False: 39.0, True: 33.0}
    monkeypatch.setattr(_harness, "torch_cuda_ms",
                        lambda fn, repeat: events[torch.backends.cudnn.benchmark])
    monkeypatch.setattr(_harness, "torch_wall_ms",
                        lambda fn, t, repeat: wall[t.backends.cudnn.benchmark])
    got: dict[str, Any] = _harness.torch_best_eager(lambda: None, torch, 3)
    assert got["torch_cudnn_benchmark"] == "on"
    assert (got["torch_wall_ms"], got["torch_gpu_ms"]) == (31.0, 33.0)
    assert (got["torch_wall_ms_cudnn_benchmark_off"], got["torch_gpu_ms_cudnn_benchmark_off"]) \
        == (40.0, 39.0)
    assert torch.backends.cudnn.benchmark is False  # the caller's setting comes back
    wall[False] = 20.0
    assert _harness.torch_best_eager(lambda: None, torch, 3)["torch_cudnn_benchmark"] == "off"
