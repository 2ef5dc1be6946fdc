"""diffusion: Stable Diffusion 1.x/2.x and SDXL (base, refiner, Turbo) on gpustd — tokenizers,
CLIP, UNet, VAE, samplers, txt2img / img2img / inpaint, loaders, a CLI (`python -m diffusion
--help`) and a WebUI-compatible server.

    pipe = diffusion.load_pipeline("path/to/model")       # diffusers folder or .safetensors
    result = pipe.txt2img("a lighthouse at dusk", steps=20, seed=42)
"""

from .pipelines.load import default_model_path, load_pipeline
from .pipelines.stable_diffusion import GenerationResult, StableDiffusion
from .pipelines.stable_diffusion_xl import StableDiffusionXL

__all__ = ["GenerationResult", "StableDiffusion", "StableDiffusionXL", "default_model_path",
           "load_pipeline"]
