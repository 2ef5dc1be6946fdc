"""controlnet_aux's annotators (lineart, hed, pidi, ...) as test references, without its
package `__init__`.

controlnet_aux 0.0.10's `__init__` imports every detector, and so their whole stack (timm,
torchvision, mediapipe, ...), which torch==2.13's CPU wheel cannot share an environment with
(torchvision pins another torch). The detectors the tests compare with need only torch, cv2,
einops and huggingface_hub's name; scripts/setup.sh installs controlnet_aux with --no-deps for
the reference extra, and this module loads the wanted submodules under an empty package.

    lineart = controlnet_aux("lineart")   # lineart.Generator, lineart.LineartDetector

`write_lineart_anime` saves a narrow random lineart_anime network as its annotator file;
`random_handpose` makes a random openpose hand network and its weights in the file's layout.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import pytest

__all__ = ["controlnet_aux", "random_handpose", "write_lineart_anime"]


def controlnet_aux(name: str, *, bare: tuple[str, ...] = ()) -> Any:
    """The module controlnet_aux.`name`, or the calling test module skipped with the reason.
    `bare`: subpackages whose `__init__` is not run either (normalbae's imports torchvision)."""
    if "controlnet_aux" not in sys.modules:
        spec = importlib.util.find_spec("controlnet_aux")
        if spec is None or not spec.submodule_search_locations:
            pytest.skip("controlnet_aux is not installed (scripts/setup.sh installs it with the "
                        "'reference' extra)", allow_module_level=True)
        package = types.ModuleType("controlnet_aux")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["controlnet_aux"] = package
    root = sys.modules["controlnet_aux"].__path__[0]
    for sub in bare:
        if f"controlnet_aux.{sub}" not in sys.modules:
            package = types.ModuleType(f"controlnet_aux.{sub}")
            package.__path__ = [f"{root}/{sub.replace('.', '/')}"]
            sys.modules[f"controlnet_aux.{sub}"] = package
    return importlib.import_module(f"controlnet_aux.{name}")


def write_lineart_anime(folder: Path) -> Any:
    """netG.pth of a narrow U-Net (8 levels as released, 4..32 channels instead of 64..512)
    in annotator folder `folder`'s lineart_anime, under DataParallel's `module.` as some
    copies have it; returns the network (controlnet_aux's UnetGenerator)."""
    import torch
    from sd_tiny import randomized

    anime = controlnet_aux("lineart_anime")
    (folder / "lineart_anime").mkdir(parents=True, exist_ok=True)
    norm = functools.partial(torch.nn.InstanceNorm2d, affine=False, track_running_stats=False)
    network = randomized(anime.UnetGenerator(3, 1, 8, 4, norm_layer=norm), 6, scale=0.25)
    state = {f"module.{key}": value for key, value in network.state_dict().items()}
    torch.save(state, folder / "lineart_anime" / "netG.pth")
    return network


def random_handpose(seed: int) -> tuple[Any, dict[str, Any]]:
    """controlnet_aux's openpose handpose_model with torch's own init under `seed`, every
    weight scaled by sqrt(8) so that the last stage's maps vary well above float32 error; and
    its weights as numpy arrays named as in hand_pose_model.pth (no block prefix)."""
    import torch

    model = controlnet_aux("open_pose.model", bare=("open_pose",))
    torch.manual_seed(seed)
    network = model.handpose_model().eval()
    with torch.no_grad():
        for name, value in network.named_parameters():
            if name.endswith("weight"):
                value.mul_(8**0.5)
    flat = {name.split(".", 1)[1]: value.numpy() for name, value in network.state_dict().items()}
    return network, flat
