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

from .pipelines.contract import Capabilities, Pipeline
from .pipelines.load import default_model_path, load_pipeline
from .pipelines.observer import Observer
from .pipelines.request import GenerationRequest
from .pipelines.sd.stable_diffusion import GenerationResult, StableDiffusion
from .pipelines.sd.stable_diffusion_xl import StableDiffusionXL

__all__ = ["Capabilities", "GenerationRequest", "GenerationResult", "Observer", "Pipeline",
           "StableDiffusion", "StableDiffusionXL", "default_model_path", "load_pipeline"]
