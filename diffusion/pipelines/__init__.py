"""Pipelines: a loaded model family and the denoising loop that runs it.

| module | what |
|---|---|
| `load` | `load_pipeline(path)`: a diffusers folder or single file -> a pipeline on the GPU |
| `request` | `GenerationRequest`: every setting of a generation, checked once for every door |
| `observer` | `Observer`: a running generation's steps, and how its caller stops it |
| `stable_diffusion` | SD 1.x/2.x: `generate(request)` (txt2img, img2img, inpaint, hires fix) |
| `run_kdiffusion` | the WebUI's samplers as numbered steps: sigmas, inputs, passes, hires |
| `run_scheduler` | diffusers' loop around a scheduler ("diffusers", DDIM, PLMS, UniPC) |
| `prepare` | what both runs start from: img2img / inpaint inputs, the hires pass's latents |
| `stable_diffusion_xl` | SDXL (base, refiner, Turbo): SD's loop with two text encoders |
| `sampling` | the WebUI's k-diffusion sampling on our UNet (guidance, sigmas, noise) |
| `refiner` | the hand-off to a second model part-way through sampling |
| `capture` | a model call recorded once and replayed by every later generation |
"""
