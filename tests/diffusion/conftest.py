"""Tiny FLUX / SD3 pipelines shared by the flow-model test modules (each built once per run:
building one with diffusers costs seconds on a 2-core machine). Tests must leave them as they
found them (a LoRA loaded into one is unloaded)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny_flux_dev(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder's parent: `root / "flux"`, diffusers' FluxPipeline) of FLUX.1 dev's shape."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from flow_tiny import tiny_flux_pipeline

    root = tmp_path_factory.mktemp("tiny-flux-dev")
    return root, tiny_flux_pipeline(root, dev=True)


@pytest.fixture(scope="session")
def tiny_sd3(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any]:
    """(the folder's parent: `root / "sd3"`, diffusers' StableDiffusion3Pipeline)."""
    pytest.importorskip("diffusers", reason="diffusers is a test-only reference")
    from flow_tiny import tiny_sd3_pipeline

    root = tmp_path_factory.mktemp("tiny-sd3")
    return root, tiny_sd3_pipeline(root)
