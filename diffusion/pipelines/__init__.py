"""Pipelines: a loaded model family and the denoising loop that runs it.

| module | what |
|---|---|
| `load` | `load_pipeline(path)`: a diffusers folder or single file -> a pipeline on the GPU |
| `stable_diffusion` | SD 1.x/2.x: txt2img, img2img, inpaint, hires fix |
| `stable_diffusion_xl` | SDXL (base, refiner, Turbo): SD's loop with two text encoders |
| `sampling` | the WebUI's k-diffusion sampling on our UNet (guidance, sigmas, noise) |
| `refiner` | the hand-off to a second model part-way through sampling |
| `capture` | a model call recorded once and replayed by every later generation |
"""
