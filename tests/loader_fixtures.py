"""Fixtures of the loader tests (tests/diffusion/loaders; a plugin of tests/conftest.py)."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture(scope="session")
def tiny() -> Any:
    """ldm_files' tiny_models, built once for the session (the tests only read them);
    test_torch_files.py has a smaller `tiny` of its own."""
    from ldm_files import tiny_models

    return tiny_models()
