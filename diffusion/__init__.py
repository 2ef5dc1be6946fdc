"""diffusion: Stable Diffusion 1.x/2.x on gpustd — tokenizer, CLIP, UNet, VAE, schedulers,
txt2img / img2img / inpaint, loaders and a CLI (`python -m diffusion --help`).

    pipe = diffusion.load_pipeline("path/to/model")       # diffusers folder or .safetensors
    result = pipe.txt2img("a lighthouse at dusk", steps=20, seed=42)
"""

from .load import default_model_path, load_pipeline
from .pipeline import GenerationResult, StableDiffusion

__all__ = ["GenerationResult", "StableDiffusion", "default_model_path", "load_pipeline"]
