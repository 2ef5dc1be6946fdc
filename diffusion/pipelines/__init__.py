"""Pipelines: a loaded model family and the denoising loop that runs it.

| module | what |
|---|---|
| `load` | `load_pipeline(path)`: a diffusers folder or single file -> a pipeline on the GPU |
| `request` | `GenerationRequest`: every setting of a generation, checked once for every door |
| `observer` | `Observer`: a running generation's steps, and how its caller stops it |
| `contract` | `Pipeline`: what every family keeps, all that the CLI and the server use |
| `generation` | the generate sequence, once for every family (`Family`: what one supplies) |
| `guidance` | classifier-free guidance, once for every family and loop |
| `sampling` | the WebUI's k-diffusion sampling (`CFGDenoiser`, `FlowDenoiser`, `sample`) |
| `scheduler_loop` | the diffusers-style schedulers' loop, for UNet and flow models alike |
| `stable_diffusion` | SD 1.x/2.x: the UNet family (txt2img, img2img, inpaint, hires fix) |
| `unet_model` | what the UNet loops need of a model (`UNetModel`, `LatentCodec`) |
| `run_kdiffusion` | the WebUI's samplers as numbered steps: sigmas, inputs, passes, hires |
| `run_scheduler` | diffusers' passes around a scheduler ("diffusers", DDIM, PLMS, UniPC) |
| `prepare` | what both runs start from: img2img / inpaint inputs, the hires pass's latents |
| `stable_diffusion_xl` | SDXL (base, refiner, Turbo): SD's family with two text encoders |
| `flow_model` | FLUX.1 and SD3/3.5: the flow family (`flux`, `sd3`: diffusers' pipelines) |
| `flow_sampling` | the WebUI's samplers on flow models (through `sampling.sample`) |
| `refiner` | the hand-off to a second model part-way through sampling |
| `capture` | a model call recorded once and replayed by every later generation |
"""
