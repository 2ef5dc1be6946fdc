"""The UNet family: SD 1.x/2.x and SDXL (base, refiner, Turbo).

| module | what |
|---|---|
| `stable_diffusion` | SD 1.x/2.x: `StableDiffusion` (txt2img, img2img, inpaint, hires fix) |
| `stable_diffusion_xl` | SDXL (base, refiner, Turbo): SD's family with two text encoders |
| `kolors` | Kolors: SDXL with ChatGLM3 reading the prompt (its loader and capabilities too) |
| `unet_load` | the registry's loader and defaults for UNet checkpoints and folders |
| `guided_unet` | `GuidedUNet`: the UNet's uncond and cond outputs for one input; `unet_call` |
| `unet_model` | what the UNet loops need of a model (`UNetModel`, `LatentCodec`) |
| `run_kdiffusion` | the WebUI's samplers as numbered steps: sigmas, inputs, passes, hires |
| `run_scheduler` | diffusers' passes around a scheduler ("diffusers", DDIM, PLMS, UniPC) |
| `prepare` | what both runs start from: img2img / inpaint inputs, the hires pass's latents |
| `refiner` | the hand-off to a second model part-way through sampling |
| `memory` | the memory modes: weights kept off the GPU until a model part runs |
| `capture` | a model call recorded once and replayed by every later generation |
"""
