"""diffusion: Stable Diffusion 1.x/2.x, SDXL (base, refiner, Turbo), FLUX.1 and SD 3.5 on
gpustd — tokenizers, text encoders, UNet, transformers, VAE, samplers, txt2img / img2img /
inpaint, loaders, a CLI (`python -m diffusion --help`) and a WebUI-compatible server.

    pipe = diffusion.load_pipeline("path/to/model")       # any family: a diffusion.Pipeline
    result = pipe.generate(diffusion.GenerationRequest(prompt="a lighthouse at dusk", steps=20,
                                                       seed=42))
    result = pipe.txt2img("a lighthouse at dusk", steps=20, seed=42)   # the same, by keywords

Laid out by kind, as diffusers is; a new model family is a module in models/ and one in
pipelines/, a new sampler a module in sampling/samplers/.

| package | what |
|---|---|
| `models` | the networks, one module per family (CLIP, UNet, VAE), named as checkpoint keys |
| `pipelines` | the `Pipeline` contract; per model family: conditioning, denoising, decode |
| `text` | tokenizer, the WebUI's prompt syntax, conditioning, textual-inversion embeddings |
| `sampling` | k-diffusion samplers, diffusers' schedulers, guidance, the loops families share |
| `noise` | random numbers as torch and the WebUI draw them |
| `loaders` | checkpoint files to named weights: folders, single files, VAEs |
| `lora` | LoRA / LyCORIS networks patched into a loaded pipeline |
| `upscalers` | hires fix's upscalers |
| `preprocessors` | the ControlNet extension's preprocessors (canny, invert, ...) on the GPU |
| `imaging` | pictures in and out: init images, masks, resize modes, the inpainting overlay |
| `server`, `cli` | the WebUI-compatible HTTP API and page; `python -m diffusion` |
| `data` | the bundled model and CLIP's vocabulary (package data, not code) |

Imports point one way: models, text, sampling, noise, loaders, lora,
upscalers and preprocessors import no pipeline, server or CLI; pipelines import them and
never the server or the CLI (tests/test_layout.py checks this, and that there are no cycles).
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .pipelines.contract import Capabilities, Pipeline
    from .pipelines.load import default_model_path, load_pipeline
    from .pipelines.observer import Observer
    from .pipelines.request import GenerationRequest
    from .pipelines.sd.stable_diffusion import GenerationResult, StableDiffusion
    from .pipelines.sd.stable_diffusion_xl import StableDiffusionXL

__all__ = ["Capabilities", "GenerationRequest", "GenerationResult", "Observer", "Pipeline",
           "StableDiffusion", "StableDiffusionXL", "default_model_path", "load_pipeline"]

# The names above are imported on first use (PEP 562): `python -m diffusion` imports this
# package before its __main__, which begins opening the GPU before the pipelines' imports.
_HOMES = {"Capabilities": "pipelines.contract", "Pipeline": "pipelines.contract",
          "default_model_path": "pipelines.load", "load_pipeline": "pipelines.load",
          "Observer": "pipelines.observer", "GenerationRequest": "pipelines.request",
          "GenerationResult": "pipelines.sd.stable_diffusion",
          "StableDiffusion": "pipelines.sd.stable_diffusion",
          "StableDiffusionXL": "pipelines.sd.stable_diffusion_xl"}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
