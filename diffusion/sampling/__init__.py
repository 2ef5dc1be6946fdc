"""Sampling: how a model's prediction becomes a picture's latents, for every model family.

| module | what |
|---|---|
| `model_sampling` | sigma <-> timestep, start latents, x0: `DiscreteSchedule`, `FlowSchedule` |
| `samplers` | the WebUI's k-diffusion samplers (numpy float64), their registry, schedule types |
| `schedulers` | diffusers' schedulers (`--sampler diffusers`; DDIM, PLMS, UniPC; flow matching) |
| `guidance` | classifier-free guidance, once for every family and loop |
| `kdiffusion` | the WebUI's k-diffusion sampling: `plan`, `sample`, `CFGDenoiser`, `FlowDenoiser` |
| `kdiffusion_pass` | the one k-diffusion pass every family runs: `sample_pass`, `WebUISeeds` |
| `scheduler_loop` | the diffusers-style schedulers' loop, for UNet and flow models alike |

Imports point one way, bottom to top: `model_sampling` <- `schedulers` <- `samplers` <-
`kdiffusion` (with `guidance`) <- `kdiffusion_pass`; `guidance` and `scheduler_loop` import
none of them. Nothing here imports a pipeline, the server or the CLI.
This `__init__` imports nothing, so any module can be imported alone.
"""
