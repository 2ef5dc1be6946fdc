"""A lazy weight mapping reads each tensor once per load: asking whether it holds a key reads
nothing (Mapping's own `in` reads the tensor; load_state_dict asks three times a key)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from diffusion.loaders.weights import ComponentWeights, TensorRef
from diffusion.models.t5 import _Untied


class CountingFile:
    """A TensorFile whose reads are counted."""

    path = Path("counting.safetensors")
    metadata: ClassVar[dict[str, Any]] = {}

    def __init__(self, tensors: dict[str, np.ndarray]) -> None:
        self.tensors = tensors
        self.reads: list[str] = []

    def keys(self) -> list[str]:
        return list(self.tensors)

    def __contains__(self, key: object) -> bool:
        return key in self.tensors

    def shape(self, key: str) -> tuple[int, ...]:
        return self.tensors[key].shape

    def read(self, key: str, *, rows: tuple[int, int] | None = None) -> np.ndarray:
        self.reads.append(key)
        return self.tensors[key].copy()


@pytest.mark.nodevice
def test_membership_reads_nothing_and_a_load_reads_each_tensor_once() -> None:
    rng = np.random.default_rng(0)
    file = CountingFile({"a.weight": rng.standard_normal((3, 5)).astype(np.float32),
                         "b.bias": rng.standard_normal(7).astype(np.float32)})
    weights = ComponentWeights("toy", {}, {k: TensorRef(file, k, v.shape)  # type: ignore[arg-type]
                                           for k, v in file.tensors.items()},
                               dtype=np.dtype(np.float16))
    assert "a.weight" in weights and "missing" not in weights and 3 not in weights
    assert file.reads == []
    untied = _Untied(weights)
    assert "b.bias" in untied and "missing" not in untied and file.reads == []



def test_loading_a_model_reads_each_tensor_once(first_device: Any,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    from diffusion import load_pipeline
    from diffusion.loaders import weights

    reads: list[tuple[str, str]] = []
    original = weights.ComponentWeights.__getitem__

    def counted(self: ComponentWeights, key: str) -> np.ndarray:
        reads.append((self.name, key))
        return original(self, key)

    monkeypatch.setattr(weights.ComponentWeights, "__getitem__", counted)
    load_pipeline(None, device=first_device)
    assert len(reads) > 100 and len(reads) == len(set(reads))
