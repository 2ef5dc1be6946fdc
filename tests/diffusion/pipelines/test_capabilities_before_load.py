"""What the registry says a model takes before its weights load (`families.capabilities_of`,
from configs and headers; the command line refuses with it) is what the loaded pipeline says
(`Pipeline.capabilities`), for each family the registry can tell."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from diffusion import load_pipeline
from diffusion.pipelines.families import capabilities_of
from diffusion.pipelines.load import DEFAULT_MODEL

# fixture -> the model folder under what it gives
MODELS = {"tiny_flux_dev": "flux", "tiny_flux2_klein": "", "tiny_qwenimage": ""}


@pytest.mark.parametrize("fixture", [None, *MODELS])
def test_the_registry_tells_the_loaded_models_capabilities(
        request: pytest.FixtureRequest, first_device: Any, fixture: str | None) -> None:
    if fixture is None:  # the bundled SD 1.x model
        path = DEFAULT_MODEL
    else:
        root, _ = request.getfixturevalue(fixture)
        path = Path(root) / MODELS[fixture]
    told = capabilities_of(path)
    assert told is not None
    loaded = load_pipeline(path, device=first_device).capabilities
    assert told == loaded
    assert told.family == loaded.family != "unet"  # the SD model's family is read too
