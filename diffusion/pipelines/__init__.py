"""Pipelines: a loaded model family and the denoising loop that runs it.

What every family shares is here; each family's own modules are a sub-package. The sampling
loops and guidance they run are diffusion.sampling's.

| module | what |
|---|---|
| `load` | `load_pipeline(path)`: a diffusers folder or single file -> a pipeline on the GPU |
| `families` | the registry `load_pipeline` walks: a line per family (detect, load, defaults) |
| `request` | `GenerationRequest`: every setting of a generation, checked once for every door |
| `hires_pass` | the hires fix's second pass: its own prompts and sampler, its infotext fields |
| `observer` | `Observer`: a running generation's steps, and how its caller stops it |
| `contract` | `Pipeline`: what every family keeps, all that the CLI and the server use |
| `generation` | the generate sequence, once for every family (`Family`: what one supplies) |
| `module_load` | a model loaded with module files (Forge's VAE / Text Encoder list) |
| `sd` | the UNet family: SD 1.x/2.x (`sd.stable_diffusion`), SDXL (`sd.stable_diffusion_xl`) |
| `flow` | the flow family: FLUX.1 and SD3/3.5 (`flow.flow_model`; `flow.flux`, `flow.sd3`) |
| `video` | videos: Wan 2.1/2.2, VACE (`video.wan.WanPipeline`), SkyReels V2; frames, not pictures |
"""
